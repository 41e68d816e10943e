"""One readable training loop for DA, WT and IR (M23 §3.3, §4).

All three methods train on randomly transformed inputs: every sample gets a fresh random
group element every step (one batched ``group.act``, no per-sample Python).

- ``da``: ``L = CE(f(g·x), y)``;
- ``wt``: the same loss on the weight-tied model ``wt_mlp5`` (invariant by construction);
- ``ir``: ``L = CE(f(g·x), y) + ν · mean_i I(f(g·x_i), f(h·g·x_i))`` with a second random
  element ``h``, where ``I`` is a functional metric (``logit_l2`` by default, or any of
  :data:`REGULARIZERS`, the registry's differentiable pair metrics) — the same
  differentiable function the metrics use.

Adam, batch 512, lr 8e-4; the checkpoint with the best validation accuracy is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from invlab.checkpoint import describe_model, save_checkpoint
from invlab.config import ID_IF_NOT_DEFAULT, ConfigError
from invlab.data import Split, TransformingData
from invlab.devices import model_device, resolve_device, study_device
from invlab.groups import Group, create_group
from invlab.metrics.registry import regularizer, regularizer_names
from invlab.models import WeightTied, create_model
from invlab.models.factory import FactoryError, build_from_factory, factory_path, import_factory
from invlab.progress import progress_bar
from invlab.train.orbit_batches import OrbitBatches

METHODS = ("da", "wt", "ir")
LR_SCHEDULES = ("constant", "cosine", "plateau")
PLATEAU_FACTOR = 0.1
PLATEAU_DECAYS = 2
MEMORY_FORMATS = ("contiguous", "channels_last")
REGULARIZERS = regularizer_names()
"""The metrics IR can use as its regularizer: the registry's differentiable pair metrics
(``logit_l2``, ``kl``, ``logit_l2_normalized``, ``logit_l2_normalized_detached``, ``js``)."""


class TrainConfigError(ConfigError):
    """A training config field has an invalid value: the one config error type
    (:class:`invlab.sweep.ConfigError`), with ``field`` set and the message naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(None, message)
        self.field = field


