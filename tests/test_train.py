"""Training loop (DA / WT / IR) and IR's ν search on tiny real Transforming-MNIST runs.

Every run here is a few epochs on 600 training images (real MNIST via ``$INVLAB_DATA``;
skipped with a reason when absent), so the whole module takes seconds on a busy machine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from invlab.checkpoint import load_checkpoint
from invlab.data import DataConfig, Split, TransformingData, prepare_transforming
from invlab.metrics import measure
from invlab.train import TrainConfig, evaluate_accuracy, train, tune_nu
from invlab.train.loop import TrainConfigError, train_step_loss

DATA_CFG = DataConfig(n_train=600, n_val=200, n_test_max=200)


@pytest.fixture(scope="module")
def data(mnist_test_dir: Path) -> TransformingData:
    return prepare_transforming(DATA_CFG, "r4")


def cfg(**kw: object) -> TrainConfig:
    base = {"method": "da", "group": "r4", "epochs": 2, "seed": 0}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def li(model: torch.nn.Module, data: TransformingData) -> float:
    m = measure(model, data.test.images, labels=data.test.labels, group="r4", metrics=["logit_l2"])
    return float(m.summary["logit_l2"])


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- methods


def test_wt_is_exactly_invariant_and_ir_lowers_li_against_da(data: TransformingData) -> None:
    # a larger lr and a smaller batch than the paper's so that 3 epochs on 600 images are
    # ~30 steps, enough to move the logits on any clone's data (15k shared or 5k bundled)
    wt = train(cfg(method="wt", epochs=1, lr=3e-3, batch_size=64), data, progress=False).model
    da = train(cfg(method="da", epochs=3, lr=3e-3, batch_size=64), data, progress=False).model
    ir = train(cfg(method="ir", epochs=3, lr=3e-3, batch_size=64, nu=1.0), data,
               progress=False).model
    li_wt, li_da, li_ir = li(wt, data), li(da, data), li(ir, data)
    # WT: max over the orbit after ReLU, invariant by construction (float rounding only)
    assert li_wt < 1e-6, li_wt
    # DA is not invariant; IR's pair term (same seed, same data order) removes most of LI
    # (measured: DA 0.82, IR 0.053 on the shared 15k; DA 1.28, IR 0.16 on the bundled 5k)
    assert li_da > 0.01, li_da
    assert li_ir < 0.3 * li_da, (li_ir, li_da)
    # all three learned something (9 classes: chance is ~11 %)
    for m in (wt, da, ir):
        assert evaluate_accuracy(m, data.test) > 0.2


@pytest.mark.parametrize("regularizer", ["kl", "logit_l2", "logit_l2_normalized"])
def test_ir_runs_with_each_regularizer(data: TransformingData, regularizer: str) -> None:
    res = train(cfg(method="ir", epochs=1, nu=1.0, regularizer=regularizer), data,
                progress=False)
    assert res.epochs_run == 1 and len(res.history) == 1
    h = res.history[0]
    assert math.isfinite(h["loss"]) and h["reg"] > 0  # the pair term was computed
    assert 0.0 <= res.best_val_accuracy <= 1.0


def test_train_step_loss_adds_the_weighted_pair_term(data: TransformingData) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36 * 36, 9))
    x, y = data.train.images[:32], data.train.labels[:32]
    from invlab.groups import create_group

    g = create_group("r4")
    loss0, reg0 = train_step_loss(model, x, y, g, cfg(method="ir", nu=0.0),
                                  torch.Generator().manual_seed(1))
    assert reg0 == 0.0
    loss_da, _ = train_step_loss(model, x, y, g, cfg(method="da"),
                                 torch.Generator().manual_seed(1))
    assert torch.equal(loss0, loss_da)  # ν = 0 is plain DA (same random elements)
    loss1, reg1 = train_step_loss(model, x, y, g, cfg(method="ir", nu=2.0),
                                  torch.Generator().manual_seed(1))
    assert reg1 > 0
    assert float(loss1.detach()) == pytest.approx(float(loss_da.detach()) + 2.0 * reg1, rel=1e-5)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("method", ["da", "ir"])
def test_training_is_deterministic(data: TransformingData, method: str) -> None:
    c = cfg(method=method, nu=1.0 if method == "ir" else 0.0)
    torch.manual_seed(123)  # the global RNG must not matter
    a = train(c, data, progress=False)
    torch.manual_seed(456)
    b = train(c, data, progress=False)
    assert same_weights(a.model, b.model)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    other = train(replace(c, seed=1), data, progress=False)
    assert not same_weights(a.model, other.model)


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(("field", "value"), [
    ("method", "xx"), ("epochs", 0), ("lr", -1.0), ("lr", float("nan")), ("nu", -1.0),
    ("regularizer", "foo"), ("patience", 0), ("group", "r5"), ("batch_size", 0),
    ("pool", "sum"), ("lr_schedule", "step"), ("memory_format", "nhwc"),
])
def test_bad_config_is_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_bad_config_error_type() -> None:
    with pytest.raises(TrainConfigError, match="invalid epochs"):
        TrainConfig(epochs=0)


# --------------------------------------------------------------------------- lr schedule


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_each_step_uses_the_scheduled_learning_rate(data: TransformingData, schedule: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[float] = []
    step = torch.optim.Adam.step

    def recording(self: torch.optim.Adam, *a: object, **k: object) -> object:
        used.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    c = cfg(epochs=3, batch_size=128, lr=1e-3, lr_schedule=schedule)
    train(c, data, progress=False)
    total = 3 * math.ceil(600 / 128)
    assert len(used) == total
    if schedule == "constant":
        assert used == [1e-3] * total
    else:  # the formula, by hand: lr (1 + cos(pi t / T)) / 2, from lr down to ~0
        want = [1e-3 * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
        assert used == pytest.approx(want, rel=1e-12, abs=0)
        assert used[0] == 1e-3 and used[-1] < 1e-3 * 0.02


def test_plateau_decays_the_rate_after_each_stall_then_stops(data: TransformingData,
                                                             tmp_path: Path) -> None:
    # lr 1e-20: Adam's steps are below float32 resolution, so validation accuracy never
    # improves after epoch 0 and every `patience` epochs is a stall
    c = cfg(epochs=50, lr=1e-20, patience=2, lr_schedule="plateau")
    res = train(c, data, checkpoint=tmp_path / "p.safetensors", progress=False)
    assert res.best_epoch == 0 and res.epochs_run == 3 * 2 + 1
    lrs = [h["lr"] for h in res.history]
    assert lrs == pytest.approx([1e-20] * 3 + [1e-21] * 2 + [1e-22] * 2, rel=1e-12)
    assert load_checkpoint(res.checkpoint)[1]["lr_curve"] == lrs
    with pytest.raises(TrainConfigError, match="set patience"):
        TrainConfig(lr_schedule="plateau")


def test_the_schedule_field_keeps_old_ids_at_its_default() -> None:
    from invlab.studies.common import model_key
    from invlab.sweep import cell_id
    from invlab.sweep.config import id_dict

    # constant (the behaviour before the field existed) keeps the ids of older checkpoints
    assert model_key(TrainConfig(), DATA_CFG) == model_key(TrainConfig(lr_schedule="constant"),
                                                           DATA_CFG)
    assert model_key(TrainConfig(), DATA_CFG) != model_key(TrainConfig(lr_schedule="cosine"),
                                                           DATA_CFG)
    assert cell_id(TrainConfig()) != cell_id(TrainConfig(lr_schedule="cosine"))
    assert "lr_schedule" not in id_dict(TrainConfig())
    assert id_dict(TrainConfig(lr_schedule="cosine"))["lr_schedule"] == "cosine"


@pytest.mark.parametrize("model", ["cnn_medium", "mlp5", "vit_tiny"])
def test_channels_last_training_is_deterministic_and_returns_a_contiguous_model(
        data: TransformingData, model: str, tmp_path: Path) -> None:
    c = cfg(model=model, epochs=1, memory_format="channels_last")
    a = train(c, data, checkpoint=tmp_path / "a.safetensors", progress=False)
    b = train(c, data, progress=False)
    assert same_weights(a.model, b.model)
    assert all(p.is_contiguous() for p in a.model.parameters())
    assert not a.model._forward_pre_hooks  # the layout hook is gone after training
    loaded, _ = load_checkpoint(a.checkpoint)
    with torch.no_grad():
        assert torch.equal(loaded(data.test.images[:64]), a.model(data.test.images[:64]))
    # the same training in the default layout: other rounding, the same model up to it
    ref = train(replace(c, memory_format="contiguous"), data, progress=False)
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(ref.model.parameters(),
                                                            a.model.parameters()))
    assert diff < 1e-2


def test_channels_last_trains_a_users_plain_sequential(data: TransformingData) -> None:
    from torch import nn

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                             nn.Flatten(), nn.Linear(4 * 9 * 9, 9))

    c = cfg(epochs=1, memory_format="channels_last")
    a, b = train(c, data, progress=False, model=net()), train(c, data, progress=False, model=net())
    assert same_weights(a.model, b.model) and a.model[0].weight.is_contiguous()
    assert not a.model._forward_pre_hooks
    assert not same_weights(a.model, net())  # it trained


# --------------------------------------------------------------------------- checkpoint


def test_checkpoint_round_trip(data: TransformingData, tmp_path: Path) -> None:
    c = cfg(method="wt", epochs=1, seed=3)
    res = train(c, data, checkpoint=tmp_path / "ck" / "m.safetensors", progress=False,
                metadata={"data": asdict(DATA_CFG)})
    assert res.checkpoint == tmp_path / "ck" / "m.safetensors" and res.checkpoint.is_file()
    model, meta = load_checkpoint(res.checkpoint)
    assert same_weights(model, res.model)
    x = data.test.images[:50]
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    assert meta["normalization"] == {"mean": data.mean, "std": data.std}
    assert meta["train"] == asdict(c)
    assert meta["seed"] == 3 and meta["group"] == "r4"
    assert meta["data"] == asdict(DATA_CFG)
    assert meta["best_val_accuracy"] == res.best_val_accuracy
    assert meta["epochs_run"] == 1 and len(meta["val_curve"]) == 1


def test_study_cache_checkpoint_records_data_and_is_reused(mnist_test_dir: Path,
                                                            tmp_path: Path) -> None:
    from invlab.studies.common import pin_source, trained_model

    c = cfg(method="da", epochs=1)
    m1, meta1, reused1 = trained_model(c, DATA_CFG, tmp_path)
    m2, meta2, reused2 = trained_model(c, DATA_CFG, tmp_path)
    assert (reused1, reused2) == (False, True)
    # the data config is pinned to the content hash of the data it was trained on
    assert meta1["data"] == asdict(pin_source(DATA_CFG)) and meta1["train"] == asdict(c)
    assert meta1["data"]["source_hash"] == meta1["data_fingerprint"]["hash"]
    assert meta1 == meta2 and same_weights(m1, m2)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


# --------------------------------------------------------------------------- stopping, failures


def test_early_stopping_with_patience(data: TransformingData) -> None:
    res = train(cfg(method="da", epochs=30, patience=1, lr=1e-3), data, progress=False)
    assert res.epochs_run < 30
    # stopped exactly `patience` epochs after the best one, and the best weights were kept
    assert res.epochs_run == res.best_epoch + 1 + 1
    assert res.best_val_accuracy == max(h["val_accuracy"] for h in res.history)
    assert evaluate_accuracy(res.model, data.val) == res.best_val_accuracy


def test_non_finite_loss_raises(data: TransformingData) -> None:
    images = data.train.images.clone()
    images[5] = float("nan")
    bad = replace(data, train=Split(images, data.train.labels, data.train.elements))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(cfg(method="da", epochs=1), bad, progress=False)


def test_huge_learning_rate_raises(data: TransformingData) -> None:
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(cfg(method="ir", epochs=20, lr=1e12, nu=1e6), data, progress=False)


# --------------------------------------------------------------------------- ν search


def on_grid(nu: float) -> bool:
    k = 2 * math.log10(nu)
    return abs(k - round(k)) < 1e-9


def test_tune_nu_easy_target_walks_down_to_the_smallest(data: TransformingData) -> None:
    c = cfg(method="ir", epochs=1)
    s = tune_nu(c, data, target=-1.0, nu_start=1.0, nu_min=0.3, nu_max=1.0, n_val_si=8,
                progress=False)
    # grid within [0.3, 1]: 10^(-1/2) and 1; every SI >= -1 passes → step down to the floor
    assert [t["nu"] for t in s.trials] == pytest.approx([10 ** -0.5, 1.0])
    assert s.reached and s.target == -1.0
    assert s.nu == pytest.approx(10 ** -0.5) and on_grid(s.nu)
    assert s.si == s.trials[0]["si"] and s.accuracy == s.trials[0]["accuracy"]
    assert s.best is not None
    assert all(-1.0 <= t["si"] <= 1.0 and 0.0 <= t["accuracy"] <= 1.0 for t in s.trials)


def test_tune_nu_unreachable_target_returns_best_si(data: TransformingData) -> None:
    c = cfg(method="ir", epochs=1)
    s = tune_nu(c, data, target=1.01, nu_start=0.3, nu_min=0.3, nu_max=1.0, n_val_si=8,
                progress=False)
    # no SI can reach 1.01: steps up from 10^(-1/2) to the ceiling, then gives the best seen
    assert [t["nu"] for t in s.trials] == pytest.approx([10 ** -0.5, 1.0])
    assert not s.reached
    best = max(s.trials, key=lambda t: t["si"])
    assert s.nu == best["nu"] and s.si == best["si"] and s.accuracy == best["accuracy"]
    assert on_grid(s.nu)


def test_tune_nu_needs_ir(data: TransformingData) -> None:
    with pytest.raises(ValueError, match="method='ir'"):
        tune_nu(cfg(method="da"), data)
