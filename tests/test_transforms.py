"""Transforms: conventions, identities, batching, inverses and masks, specs, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import invlab
from invlab.groups import GroupError, create_group
from invlab.transforms import FAMILIES, Family, Transform, TransformError, create_transform

GEOMETRIC = ["rotate", "translate_x", "translate_y", "shear_x", "shear_y", "zoom_in", "zoom_out"]


def _images(n: int = 4, c: int = 1, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _smooth(n: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    """Low-frequency images (bilinear resampling barely changes them)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ph = torch.arange(n, dtype=torch.float32)[:, None, None]
    img = 0.5 + 0.25 * torch.sin(2 * math.pi * xx + ph) * torch.cos(2 * math.pi * yy - ph)
    return img[:, None]


# ---------------------------------------------------------------- sampling convention


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate_multiples_of_90_equal_rot90(k: int) -> None:
    x = _images(3, 2, 12, 12)
    y = create_transform(f"rotate:{90 * k}")(x)
    assert torch.allclose(y, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5)


def test_rotate_is_counter_clockwise_and_matches_r4() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 4] = 1.0  # right of the centre
    y = create_transform("rotate:90")(x)
    assert y[0, 0, 0, 2] > 0.999  # moved to the top: counter-clockwise on screen
    assert torch.allclose(y, create_group("r4").act(x, 1), atol=1e-5)


@pytest.mark.parametrize("spec,shift", [("translate_x:3", (0, 3)), ("translate_x:-2", (0, -2)),
                                        ("translate_y:4", (4, 0)), ("translate_y:-1", (-1, 0))])
