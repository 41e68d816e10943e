"""A model defined outside invlab, as a researcher would write it (used by the README's
"Audit your own model"). ``cnn`` is a plain ``nn.Sequential``; marking it with
``@model_factory`` lets an invlab checkpoint rebuild it by import path (no pickle)."""

from torch import nn

from invlab.models import GroupPooled, model_factory


@model_factory
def cnn(classes: int = 10, width: int = 16, size: int = 28) -> nn.Sequential:
    """conv-pool-conv-pool, 2-layer head: [N, 1, size, size] -> [N, classes] logits."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 64), nn.ReLU(),
        nn.Linear(64, classes))


def _trained(path: str = "runs/my_cnn/cnn.safetensors") -> tuple[nn.Module, dict]:
    from invlab import load_checkpoint

    model, meta = load_checkpoint(path)
    n = meta["normalization"]
    return model, {"mean": [n["mean"]], "std": [n["std"]]}


def build() -> tuple[nn.Module, dict]:
    """For `invlab audit --model examples/my_cnn.py:build`: the trained CNN."""
    return _trained()


def build_pooled() -> tuple[nn.Module, dict]:
    """The same weights averaged over the r4 orbit: invariant to r4 by construction."""
    model, norm = _trained()
    return GroupPooled(model, "r4"), norm


if __name__ == "__main__":  # train it with invlab: DA over r4 on MNIST (28x28, 10 classes)
    import sys
    from dataclasses import asdict

    from invlab.data import DataConfig, prepare_transforming
    from invlab.train import TrainConfig, train

    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    dcfg = DataConfig(n_train=5000, n_val=1000, n_test_max=2000, pad_to=28, exclude_class=None)
    data = prepare_transforming(dcfg, "r4")
    # metadata: the data config, so `--data mnist` on the checkpoint rebuilds its test split
    res = train(TrainConfig(method="da", group="r4", epochs=epochs, lr=3e-3, threads=2), data,
                checkpoint="runs/my_cnn/cnn.safetensors", model="my_cnn:cnn",
                metadata={"data": asdict(dcfg)})
    print(f"val accuracy {res.best_val_accuracy:.3f} after {res.epochs_run} epochs, "
          f"{res.wall_seconds:.0f} s -> {res.checkpoint}")
