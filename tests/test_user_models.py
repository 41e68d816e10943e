"""Models a researcher defines: train() takes a module or a factory, checkpoints store the
factory's import path (never a pickle) and check the weights fit, WeightTied / GroupPooled
wrap any backbone where the math allows and refuse where it does not."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from invlab.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from invlab.data import Split, TransformingData
from invlab.models import GroupPooled, WeightTied, create_model, list_models
from invlab.train import TrainConfig, train
from invlab.train.loop import TrainConfigError

USER_MODULE = '''
import torch
from torch import nn
from invlab.models import model_factory


@model_factory
def cnn(width: int = 8, classes: int = 3):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * width, 16), nn.ReLU(), nn.Linear(16, classes))


@model_factory
def mlp(classes: int = 3):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes)), \\
        {"mean": [0.5], "std": [0.25]}


def unmarked():
    return cnn()
'''


@pytest.fixture()
def user_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable user module ``labmodels_<n>`` in a temp folder on sys.path."""
    name = f"labmodels_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def tiny_data(n: int = 96, seed: int = 0) -> TransformingData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + (x.mean((1, 2, 3)) > .5)
    split = lambda a, b: Split(x[a:b], y[a:b], torch.zeros(b - a, dtype=torch.long))
    return TransformingData(split(0, 64), split(64, 80), split(80, n), 0.0, 1.0, "r4", 3, ())


def rot(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    return torch.rot90(x, k, (-2, -1))


CFG = dict(method="da", group="r4", epochs=2, batch_size=32, seed=0)


# --------------------------------------------------------------------------- train()


def test_a_module_in_the_config_is_a_one_line_error() -> None:
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(model=nn.Linear(2, 2))  # type: ignore[arg-type]
    msg = str(e.value)
    assert "\n" not in msg and "found a Linear" in msg and "train(cfg, data, model=...)" in msg


def test_train_takes_a_module_a_factory_and_an_import_path(user_mod: str) -> None:
    import importlib

    mod = importlib.import_module(user_mod)
    data = tiny_data()
    a = train(TrainConfig(**CFG), data, progress=False, model=f"{user_mod}:cnn").model
    b = train(TrainConfig(**CFG), data, progress=False, model=mod.cnn).model
    # a factory is built from cfg.seed: the same config trains the same weights
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert a.invlab_factory == f"{user_mod}:cnn"
    m = mod.cnn()
    res = train(TrainConfig(**CFG), data, progress=False, model=m)
    assert res.model is m and 0 <= res.best_val_accuracy <= 1


@pytest.mark.parametrize(("model", "match"), [
    (42, "expected a registered name in TrainConfig, an nn.Module, a factory"),
    ("nomodule_xyz:f", "cannot import module 'nomodule_xyz'"),
    (lambda: "not a module", "must return a torch.nn.Module"),
])
def test_bad_models_for_train(model: object, match: str) -> None:
    with pytest.raises(TrainConfigError, match=match):
        train(TrainConfig(**CFG), tiny_data(), progress=False, model=model)


def test_train_wt_ties_any_backbone_and_checkpoints_it(user_mod: str, tmp_path: Path) -> None:
    data = tiny_data()
    path = tmp_path / "wt.safetensors"
    res = train(TrainConfig(**{**CFG, "method": "wt"}), data, checkpoint=path, progress=False,
                model=f"{user_mod}:cnn", model_kwargs={"width": 4})
    x = data.test.images
    assert isinstance(res.model, WeightTied)
    assert torch.allclose(res.model(x), res.model(rot(x)), atol=1e-6)
    meta = read_metadata(path)
    assert meta["factory"] == f"{user_mod}:cnn" and meta["factory_kwargs"] == {"width": 4}
    assert meta["wrapper"] == {"weight_tied": {"group": "r4", "in_shape": [1, 8, 8]}}
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded(x), res.model(x))


def test_an_unrebuildable_module_fails_before_training(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(CheckpointError, match="pass factory='package.module:function'"):
        train(TrainConfig(**CFG), tiny_data(), checkpoint=tmp_path / "x.safetensors",
              progress=False, model=m)
    assert not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------- checkpoints


def test_user_checkpoint_round_trip_without_pickle(user_mod: str, tmp_path: Path) -> None:
    import importlib

    mod = importlib.import_module(user_mod)
    m = mod.cnn(width=6)
    p = save_checkpoint(m, tmp_path / "u.safetensors", factory=f"{user_mod}:cnn",
                        factory_kwargs={"width": 6}, normalization={"mean": 0.5, "std": 0.25})
    assert b"pickle" not in p.read_bytes()[:200] and p.read_bytes()[8:9] == b"{"
    loaded, meta = load_checkpoint(p)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), m.eval()(x)) and meta["normalization"]["std"] == 0.25
    # the function itself works as the factory too
    save_checkpoint(m, tmp_path / "v.safetensors", factory=mod.cnn, factory_kwargs={"width": 6})
    assert read_metadata(tmp_path / "v.safetensors")["factory"] == f"{user_mod}:cnn"


def test_weights_that_do_not_fit_the_factory_are_refused(user_mod: str, tmp_path: Path) -> None:
    import importlib

    mod = importlib.import_module(user_mod)
    p = save_checkpoint(mod.cnn(width=6), tmp_path / "u.safetensors", factory=f"{user_mod}:cnn",
                        factory_kwargs={"width": 5})  # lies about the width
    with pytest.raises(CheckpointError, match=r"weights do not match.*expected \(5, 1, 3, 3\), "
                                              r"found \(6, 1, 3, 3\)"):
        load_checkpoint(p)