def test_integer_translation_is_a_zero_filled_shift(spec: str, shift: tuple[int, int]) -> None:
    x = _images(2, 3, 10, 14)
    ref = torch.zeros_like(x)
    dy, dx = shift
    h, w = x.shape[-2:]
    ref[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    assert torch.allclose(create_transform(spec)(x), ref, atol=1e-5)


def test_relative_translation_uses_the_canvas_width() -> None:
    x = _images(2, 1, 18, 18)
    assert torch.allclose(create_transform("translate_x:0.5W")(x),
                          create_transform("translate_x:9")(x), atol=1e-6)
    fam = create_transform("translate_x")
    assert fam.magnitudes_for(36, 36) == pytest.approx([4.0 * i for i in range(10)])
    assert fam.magnitudes_for(224, 224)[1] == pytest.approx(224 / 9)


def test_rotate_180_on_a_non_square_canvas_flips_both_axes() -> None:
    x = _images(2, 1, 20, 30)
    assert torch.allclose(create_transform("rotate:180")(x), x.flip(-1, -2), atol=1e-5)


def test_rotations_compose_in_the_interior_disc() -> None:
    x = _smooth(3, 40, 40)
    a, b = create_transform("rotate:20"), create_transform("rotate:35")
    ab = create_transform("rotate:55")(x)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    disc = ((yy - 19.5) ** 2 + (xx - 19.5) ** 2) < 16**2
    err = (b(a(x)) - ab)[..., disc].abs().max()
    assert err < 0.02  # bilinear twice vs once on a smooth image


@pytest.mark.parametrize("name", FAMILIES)
def test_identity_magnitude_is_the_identity(name: str) -> None:
    fam = create_transform(name)
    assert isinstance(fam, Family) and fam.identity == fam.magnitudes[0]
    c = 3
    x = _images(3, c, 9, 11)
    y = fam.apply_all(x)
    assert y.shape == (len(fam.magnitudes), 3, c, 9, 11) and y.dtype == x.dtype
    assert torch.equal(y[0], x)
    assert torch.equal(fam.at(fam.identity)(x), x)
    assert fam.at(fam.identity).is_exact and fam.at(fam.identity).is_invertible


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_family_equals_a_per_image_loop(name: str) -> None:
    fam = create_transform(name)
    x = _images(3, 1, 12, 12, seed=1)
    out = fam.apply_all(x)
    for j, m in enumerate(fam.magnitudes):
        t = fam.at(m)
        for i in range(x.shape[0]):
            if name == "noise":  # the noise is drawn for the batch shape; compare batch-wise
                ref = t(x)[i]
            else:
                ref = t(x[i:i + 1])[0]
            assert torch.allclose(out[j, i], ref, atol=1e-5), (name, m, i)


@pytest.mark.parametrize("name", ["rotate", "translate_y", "shear_x", "brightness_up",
                                  "posterize", "blur", "zoom_out"])
def test_sample_applies_one_magnitude_per_image(name: str) -> None:
    fam = create_transform(name)
    x = _images(6, 1, 12, 12, seed=2)
    mags = fam.sample_magnitudes(6, torch.Generator().manual_seed(5))
    y = fam.sample(x, magnitudes=mags)
    for i, m in enumerate(mags.tolist()):
        assert torch.allclose(y[i], fam.at(m)(x[i:i + 1])[0], atol=1e-5)
    a = fam.sample(x, torch.Generator().manual_seed(7))
    b = fam.sample(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_noise_is_seeded_and_reproducible() -> None:
    x = _images(4, 1, 8, 8)
    a, b = create_transform("noise:0.1")(x), create_transform("noise:0.1")(x)
    c = create_transform("noise:0.1@seed=3")(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(c, create_transform("noise:0.1", seed=3)(x))
    assert create_transform("noise:0.1@seed=3").name == "noise:0.1@seed=3"
    assert float(a.min()) >= 0 and float(a.max()) <= 1


# ---------------------------------------------------------------- groups are transforms


def test_groups_are_exact_transform_sets() -> None:
    x = _images(2, 1, 6, 6)
    for name in ["r4", "t3", "flip", "d4"]:
        g = create_transform(name)
        assert g is not None and g.kind == "group" and g.is_exact and g.is_group
        assert g.members == g.elements and g.identity == 0
        y = g.apply_all(x)
        assert torch.equal(y, g.orbit(x))
        assert torch.equal(g.invert_all(y), x.expand_as(y))
        assert torch.equal(g.validity_masks(None, 6, 6), torch.ones(g.order, 1, 6, 6))
        e = g.at(1)
        assert isinstance(e, Transform) and e.is_exact and e.name == f"{name}:1"
        assert torch.equal(e.inverse()(e(x)), x)
    assert torch.equal(create_transform("r4:3")(x), torch.rot90(x, 3, dims=(-2, -1)))


def test_group_error_is_a_transform_error() -> None:
    assert issubclass(GroupError, TransformError) and issubclass(TransformError, ValueError)
    with pytest.raises(TransformError, match="square"):
        create_transform("r4").apply_all(torch.zeros(1, 1, 4, 6))


# ---------------------------------------------------------------- inverses and masks


@pytest.mark.parametrize("spec", ["rotate:30", "rotate:-81", "translate_x:5", "translate_y:-3",
                                  "shear_x:17.8", "shear_y:-22.75", "zoom_in:1.5",
                                  "zoom_out:0.8"])
def test_geometric_inverse_recovers_the_image_where_the_mask_is_one(spec: str) -> None:
    t = create_transform(spec)
    x = _smooth(2, 32, 32)
    back = t.inverse()(t(x))
    mask = t.validity_mask(32, 32)
    assert mask.shape == (1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum() > 0.3 * 32 * 32
    assert float(((back - x) * mask).abs().max()) < 0.05
    # the complement really lost content: a constant image is not recovered there
    ones = torch.ones(1, 1, 32, 32)
    lost = (t.inverse()(t(ones)) < 1 - 1e-4).float()[0]
    assert torch.equal(lost, 1 - mask)


def test_inverse_names() -> None:
    assert create_transform("rotate:30").inverse().name == "rotate:-30"
    assert create_transform("translate_x:4").inverse().name == "translate_x:-4"
    assert create_transform("shear_y:10").inverse().name == "shear_y:-10"
    assert create_transform("zoom_in:2").inverse().name == "zoom_out:0.5"
    assert create_transform("zoom_out:0.5").inverse().name == "zoom_in:2"
    assert create_transform("brightness_down:0.5").inverse().name == "brightness_up:2"
    assert create_transform("invert").inverse().name == "invert"


def test_family_invert_all_and_masks_are_batched() -> None:
    fam = create_transform("rotate")
    x = _smooth(2, 24, 24)
    y = fam.apply_all(x)
    back = fam.invert_all(y)
    masks = fam.validity_masks(None, 24, 24)
    assert back.shape == y.shape and masks.shape == (10, 1, 24, 24)
    for j, m in enumerate(fam.magnitudes):
        t = fam.at(m)
        assert torch.allclose(back[j], t.inverse()(t(x)), atol=1e-5)
        assert torch.equal(masks[j], t.validity_mask(24, 24))
    assert torch.equal(masks[0], torch.ones(1, 24, 24))


@pytest.mark.parametrize("spec", ["brightness_down:0.5", "contrast_down:0.3", "invert"])
def test_photometric_inverses_are_exact_up_to_float(spec: str) -> None:
    t = create_transform(spec)
    x = _images(3, 3, 8, 8)
    assert torch.allclose(t.inverse()(t(x)), x, atol=1e-5)
    assert torch.equal(t.validity_mask(8, 8), torch.ones(1, 8, 8))


@pytest.mark.parametrize("spec", ["brightness_up:1.4", "contrast_up:1.5", "posterize:4",
                                  "solarize:0.5", "blur:1", "noise:0.1", "grayscale",
                                  "brightness_down", "posterize"])
def test_non_invertible_transforms_refuse_to_invert(spec: str) -> None:
    t = create_transform(spec)
    assert not t.is_invertible
    x = _images(1, 3, 8, 8)
    with pytest.raises(TransformError, match="not invertible"):
        t.invert_all(t.apply_all(x))
    with pytest.raises(TransformError, match="not invertible"):
        t.validity_masks(None, 8, 8)
    if isinstance(t, Transform):
        with pytest.raises(TransformError, match=spec.split(":")[0]):
            t.inverse()


# ---------------------------------------------------------------- photometric formulas


def _np_gray_mean(x: np.ndarray) -> np.ndarray:
    g = x if x.shape[1] == 1 else np.tensordot(np.array([0.299, 0.587, 0.114]), x, ([0], [1]))
    if g.ndim == 4:
        g = g[:, 0]
    return g.reshape(g.shape[0], -1).mean(1)[:, None, None, None]


@pytest.mark.parametrize("c", [1, 3])
def test_photometric_formulas_match_numpy(c: int) -> None:
    x = _images(4, c, 7, 9, seed=3)
    xn = x.double().numpy()
    mu = _np_gray_mean(xn)
    refs = {
        "brightness_up:1.4": np.clip(1.4 * xn, 0, 1),
        "brightness_down:0.3": 0.3 * xn,
        "contrast_up:1.7": np.clip(mu + 1.7 * (xn - mu), 0, 1),
        "contrast_down:0.4": mu + 0.4 * (xn - mu),
        "posterize:3": (np.round(xn * 255).astype(np.int64) & 0b11100000) / 255,
        "posterize:0": np.zeros_like(xn),
        "solarize:0.6": np.where(xn > 0.6, 1 - xn, xn),
        "invert": 1 - xn,
    }
    for spec, ref in refs.items():
        assert np.allclose(create_transform(spec)(x).numpy(), ref, atol=1e-5), spec


def test_grayscale_luminance_and_refusal() -> None:
    x = _images(2, 3, 5, 5)
    y = create_transform("grayscale")(x)
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert y.shape == x.shape and torch.allclose(y, lum[:, None].expand_as(x), atol=1e-6)
    with pytest.raises(TransformError, match="3-channel.*C=1"):
        create_transform("grayscale")(_images(2, 1, 5, 5))


def test_blur_matches_a_reference_gaussian_convolution() -> None:
    x = _images(2, 1, 16, 16)
    sigma, r = 1.2, 4
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).float()
    ref = F.pad(x, (r, r, r, r), mode="reflect")
    ref = F.conv2d(ref, (k[:, None] * k[None, :])[None, None])
    assert torch.allclose(create_transform("blur:1.2")(x), ref, atol=1e-5)


# ---------------------------------------------------------------- specs


def test_spec_parsing_good() -> None:
    assert create_transform("rotate:30").name == "rotate:30"
    assert create_transform(" Rotate:30 ").name == "rotate:30"
    assert create_transform("rotate").magnitudes[:3] == [0.0, -27.0, 45.0]
    assert create_transform("posterize:4").magnitude == 4.0
    assert create_transform("t3").name == "t3" and create_transform("d4").order == 8
    fam = create_transform("rotate", magnitudes=[0, 15, 30])
    assert fam.members == [0.0, 15.0, 30.0] and fam.at(30).name == "rotate:30"
    assert create_transform(fam.name).members == fam.members  # names round-trip
    noisy = create_transform("noise@seed=2")
    assert noisy.name == "noise@seed=2" and noisy.kind == "family"
    t = create_transform("rotate:45")
    assert create_transform(t) is t
    listed = invlab.list_transforms()
    assert set(FAMILIES) | {"r4", "t<n>", "flip", "d4", "grayscale", "invert"} == set(listed)
    assert listed["r4"].endswith("flags: exact, invertible, group")
    assert listed["rotate"].endswith("flags: invertible") and "-27, 0, 45" in listed["rotate"]
    assert "24.8889" in listed["translate_x"] and listed["posterize"].endswith("flags: none")


@pytest.mark.parametrize("spec,match", [
    ("rotat", "unknown transform.*valid names.*rotate"),
    ("r8", "unknown transform"),
    ("rotate:abc", "must be a number"),
    ("zoom_in:0.5", "factor >= 1"),
    ("zoom_out:2", r"\(0, 1\]"),
    ("posterize:4.5", "integer bits 0..8"),
    ("posterize:9", "integer bits"),
    ("shear_x:90", "except ±90"),
    ("brightness_down:1.5", r"\[0, 1\]"),
    ("grayscale:2", "takes no magnitude"),
    ("rotate@seed=1", "takes no seed"),
    ("r4:7", "not an element"),
    ("rotate:nan", "invalid magnitude"),
    ("rot-ate", "cannot parse"),
    ("r4@seed=2", "apply to families"),
    ("grayscale:[1,2]", "takes no magnitude"),
    ("zoom_in:[1,0.5]", "factor >= 1"),
])
def test_spec_parsing_bad(spec: str, match: str) -> None:
    with pytest.raises(TransformError, match=match):
        create_transform(spec)


def test_family_rejects_bad_members_and_sample_sizes() -> None:
    fam = create_transform("zoom_in")
    with pytest.raises(TransformError, match="factor >= 1"):
        fam.apply_all(_images(), members=[1.0, 0.5])
    with pytest.raises(TransformError, match="one magnitude per image"):
        fam.sample(_images(4), magnitudes=torch.ones(3))


# ---------------------------------------------------------------- refusals in models


@pytest.mark.parametrize("spec,lack", [("rotate:30", "not exact .*bilinear.* not a group"),
                                       ("rotate", "not exact"),
                                       ("grayscale", "not exact .*not invertible"),
                                       ("r4:1", "not a group")])
def test_models_needing_an_exact_group_refuse_other_transforms(spec: str, lack: str) -> None:
    with pytest.raises(TransformError, match=f"weight tying.*'{spec}' is {lack}"):
        invlab.create_model("wt_mlp5", group=spec)
    with pytest.raises(TransformError, match=f"GroupPooled.*'{spec}' is {lack}"):
        invlab.GroupPooled(invlab.create_model("mlp5"), spec)


def test_models_accept_a_group_transform_set() -> None:
    model = invlab.create_model("wt_mlp5", group=create_transform("flip"))
    assert model.group.name == "flip" and model.model_kwargs["group"] == "flip"
    pooled = invlab.GroupPooled(invlab.create_model("mlp5"), create_transform("r4"))
    assert pooled.group.order == 4


# ---------------------------------------------------------------- CLI


def test_cli_transforms_list(capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main

    assert main(["transforms", "list", "--size", "36"]) == 0
    out = capsys.readouterr().out
    assert "rotate" in out and "0, 4, 8, 12, 16, 20, 24, 28, 32, 36 px on 36x36" in out
    assert "grayscale" in out and "r4" in out
    assert main(["transforms", "list", "--size", "bad"]) == 2
    assert "--size must be" in capsys.readouterr().err
    assert main(["groups", "list"]) == 0


# ---------------------------------------------------------------- properties (hypothesis)

@settings(max_examples=25, deadline=None)
@given(a=st.floats(-180, 180), b=st.floats(-180, 180))
def test_rotation_composition_property(a: float, b: float) -> None:
    x = _smooth(1, 40, 40)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    disc = ((yy - 19.5) ** 2 + (xx - 19.5) ** 2) < 15**2
    two = create_transform(f"rotate:{b}")(create_transform(f"rotate:{a}")(x))
    one = create_transform(f"rotate:{a + b}")(x)
    assert float((two - one)[..., disc].abs().max()) < 0.03


@settings(max_examples=25, deadline=None)
@given(dx=st.integers(-12, 12), dy=st.integers(-12, 12))
def test_translation_inverse_mask_property(dx: int, dy: int) -> None:
    x = _images(2, 1, 12, 12, seed=4)
    tx = create_transform(f"translate_x:{dx}")
    ty = create_transform(f"translate_y:{dy}")
    for t, d in ((tx, dx), (ty, dy)):
        back = t.inverse()(t(x))
        mask = t.validity_mask(12, 12)
        assert torch.allclose(back * mask, x * mask, atol=1e-5)
        assert int(mask.sum()) == 12 * (12 - abs(d))  # exactly the pixels kept by the shift


@settings(max_examples=30, deadline=None)
@given(f=st.floats(0, 3), c=st.sampled_from([1, 3]))
def test_brightness_contrast_property(f: float, c: int) -> None:
    x = _images(2, c, 5, 5, seed=6)
    up, down = ("up", f) if f >= 1 else ("down", f)
    y = create_transform(f"brightness_{up}:{down}")(x)
    assert torch.allclose(y, (x * f).clamp(0, 1), atol=1e-6)
    z = create_transform(f"contrast_{up}:{down}")(x)
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    if f <= 1:  # contrast towards the mean keeps the mean gray level
        g = torch.tensor([0.299, 0.587, 0.114][:c] if c == 3 else [1.0]).view(1, c, 1, 1)
        assert torch.allclose((z * g).sum(1).mean((1, 2)), (x * g).sum(1).mean((1, 2)),
                              atol=1e-5)


def test_dtype_members_subset_and_device() -> None:
    x = _images(3, 1, 10, 10).double()
    fam = create_transform("shear_y")
    y = fam.apply_all(x, members=torch.tensor([0.0, 22.75]))
    assert y.dtype == torch.float64 and y.shape == (2, 3, 1, 10, 10)
    assert torch.equal(y[0], x)
    assert torch.allclose(y[1], fam.at(22.75)(x), atol=1e-12)
    assert fam.validity_masks([0.0, 22.75], 10, 10, device="cpu").shape == (2, 1, 10, 10)
    assert create_transform("posterize:3")(x).dtype == torch.float64
    assert create_transform("blur:1")(x).dtype == torch.float64
    with pytest.raises(TransformError, match=r"\[N, C, H, W\]"):
        create_transform("rotate:3")(torch.zeros(10, 10))


def test_sampling_helpers_match_torch() -> None:
    from invlab.transforms.sampling import _inv2, affine_grid

    theta = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(0))
    ref = F.affine_grid(theta, [6, 1, 9, 14], align_corners=False)
    assert torch.allclose(affine_grid(theta, 9, 14, torch.float32), ref, atol=1e-6)
    a = torch.randn(5, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_inv2(a), torch.linalg.inv(a), atol=1e-12)
