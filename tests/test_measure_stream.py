"""measure over a Dataset / DataLoader: bit-identical to the tensor path; devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from invlab.devices import DeviceError, resolve_device
from invlab.metrics import MeasureError, measure


def _cnn(c: int = 3, k: int = 7) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))


class Images(Dataset):
    """Yields image or (image, label); counts reads; optional labels attribute."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, attr: bool = False):
        self.x, self.y, self.reads = x, y, 0
        if attr:
            self.labels = y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):  # noqa: ANN204
        self.reads += 1
        return self.x[i] if self.y is None else (self.x[i], int(self.y[i]))


def _data(n: int = 23, c: int = 3, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, c, s, s, generator=g), torch.randint(0, 7, (n,), generator=g)


NORM = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def _same(a, b) -> None:  # noqa: ANN001
    assert a.per_sample.keys() == b.per_sample.keys()
    for k in a.per_sample:
        assert torch.equal(a.per_sample[k], b.per_sample[k]), k
    assert a.summary == b.summary
    assert a.summary_by_member() == b.summary_by_member()
    assert a.to_frame().equals(b.to_frame())


@pytest.mark.parametrize("transform", ["r4", "rotate:30", "flip", "grayscale"])
def test_dataset_equals_tensor_unlabelled(transform: str) -> None:
    x, _ = _data()
    model = _cnn()
    kw = dict(transform=transform, normalization=NORM, metrics=["kl", "EI", "agreement", "LI"],
              batch_size=5)
    _same(measure(model, x, **kw), measure(model, Images(x), **kw))
    _same(measure(model, x, **kw), measure(model, DataLoader(TensorDataset(x), batch_size=4),
                                            **kw))


@pytest.mark.parametrize("attr", [False, True])
def test_dataset_labels_used_when_not_given(attr: bool) -> None:
    x, y = _data()
    model = _cnn()
    kw = dict(transform="r4", normalization=NORM, batch_size=6)
    ref = measure(model, x, labels=y, **kw)
    got = measure(model, Images(x, y, attr=attr), **kw)
    assert "accuracy" in got.per_sample and "clean_accuracy" in got.per_sample
    _same(ref, got)


@pytest.mark.parametrize("loader_bs", [1, 4, 7, 23, 50])
def test_dataloader_any_batch_size(loader_bs: int) -> None:
    x, y = _data()
    model = _cnn()
    kw = dict(transform="r4", normalization=NORM, metrics=["kl", "accuracy", "EI"], batch_size=5)
    ref = measure(model, x, labels=y, **kw)
    got = measure(model, DataLoader(TensorDataset(x, y), batch_size=loader_bs), **kw)
    _same(ref, got)


def test_default_batching_and_representation_invariance_equal() -> None:
    x, y = _data(n=41)
    model = _cnn()
    kw = dict(transform="r4", metrics=["kl", "RI", "accuracy"])
    ref = measure(model, x, labels=y, generator=torch.Generator().manual_seed(3), **kw)
    got = measure(model, DataLoader(TensorDataset(x, y), batch_size=6),
                  generator=torch.Generator().manual_seed(3), **kw)
    _same(ref, got)


def test_si_equal_streamed() -> None:
    x, y = _data(n=7)
    model = _cnn()
    kw = dict(transform="r4", normalization=NORM, metrics=["SI"], n_steps=8, batch_size=3)
    _same(measure(model, x, labels=y, **kw), measure(model, Images(x, y), **kw))
    # without labels the target is the prediction on x, in both paths
    _same(measure(model, x, **kw), measure(model, DataLoader(TensorDataset(x), batch_size=2),
                                            **kw))


def test_explicit_labels_win() -> None:
    x, y = _data()
    model = _cnn()
    y2 = (y + 1) % 7
    kw = dict(transform="r4", metrics=["accuracy"], batch_size=5)
    _same(measure(model, x, labels=y2, **kw), measure(model, Images(x, y), labels=y2, **kw))


def test_streams_one_chunk_at_a_time() -> None:
    """The dataset is read once per image, in chunks (never materialized as a whole)."""
    x, _ = _data(n=30)
    ds = Images(x)
    seen: list[int] = []
    model = _cnn()
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    measure(model, ds, transform="r4", metrics=["kl"], batch_size=4)
    hook.remove()
    assert ds.reads == 30 + 1  # + the first image, read once up front for the checks
    assert max(seen) <= 5 * 4  # (k+1) * batch_size rows per model call


def test_unlabelled_with_accuracy_is_clear() -> None:
    x, _ = _data()
    with pytest.raises(MeasureError, match="without labels.*accuracy"):
        measure(_cnn(), Images(x), transform="r4", metrics=["accuracy"])


def test_bad_streams() -> None:
    x, y = _data()
    model = _cnn()
    mixed = [x[0], x[1, :, :8, :8]]

    class Mixed(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> torch.Tensor:
            return mixed[i]

    with pytest.raises(MeasureError, match="different shapes"):
        measure(model, Mixed(), transform="r4", metrics=["kl"], batch_size=1)
    bad = x.clone()
    bad[13, 0, 2, 2] = float("nan")
    with pytest.raises(MeasureError, match=r"NaN/inf.*\[13\]"):
        measure(model, Images(bad), transform="r4", metrics=["kl"], batch_size=5)
    with pytest.raises(MeasureError, match="labels go up to 9"):
        yy = y.clone()
        yy[-1] = 9
        measure(model, Images(x, yy), transform="r4", metrics=["accuracy"], batch_size=5)
    with pytest.raises(MeasureError, match="dtype torch.uint8"):
        measure(model, Images((x * 255).to(torch.uint8)), transform="r4", metrics=["kl"])

    class Stream(IterableDataset):
        def __iter__(self):  # noqa: ANN204
            return iter(x)

    with pytest.raises(MeasureError, match="IterableDataset"):
        measure(model, Stream(), transform="r4")
    with pytest.raises(MeasureError, match="Tensor.*Dataset.*DataLoader"):
        measure(model, x.numpy(), transform="r4")


def test_device_argument_cpu_and_errors() -> None:
    x, _ = _data()
    model = _cnn()
    a = measure(model, x, transform="r4", metrics=["kl"], device="cpu")
    assert a.settings["device"] == "cpu"
    _same(a, measure(model, x, transform="r4", metrics=["kl"], device="auto" if not
                     torch.cuda.is_available() else "cpu"))
    with pytest.raises(MeasureError, match="expected cpu, cuda"):
        measure(model, x, transform="r4", device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="expected"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(MeasureError, match="CUDA is not available"):
            measure(model, x, transform="r4", device="cuda:0")
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = _data()
    model = _cnn()
    kw = dict(transform="r4", normalization=NORM, metrics=["kl", "EI", "accuracy"])
    cpu = measure(model, x, labels=y, **kw)
    gpu = measure(model, DataLoader(TensorDataset(x, y), batch_size=8), device="cuda", **kw)
    assert gpu.settings["device"].startswith("cuda")
    assert next(model.parameters()).device.type == "cpu"  # moved back
    for k in cpu.per_sample:
        torch.testing.assert_close(gpu.per_sample[k], cpu.per_sample[k], atol=1e-4, rtol=1e-3)
