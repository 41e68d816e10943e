"""Training batches from a precomputed orbit (``invlab.train.orbit_batches``) are the same
values as acting per batch, and training with them gives bit-identical weights."""

from __future__ import annotations

import pytest
import torch

import invlab.train.orbit_batches as ob
from invlab.data import Split, TransformingData
from invlab.groups import create_group
from invlab.groups.base import GroupError
from invlab.train import TrainConfig, train
from invlab.train.orbit_batches import OrbitBatches


@pytest.mark.parametrize("name", ["r4", "t3", "d4", "flip", "t1"])
def test_take_and_take_pair_equal_acting_on_the_batch(name: str) -> None:
    group = create_group(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 12, 12, generator=gen)
    idx = torch.randint(0, 50, (40,), generator=gen)
    g = torch.randint(0, group.order, (40,), generator=gen)
    h = torch.randint(0, group.order, (40,), generator=gen)
    batches = OrbitBatches(group, x)
    assert batches.precomputed
    xg = group.act(x[idx], g)
    assert torch.equal(batches.take(idx, g), xg)
    assert torch.equal(batches.take_pair(idx, g, h), torch.cat([xg, group.act(xg, h)]))
    fallback = OrbitBatches(group, x, max_bytes=0)
    assert not fallback.precomputed
    assert torch.equal(fallback.take_pair(idx, g, h), batches.take_pair(idx, g, h))


def test_the_composition_table_is_the_groups_product() -> None:
    group = create_group("d4")
    table = group.pixel_table(9, 9)
    comp = ob._composition(table)
    assert comp is not None
    x = torch.arange(81.0).view(1, 1, 9, 9)
    for h in range(group.order):
        for g in range(group.order):
            assert torch.equal(group.act(group.act(x, g), h), group.act(x, int(comp[h, g])))


def test_a_non_square_image_is_refused_for_rotations() -> None:
    with pytest.raises(GroupError, match="square"):
        OrbitBatches(create_group("r4"), torch.zeros(4, 1, 6, 8))


def test_an_orbit_above_the_budget_falls_back_to_acting_per_batch() -> None:
    x = torch.zeros(10, 1, 8, 8)
    assert not OrbitBatches(create_group("r4"), x, max_bytes=4 * x.numel() * 4 - 1).precomputed
    assert OrbitBatches(create_group("r4"), x, max_bytes=4 * x.numel() * 4).precomputed


def _data(n: int = 300) -> TransformingData:
    gen = torch.Generator().manual_seed(1)

    def split(m: int) -> Split:
        return Split(torch.rand(m, 1, 12, 12, generator=gen),
                     torch.randint(0, 3, (m,), generator=gen), torch.zeros(m, dtype=torch.long))

    return TransformingData(split(n), split(64), split(64), mean=0.0, std=1.0, group="r4",
                            num_classes=3, provenance=("synthetic",))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + 0.01 * torch.randn(x.shape, generator=gen)


@pytest.mark.parametrize(("method", "group", "augment"), [
    ("da", "r4", None), ("ir", "r4", None), ("ir", "t3", None), ("wt", "flip", None),
    ("ir", "r4", _shift), ("da", "t1", _shift)])
def test_training_from_the_orbit_gives_bit_identical_weights(
        monkeypatch: pytest.MonkeyPatch, method: str, group: str, augment: object) -> None:
    cfg = TrainConfig(model="mlp5", method=method, group=group, nu=1.0 if method == "ir" else 0.0,
                      epochs=2, batch_size=64, seed=3)
    data = _data()
    fast = train(cfg, data, progress=False, augment=augment).model.state_dict()  # type: ignore[arg-type]
    monkeypatch.setattr(ob, "ORBIT_MAX_BYTES", 0)
    slow = train(cfg, data, progress=False, augment=augment).model.state_dict()  # type: ignore[arg-type]
    assert fast.keys() == slow.keys()
    assert all(torch.equal(fast[k], slow[k]) for k in fast)