def test_unmarked_or_hostile_factories_are_refused(user_mod: str, tmp_path: Path) -> None:
    import importlib

    from safetensors.torch import save_file

    mod = importlib.import_module(user_mod)
    with pytest.raises(CheckpointError, match="not marked as a model factory"):
        save_checkpoint(mod.cnn(), tmp_path / "a.safetensors", factory=f"{user_mod}:unmarked")
    with pytest.raises(CheckpointError, match="not importable by name"):
        save_checkpoint(mod.cnn(), tmp_path / "a.safetensors", factory=lambda: mod.cnn())
    # a file that names os:system is refused before anything is called
    meta = {"factory": "os:system", "factory_kwargs": {"command": "touch PWNED"}}
    save_file({"w": torch.zeros(1)}, str(tmp_path / "h.safetensors"),
              metadata={"invlab": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="'os:system' is not marked as a model factory"):
        load_checkpoint(tmp_path / "h.safetensors")
    assert not Path("PWNED").exists()
    meta = {"factory": "../evil.py:f"}
    save_file({"w": torch.zeros(1)}, str(tmp_path / "f.safetensors"),
              metadata={"invlab": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="'factory' must be 'package.module:function'"):
        load_checkpoint(tmp_path / "f.safetensors")


def test_group_pooled_user_model_round_trip(user_mod: str, tmp_path: Path) -> None:
    import importlib

    mod = importlib.import_module(user_mod)
    gp = GroupPooled(mod.cnn(), "r4").eval()
    p = save_checkpoint(gp, tmp_path / "g.safetensors", factory=f"{user_mod}:cnn")
    assert read_metadata(p)["wrapper"] == {"group_pooled": "r4"}
    loaded, _ = load_checkpoint(p)
    x = torch.rand(2, 1, 8, 8)
    assert isinstance(loaded, GroupPooled) and torch.equal(loaded(x), gp(x))


# --------------------------------------------------------------------------- wrappers


def test_group_pooled_features_of_a_plain_sequential() -> None:
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    gp = GroupPooled(seq, "r4").eval()
    x = torch.rand(3, 1, 8, 8)
    z = gp.forward_features(x)
    assert z.shape == (3, 144)
    assert torch.allclose(gp.forward_head(z), gp(x), atol=1e-6)
    assert torch.allclose(z, gp.forward_features(rot(x)), atol=1e-6)  # invariant features
    with pytest.raises(AttributeError, match="no forward_features and no nn.Linear"):
        GroupPooled(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), "r4").forward_features(x)


@pytest.mark.parametrize("group", ["r4", "flip", "d4", "t4"])
@pytest.mark.parametrize("first", ["linear", "conv"])
def test_weight_tied_any_backbone_is_exactly_invariant(group: str, first: str) -> None:
    from invlab.transforms import create_transform

    torch.manual_seed(0)
    seq = (nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
           if first == "linear" else
           nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 3)))
    wt = WeightTied(seq, group, in_shape=(1, 8, 8)).eval()
    g = create_transform(group)
    x = torch.rand(5, 1, 8, 8)
    ref = wt(x)
    for y in g.apply_all(x, list(g.non_identity)):
        assert torch.allclose(wt(y), ref, atol=1e-5)


def test_weight_tied_matches_brute_force_pooling() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(64, 16)
    seq = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), nn.Linear(16, 3))
    head = seq[3]
    x = torch.rand(4, 1, 8, 8)
    brute = head(torch.stack([torch.relu(lin(rot(x, k).flatten(1))) for k in range(4)]).amax(0))
    wt = WeightTied(seq, "r4", in_shape=(1, 8, 8))
    assert torch.allclose(wt(x), brute, atol=1e-6)


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(72, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x * 2 - 1).flatten(1))


@pytest.mark.parametrize(("args", "match"), [
    ((nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), "rotate:30"), "is not exact"),
    ((Scaled(), "r4"), "does not see the image"),
    ((nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), "r4", (1, 8, 8), "mean"), "max only"),
    ((nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), "r4", None), "needs in_shape"),
    ((nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), "r4", (1, 6, 8)), "square"),
])
def test_weight_tied_refuses_where_the_math_does_not_allow(args: tuple, match: str) -> None:
    model, group, *rest = args
    shape = rest[0] if rest else (1, 8, 8)
    pool = rest[1] if len(rest) > 1 else "max"
    with pytest.raises(ValueError, match=match):
        WeightTied(model, group, in_shape=shape, pool=pool)


def test_registry_derives_wt_for_every_backbone(tmp_path: Path) -> None:
    assert "wt_cnn_small" in list_models()
    m = create_model("wt_cnn_small", group="r4", in_shape=[1, 12, 12], num_classes=4).eval()
    x = torch.rand(3, 1, 12, 12)
    assert torch.allclose(m(x), m(rot(x)), atol=1e-6)
    assert m.forward_features(x).shape == (3, 64)
    p = save_checkpoint(m, tmp_path / "w.safetensors")
    loaded, meta = load_checkpoint(p)
    assert meta["model"] == "wt_cnn_small" and torch.equal(loaded(x), m(x))


def test_a_file_factory_trains_but_cannot_be_checkpointed(tmp_path: Path) -> None:
    (tmp_path / "byfile.py").write_text(textwrap.dedent(USER_MODULE))
    spec = f"{tmp_path}/byfile.py:cnn"
    res = train(TrainConfig(**{**CFG, "epochs": 1}), tiny_data(), progress=False, model=spec)
    assert not hasattr(res.model, "invlab_factory")
    with pytest.raises(CheckpointError, match="not importable by name|pass factory="):
        train(TrainConfig(**{**CFG, "epochs": 1}), tiny_data(), progress=False, model=spec,
              checkpoint=tmp_path / "x.safetensors")