def _check(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise TrainConfigError(name, f"invalid {name}: {msg}")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. ``model`` is ``mlp5`` for DA/IR; WT uses ``wt_<model>``."""

    method: str = "da"
    group: str = "r4"
    model: str = "mlp5"
    epochs: int = 300
    batch_size: int = 512
    lr: float = 8e-4
    nu: float = 0.0
    regularizer: str = "logit_l2"
    pool: str = "max"
    seed: int = 0
    patience: int | None = None
    """Stop when validation accuracy has not improved for this many epochs (None: never)."""
    threads: int = 1
    """Intra-op threads training runs with (``torch.set_num_threads``). Part of the config
    (and so of the checkpoint key): matmul blocking and reduction order depend on it, so the
    same config gives bit-identical weights in any process, executor or worker count."""
    lr_schedule: str = field(default="constant", metadata=ID_IF_NOT_DEFAULT)
    """``constant``: ``lr`` throughout; ``cosine``: step ``t`` of ``T = epochs · steps per
    epoch`` uses ``lr · (1 + cos(π t / T)) / 2``, annealed to 0 at the last step (so training
    ends converged for the budget; a ``patience`` stop ends it earlier, at a higher rate);
    ``plateau`` (needs ``patience``): each time validation accuracy has not improved for
    ``patience`` epochs (since the best epoch or the last decay) the rate is multiplied by
    ``PLATEAU_FACTOR`` (0.1), at most ``PLATEAU_DECAYS`` (2) times; the next such stall
    stops training (or ``epochs``). Part of ids only when not ``constant`` (the behaviour
    before the field existed)."""
    memory_format: str = field(default="contiguous", metadata=ID_IF_NOT_DEFAULT)
    """``channels_last``: train with 4-d weights and input batches in channels-last layout
    (oneDNN's faster convolutions on CPU: about 1.5x per step for ``cnn_medium``). Changes
    the rounding, so it is part of ids (when not ``contiguous``); the returned model and the
    checkpoint are contiguous either way. No effect on models without 4-d weights."""

    def __post_init__(self) -> None:
        _check(isinstance(self.model, str), "model",
               f"must be a registered model name (a str, e.g. 'mlp5'), found a "
               f"{type(self.model).__name__}; pass your own nn.Module or factory as "
               "train(cfg, data, model=...)")
        _check(self.method in METHODS, "method", f"expected one of {METHODS}, found {self.method!r}")
        create_group(self.group)  # raises GroupError naming valid groups
        _check(self.epochs >= 1, "epochs", f"must be >= 1, found {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, found {self.batch_size}")
        _check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be > 0, found {self.lr}")
        _check(math.isfinite(self.nu) and self.nu >= 0, "nu", f"must be >= 0, found {self.nu}")
        _check(self.regularizer in REGULARIZERS, "regularizer",
               f"expected one of {REGULARIZERS}, found {self.regularizer!r}")
        _check(self.pool in ("max", "mean"), "pool", f"expected max or mean, found {self.pool!r}")
        _check(self.patience is None or self.patience >= 1, "patience",
               f"must be >= 1 or None, found {self.patience}")
        _check(isinstance(self.threads, int) and self.threads >= 1, "threads",
               f"must be an int >= 1, found {self.threads!r}")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule",
               f"expected one of {LR_SCHEDULES}, found {self.lr_schedule!r}")
        _check(self.lr_schedule != "plateau" or self.patience is not None, "lr_schedule",
               "'plateau' decays the rate after `patience` epochs without improvement; "
               "set patience")
        _check(self.memory_format in MEMORY_FORMATS, "memory_format",
               f"expected one of {MEMORY_FORMATS}, found {self.memory_format!r}")

    @property
    def model_name(self) -> str:
        return f"wt_{self.model}" if self.method == "wt" else self.model


@dataclass
class TrainResult:
    model: nn.Module
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    checkpoint: Path | None = None


def scheduled_lr(cfg: TrainConfig, step: int, total_steps: int, decays: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total_steps`` under
    ``cfg.lr_schedule``: ``lr`` (constant), ``lr · (1 + cos(π · step / total_steps)) / 2``
    (cosine) or ``lr · PLATEAU_FACTOR ** decays`` (plateau, after ``decays`` decays)."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    if cfg.lr_schedule == "plateau":
        return cfg.lr * PLATEAU_FACTOR ** decays
    return cfg.lr


def build_model(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The config's model, initialized from ``cfg.seed`` (global RNG left untouched)."""
    kwargs: dict[str, Any] = {"in_shape": list(in_shape), "num_classes": num_classes}
    if cfg.method == "wt":
        kwargs.update(group=cfg.group, pool=cfg.pool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model_name, **kwargs)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 4096) -> float:
    """Top-1 accuracy on a split (images already transformed), in eval mode."""

    was = model.training
    model.eval()
    correct = 0
    dev = model_device(model)
    for i in range(0, len(split), batch_size):
        logits = model(split.images[i:i + batch_size].to(dev))
        correct += int((logits.argmax(1).cpu() == split.labels[i:i + batch_size]).sum())
    model.train(was)
    return correct / max(1, len(split))


def _regularizer(name: str):  # type: ignore[no-untyped-def]
    """The registered differentiable pair metric ``name`` (:func:`invlab.metrics.regularizer`):
    the same function ``measure`` evaluates, no second copy of the formula."""
    return regularizer(name)


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``augment(x [N, C, H, W], generator) -> [N, C, H, W]``: extra per-sample augmentation."""


def train_step_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, group: Group,
                    cfg: TrainConfig, gen: torch.Generator, augment: Augment | None = None
                    ) -> tuple[torch.Tensor, float]:
    """Loss for one batch: random elements per sample (then ``augment(x, gen)`` if given),
    plus IR's pair term. Returns (loss, regularizer value)."""
    n = x.shape[0]
    return _step_loss(model, OrbitBatches(group, x, max_bytes=0), torch.arange(n), y, cfg, gen,
                      augment)


def _step_loss(model: nn.Module, batches: OrbitBatches, idx: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig, gen: torch.Generator, augment: Augment | None = None
               ) -> tuple[torch.Tensor, float]:
    """:func:`train_step_loss` of the training images ``idx`` (read from ``batches``). The
    random draws are the same, in the same order, whether or not the orbit is precomputed."""
    n, order = idx.shape[0], batches.group.order
    g = torch.randint(0, order, (n,), generator=gen).to(idx.device)  # CPU draws, any device
    if cfg.method == "ir" and cfg.nu != 0 and augment is None:
        h = torch.randint(0, order, (n,), generator=gen).to(idx.device)
        logits = model(batches.take_pair(idx, g, h))
    else:
        xg = batches.take(idx, g)
        if augment is not None:
            xg = augment(xg, gen)
        if cfg.method != "ir" or cfg.nu == 0:
            return F.cross_entropy(model(xg), y), 0.0
        h = torch.randint(0, order, (n,), generator=gen).to(idx.device)
        logits = model(torch.cat([xg, batches.group.act(xg, h)]))
    reg = _regularizer(cfg.regularizer)(logits[:n], logits[n:]).mean()
    return F.cross_entropy(logits[:n], y) + cfg.nu * reg, float(reg.detach())


def train(cfg: TrainConfig, data: TransformingData, checkpoint: str | Path | None = None,
          progress: bool = True, metadata: dict[str, Any] | None = None,
          augment: Augment | None = None, *,
          model: Any = None, model_kwargs: dict[str, Any] | None = None,
          device: Any = None) -> TrainResult:
    """Train per ``cfg`` on ``data.train``; select by accuracy on ``data.val``.

    The model is ``cfg.model`` from the registry, or ``model``: an ``nn.Module`` (trained in
    place), or a factory — a function or its import path ``"package.module:function"`` /
    ``"FILE.py:function"`` — called with ``model_kwargs`` under ``torch.manual_seed(cfg.seed)``
    and returning an ``nn.Module`` (or ``(module, normalization)``). With ``method="wt"`` the
    model's first layer is tied over ``cfg.group`` (:class:`invlab.models.WeightTied`).

    Deterministic on CPU: the same config, data and seed give identical weights (training
    runs with exactly ``cfg.threads`` intra-op threads; the caller's setting is restored).
    If ``checkpoint`` is given, the best model is saved there with ``save_checkpoint``
    (model, group, normalization statistics, data fingerprint, data and training config, seed);
    ``augment(x, generator)`` (optional) transforms every training batch after the group
    element, drawing from the loop's seeded generator (e.g. ``Family.sample``); with the
    trivial group ``t1`` it is the only augmentation. It is not part of ``cfg``: callers
    that cache checkpoints must key them on it themselves. A user's model needs a factory
    marked ``@invlab.models.model_factory`` for that (checked
    before training).

    ``device`` (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"``; default: the study device,
    ``$INVLAB_DEVICE``, else the CPU): the model and the training images are moved there;
    the random draws stay on the CPU generator (the same draws on every device) and the
    returned model is on ``device`` (the checkpoint is written from CPU copies). Off the CPU,
    ``cfg.threads`` affects only CPU-side work and results are not bit-identical to CPU runs.

    Raises:
        TrainConfigError: bad config fields, or a ``model`` that is not a module / factory.
    """

    dev = study_device() if device is None else resolve_device(device, where="device")
    with intra_op_threads(cfg.threads):
        net = None if model is None else user_model(cfg, data, model, model_kwargs)
        if net is not None and checkpoint is not None:
            describe_model(net)  # a model that could not be rebuilt fails now, not after training
        return _train(cfg, data, checkpoint, progress, metadata, net, augment, dev)


def user_model(cfg: TrainConfig, data: TransformingData, model: Any,
               model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``model`` of :func:`train` as a module (factories built from ``cfg.seed``; WT tied)."""

    spec: str | None = None
    if isinstance(model, nn.Module):
        net = model
        if model_kwargs:
            raise TrainConfigError("model_kwargs", "invalid model_kwargs: given with an nn.Module (they are for "
                                   "a factory)")
    elif isinstance(model, str) or callable(model):
        try:
            fn = import_factory(model) if isinstance(model, str) else model
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                net, _ = build_from_factory(fn, model_kwargs, str(model))
        except FactoryError as e:
            raise TrainConfigError("model", f"invalid model: {e}") from e
        try:  # a FILE.py factory has no import path: it trains, but cannot be checkpointed
            spec = model if isinstance(model, str) and ".py:" not in model else factory_path(fn)
        except FactoryError:
            spec = None
    else:
        raise TrainConfigError("model", f"invalid model: expected a registered name in TrainConfig, an "
                               f"nn.Module, a factory function or 'module:function', found a "
                               f"{type(model).__name__}")
    if spec is not None:
        net.invlab_factory = spec  # type: ignore[assignment]
        net.invlab_factory_kwargs = dict(model_kwargs or {})  # type: ignore[assignment]
    if cfg.method == "wt":
        try:
            net = WeightTied(net, cfg.group, in_shape=data.in_shape, pool=cfg.pool)
        except ValueError as e:
            raise TrainConfigError("model", f"invalid model for method 'wt': {e}") from e
    return net


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(cfg: TrainConfig, data: TransformingData, checkpoint: str | Path | None,
           progress: bool, metadata: dict[str, Any] | None,
           model: nn.Module | None = None, augment: Augment | None = None,
           device: torch.device | None = None) -> TrainResult:
    group = create_group(cfg.group)
    if model is None:
        model = build_model(cfg, data.in_shape, data.num_classes)
    if device is not None and device.type != "cpu":
        model.to(device)
    with _memory_format(model, cfg.memory_format):
        return _fit(cfg, data, checkpoint, progress, metadata, model, group, augment)


@contextmanager
def _memory_format(model: nn.Module, fmt: str) -> Iterator[None]:
    """Train ``model`` in ``fmt``: channels-last 4-d weights and 4-d inputs (a forward
    pre-hook) inside the block; contiguous weights and no hook after it."""
    if fmt == "contiguous":
        yield
        return

    def to_channels_last(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        return args

    model.to(memory_format=torch.channels_last)
    hook = model.register_forward_pre_hook(to_channels_last)
    try:
        yield
    finally:
        hook.remove()
        model.to(memory_format=torch.contiguous_format)


def _fit(cfg: TrainConfig, data: TransformingData, checkpoint: str | Path | None,
         progress: bool, metadata: dict[str, Any] | None, model: nn.Module, group: Group,
         augment: Augment | None) -> TrainResult:
    """Train for up to ``cfg.epochs`` epochs, keep the weights of the best validation
    accuracy (early stop / plateau decays per ``cfg.patience``), save the checkpoint."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)

    dev = model_device(model)
    x_all, y_all = data.train.images.to(dev), data.train.labels.to(dev)
    batches = OrbitBatches(group, x_all)  # g·x batches by one index_select (same values)
    best_acc, best_epoch, best_state = -1.0, -1, None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.epochs), desc=f"train {cfg.method}/{cfg.group}/s{cfg.seed}",
                       unit="epoch", disable=not progress, leave=False, dynamic_ncols=True)
    epochs_run = 0
    decays, mark = 0, -1  # plateau decays so far; the epoch a stall is counted from
    for epoch in bar:
        loss, reg = _epoch(model, opt, batches, y_all, cfg, gen, augment, epoch, decays)
        val_acc = evaluate_accuracy(model, data.val)
        history.append({"epoch": epoch, "loss": loss, "reg": reg,
                        "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"]})
        epochs_run = epoch + 1
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{val_acc:.3f}",
                        best=f"{best_acc:.3f}")
        if cfg.patience is not None and epoch - max(best_epoch, mark) >= cfg.patience:
            if cfg.lr_schedule != "plateau" or decays == PLATEAU_DECAYS:
                break
            decays, mark = decays + 1, epoch
    bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(model, best_acc, best_epoch, epochs_run, history,
                         time.perf_counter() - t0)
    if checkpoint is not None:
        result.checkpoint = _save_from_cpu(model, checkpoint, cfg, data, result, metadata)
    return result


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: OrbitBatches,
           y_all: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
           augment: Augment | None, epoch: int, decays: int) -> tuple[float, float]:
    """One epoch over a fresh permutation drawn from ``gen``: a step per batch (the loss of
    :func:`_step_loss`, the scheduled rate). Returns the mean loss and regularizer value."""
    n = len(y_all)
    dev = y_all.device
    steps_per_epoch = -(-n // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    model.train()
    perm = torch.randperm(n, generator=gen)
    tot_loss, tot_reg, steps = 0.0, 0.0, 0
    for i in range(0, n, cfg.batch_size):
        idx = perm[i:i + cfg.batch_size]
        if dev.type != "cpu":
            idx = idx.to(dev)
        loss, reg = _step_loss(model, batches, idx, y_all[idx], cfg, gen, augment)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch} step {steps} (method={cfg.method}, "
                f"nu={cfg.nu}); lower lr or nu")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.lr_schedule != "constant":
            for pg in opt.param_groups:
                pg["lr"] = scheduled_lr(cfg, epoch * steps_per_epoch + steps, total_steps,
                                        decays)
        opt.step()
        tot_loss += float(loss.detach())
        tot_reg += reg
        steps += 1
    return tot_loss / steps, tot_reg / steps


