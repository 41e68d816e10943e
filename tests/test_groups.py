"""Groups: algebra (identity, inverse, associativity, closure), exact actions checked against
torch.rot90 / torch.roll / torch.flip, the homomorphism property, per-sample actions, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invlab.groups import (
    CyclicShift,
    Dihedral4,
    Group,
    GroupError,
    HorizontalFlip,
    Rotation90,
    create_group,
    list_groups,
)

GROUPS = ["r4", "t3", "t4", "flip", "d4"]
ORDERS = {"r4": 4, "t3": 3, "t4": 4, "flip": 2, "d4": 8}
PROPS = settings(max_examples=50, deadline=None)


@st.composite
def images(draw: st.DrawFn) -> torch.Tensor:
    """A random batch [N, C, H, W] with H = W divisible by 3 and 4 (float or uint8)."""
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    size = draw(st.sampled_from([12, 24]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        return torch.randn(n, c, size, size, generator=gen)
    return torch.randint(0, 256, (n, c, size, size), generator=gen, dtype=torch.uint8)


@st.composite
def group_and_elements(draw: st.DrawFn, k: int = 1) -> tuple[Group, list[int]]:
    g = create_group(draw(st.sampled_from(GROUPS)))
    return g, [draw(st.integers(0, g.order - 1)) for _ in range(k)]


def generic_image(size: int = 12) -> torch.Tensor:
    """All pixels distinct, so different pixel permutations give different images."""
    return torch.randperm(size * size, generator=torch.Generator().manual_seed(0)
                          ).float().view(1, 1, size, size)


# --------------------------------------------------------------------------- algebra


@pytest.mark.parametrize("name", GROUPS)
def test_order_elements_identity(name: str) -> None:
    g = create_group(name)
    assert g.order == ORDERS[name]
    assert g.elements == list(range(ORDERS[name]))
    assert g.identity == 0
    assert g.non_identity == list(range(1, ORDERS[name]))
    assert g.inverse(g.identity) == g.identity
    for e in g.elements:
        assert g.compose(g.identity, e) == e
        assert g.compose(e, g.identity) == e


@pytest.mark.parametrize("name", GROUPS)
def test_inverse_both_sides_exhaustive(name: str) -> None:
    g = create_group(name)
    for e in g.elements:
        inv = g.inverse(e)
        assert inv in g.elements
        assert g.compose(e, inv) == g.identity
        assert g.compose(inv, e) == g.identity
        assert g.inverse(inv) == e


@pytest.mark.parametrize("name", GROUPS)
def test_associativity_and_closure_exhaustive(name: str) -> None:
    g = create_group(name)
    els = set(g.elements)
    for a, b, c in itertools.product(g.elements, repeat=3):
        assert g.compose(g.compose(a, b), c) == g.compose(a, g.compose(b, c))
    table = g.cayley_table()
    assert len(table) == g.order
    for a in g.elements:
        # closure, and a Latin square: every row and column is a permutation of the group
        assert set(table[a]) == els
        assert {table[b][a] for b in g.elements} == els
        for b in g.elements:
            assert table[a][b] == g.compose(a, b)


@PROPS
@given(ge=group_and_elements(k=3))
def test_algebra_properties(ge: tuple[Group, list[int]]) -> None:
    g, (a, b, c) = ge
    assert g.compose(a, b) in g.elements  # closure
    assert g.compose(g.compose(a, b), c) == g.compose(a, g.compose(b, c))
    assert g.compose(a, g.inverse(a)) == g.identity == g.compose(g.inverse(a), a)
    # (ab)^-1 = b^-1 a^-1
    assert g.inverse(g.compose(a, b)) == g.compose(g.inverse(b), g.inverse(a))


def test_d4_is_non_abelian_and_r4_t3_flip_are_abelian() -> None:
    d4 = create_group("d4")
    non_commuting = [(a, b) for a, b in itertools.product(d4.elements, repeat=2)
                     if d4.compose(a, b) != d4.compose(b, a)]
    assert non_commuting, "D4 must be non-abelian"
    # the defining relation: flip · rot · flip = rot^-1
    flip, rot = 4, 1
    assert d4.compose(flip, d4.compose(rot, flip)) == d4.inverse(rot) == 3
    x = generic_image()
    a, b = non_commuting[0]
    assert not torch.equal(d4.act(d4.act(x, b), a), d4.act(d4.act(x, a), b))
    for name in ("r4", "t3", "t4", "flip"):
        g = create_group(name)
        assert all(g.compose(a, b) == g.compose(b, a)
                   for a, b in itertools.product(g.elements, repeat=2))


# --------------------------------------------------------------------------- actions


@PROPS
@given(x=images(), ge=group_and_elements(k=2))
def test_action_is_a_homomorphism_exactly(x: torch.Tensor, ge: tuple[Group, list[int]]) -> None:
    g, (a, b) = ge
    assert torch.equal(g.act(g.act(x, b), a), g.act(x, g.compose(a, b)))


@PROPS
@given(x=images(), ge=group_and_elements(k=1))
def test_identity_act_and_inverse_undo(x: torch.Tensor, ge: tuple[Group, list[int]]) -> None:
    g, (a,) = ge
    assert torch.equal(g.act(x, g.identity), x)
    y = g.act(x, a)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(g.act_inverse(y, a), x)
    assert torch.equal(g.act(g.act_inverse(x, a), a), x)
    assert torch.equal(g.act(y, g.inverse(a)), x)
    # the action permutes pixels: the multiset of values per image is unchanged
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


@PROPS
@given(x=images(), data=st.data(), name=st.sampled_from(GROUPS))
def test_per_sample_act_equals_loop(x: torch.Tensor, data: st.DataObject, name: str) -> None:
    g = create_group(name)
    els = data.draw(st.lists(st.integers(0, g.order - 1), min_size=len(x), max_size=len(x)))
    expected = torch.stack([g.act(x[i:i + 1], e)[0] for i, e in enumerate(els)])
    for spec in (els, torch.tensor(els), np.array(els)):
        assert torch.equal(g.act(x, spec), expected)
    # act_inverse undoes the per-sample action, and equals the per-sample inverse elements
    assert torch.equal(g.act_inverse(expected, els), x)
    assert torch.equal(g.act_inverse(x, els), g.act(x, [g.inverse(e) for e in els]))


@PROPS
@given(x=images(), k=st.integers(0, 3))
def test_r4_is_rot90(x: torch.Tensor, k: int) -> None:
    assert torch.equal(create_group("r4").act(x, k), torch.rot90(x, k, dims=(-2, -1)))


@PROPS
@given(x=images(), n=st.sampled_from([3, 4]), data=st.data())
def test_tn_is_roll_by_width_over_n(x: torch.Tensor, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n - 1))
    w = x.shape[-1]
    assert torch.equal(create_group(f"t{n}").act(x, k), torch.roll(x, k * w // n, dims=-1))


@PROPS
@given(x=images())
def test_flip_is_horizontal_flip(x: torch.Tensor) -> None:
    g = create_group("flip")
    assert torch.equal(g.act(x, 1), torch.flip(x, dims=(-1,)))
    assert torch.equal(g.act(x, 0), x)


@PROPS
@given(x=images(), r=st.integers(0, 3), f=st.integers(0, 1))
def test_d4_is_rot90_after_flip(x: torch.Tensor, r: int, f: int) -> None:
    y = torch.flip(x, dims=(-1,)) if f else x
    assert torch.equal(create_group("d4").act(x, r + 4 * f), torch.rot90(y, r, dims=(-2, -1)))


def test_concrete_pixels_move_as_documented() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    # rot90 counter-clockwise: the top-right pixel (2) moves to the top-left
    assert create_group("r4").act(x, 1)[0, 0, 0, 0] == 2
    # t3 element 1 on width 3 moves every column one pixel to the right
    assert create_group("t3").act(x, 1)[0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    assert create_group("flip").act(x, 1)[0, 0, 0].tolist() == [2.0, 1.0, 0.0]


@pytest.mark.parametrize(("name", "distinct"), [("r4", 4), ("t3", 3), ("t4", 4), ("flip", 2),
                                                ("d4", 8)])
def test_actions_are_distinct_on_a_generic_image(name: str, distinct: int) -> None:
    g = create_group(name)
    x = generic_image()
    outs = {tuple(g.act(x, e).flatten().tolist()) for e in g.elements}
    assert len(outs) == distinct == g.order
    orbit = g.orbit(x)
    assert orbit.shape == (g.order, *x.shape)
    for e in g.elements:
        assert torch.equal(orbit[e], g.act(x, e))
    last = g.order - 1
    assert torch.equal(g.orbit(x, [last, 0]), torch.stack([g.act(x, last), x]))


@pytest.mark.parametrize("name", GROUPS)
def test_act_does_not_alias_or_mutate_input(name: str) -> None:
    g = create_group(name)
    x = generic_image()
    before = x.clone()
    for e in g.elements:
        y = g.act(x, e)
        y.add_(1.0)
        assert torch.equal(x, before)
    g.act(x, [g.order - 1])
    assert torch.equal(x, before)


def test_single_image_without_batch_dims() -> None:
    x = generic_image()[0, 0]  # [H, W]
    assert torch.equal(create_group("r4").act(x, 1), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(create_group("t4").act(x, 3), torch.roll(x, 9, dims=-1))


@pytest.mark.parametrize("name", GROUPS)
def test_is_exact(name: str) -> None:
    assert create_group(name).is_exact is True


def test_tensor_and_numpy_scalar_elements_are_accepted() -> None:
    g, x = create_group("r4"), generic_image()
    expected = torch.rot90(x, 3, dims=(-2, -1))
    for e in (3, torch.tensor(3), np.int64(3), torch.tensor([3])[0]):
        assert torch.equal(g.act(x, e), expected)
        assert torch.equal(g.act_inverse(x, e), torch.rot90(x, 1, dims=(-2, -1)))


# --------------------------------------------------------------------------- registry


def test_create_group_registry_and_equality() -> None:
    assert set(list_groups()) == {"r4", "t<n>", "flip", "d4"}
    assert all(isinstance(d, str) and d for d in list_groups().values())
    assert isinstance(create_group("r4"), Rotation90)
    assert isinstance(create_group(" R4 "), Rotation90)
    assert isinstance(create_group("flip"), HorizontalFlip)
    assert isinstance(create_group("d4"), Dihedral4)
    t7 = create_group("t7")
    assert isinstance(t7, CyclicShift) and t7.order == 7 and t7.name == "t7"
    assert create_group("t3") == create_group("t3") != create_group("t4")
    assert hash(create_group("t3")) == hash(CyclicShift(3))
    g = create_group("d4")
    assert create_group(g) is g


@pytest.mark.parametrize("bad", ["r5", "rot", "", "t0", "t-1", "tx", "d8"])
def test_unknown_group_name_lists_valid_names(bad: str) -> None:
    with pytest.raises(GroupError) as err:
        create_group(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    for name in ("r4", "t<n>", "flip", "d4"):
        assert name in msg
    assert isinstance(err.value, ValueError)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["r4", "d4"])
def test_rotation_needs_square_images(name: str) -> None:
    g = create_group(name)
    x = torch.zeros(2, 1, 12, 16)
    with pytest.raises(GroupError, match="square") as err:
        g.act(x, 1)
    assert "H=12" in str(err.value) and "W=16" in str(err.value)
    # also for the identity and for per-sample elements: the group cannot act at all
    with pytest.raises(GroupError, match="square"):
        g.act(x, 0)
    with pytest.raises(GroupError, match="square"):
        g.act(x, [0, 1])
    with pytest.raises(GroupError, match="square"):
        g.orbit(x)
    # flips and shifts are fine on non-square images
    assert create_group("flip").act(x, 1).shape == x.shape
    assert create_group("t4").act(x, 1).shape == x.shape


@pytest.mark.parametrize(("name", "width"), [("t3", 13), ("t4", 18), ("t5", 12)])
def test_shift_must_divide_width(name: str, width: int) -> None:
    g = create_group(name)
    with pytest.raises(GroupError) as err:
        g.act(torch.zeros(1, 1, width, width), 1)
    msg = str(err.value)
    assert f"divisible by {g.order}" in msg and f"W={width}" in msg


@pytest.mark.parametrize("name", GROUPS)
@pytest.mark.parametrize("kind", ["order", "negative", "float", "bool", "str", "float_tensor",
                                  "bool_tensor"])
def test_elements_not_in_the_group(name: str, kind: str) -> None:
    g = create_group(name)
    bad = {"order": g.order, "negative": -1, "float": 1.5, "bool": True, "str": "1",
           "float_tensor": torch.tensor(1.5), "bool_tensor": torch.tensor(True)}[kind]
    x = generic_image()
    calls = [lambda: g.act(x, bad), lambda: g.act_inverse(x, bad), lambda: g.inverse(bad),
             lambda: g.compose(bad, 0), lambda: g.compose(0, bad), lambda: g.check_element(bad),
             lambda: g.orbit(x, [bad])]
    for call in calls:
        with pytest.raises(GroupError, match=f"not an element of {g.name}") as err:
            call()
        assert f"0..{g.order - 1}" in str(err.value)


@pytest.mark.parametrize("bad", [[4, 0], [0, -1], [1.5, 0], [True, False]])
def test_per_sample_elements_not_in_the_group(bad: list[object]) -> None:
    g, x = create_group("r4"), torch.zeros(2, 1, 12, 12)
    for spec in (bad, torch.tensor(bad)):
        for call in (g.act, g.act_inverse):
            with pytest.raises(GroupError) as err:
                call(x, spec)
            msg = str(err.value)
            assert "not an element of r4" in msg or "must be integers" in msg


def test_per_sample_vector_of_wrong_length_or_shape() -> None:
    g, x = create_group("t3"), torch.zeros(3, 1, 12, 12)
    for spec in ([0, 1], [0, 1, 2, 0], torch.zeros(3, 1, dtype=torch.long)):
        with pytest.raises(GroupError, match=r"\[N\] vector") as err:
            g.act(x, spec)
        assert "(3, 1, 12, 12)" in str(err.value)
        with pytest.raises(GroupError, match=r"\[N\] vector"):
            g.act_inverse(x, spec)
    # per-sample elements need a batch dimension
    with pytest.raises(GroupError, match=r"\[N\] vector"):
        g.act(torch.zeros(12, 12), [0] * 12)


def test_act_rejects_non_tensors_and_too_few_dims() -> None:
    g = create_group("flip")
    with pytest.raises(GroupError, match="torch.Tensor"):
        g.act(np.zeros((1, 1, 4, 4)), 1)  # type: ignore[arg-type]
    with pytest.raises(GroupError, match=r"\[\.\.\., H, W\]"):
        g.act(torch.zeros(4), 1)