def _save_from_cpu(model: nn.Module, checkpoint: str | Path, cfg: TrainConfig,
                   data: TransformingData, result: TrainResult,
                   metadata: dict[str, Any] | None) -> Path:
    """:func:`_save` of the best model, written from CPU tensors (a model on another device
    is moved to the CPU for the write and back after it)."""
    dev = model_device(model)
    args = (checkpoint, cfg, data, result.best_val_accuracy, result.best_epoch,
            result.epochs_run, result.history, result, metadata)
    if dev.type == "cpu":
        return _save(model, *args)
    model.cpu()
    try:
        return _save(model, *args)
    finally:
        model.to(dev)


def _save(model: nn.Module, checkpoint: str | Path, cfg: TrainConfig, data: TransformingData,
          best_acc: float, best_epoch: int, epochs_run: int, history: list[dict[str, float]],
          result: TrainResult, metadata: dict[str, Any] | None) -> Path:
    return save_checkpoint(
        model, checkpoint, group=cfg.group, seed=cfg.seed, train=asdict(cfg),
        normalization={"mean": data.mean, "std": data.std},
        best_val_accuracy=best_acc, best_epoch=best_epoch, epochs_run=epochs_run,
        val_curve=[round(h["val_accuracy"], 4) for h in history],
        **({"lr_curve": [h["lr"] for h in history]} if cfg.lr_schedule != "constant"
           else {}),
        wall_seconds=round(result.wall_seconds, 2),
        **({"data_fingerprint": data.fingerprint} if data.fingerprint else {}),
        **(metadata or {}))
