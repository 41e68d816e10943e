"""Zoo training: one plain loop, run per model (sequential) or for a stack of same-shape models
at once (``torch.func.stack_module_state`` + ``vmap``).

Per step, for model ``m``: indices from its own permutation, augmentation with its own
generator, ``L_m = CE(f_m(normalize(aug(x))), y)``; the stack minimizes ``Σ_m L_m``, whose
gradient w.r.t. model ``m``'s parameters is ``∇L_m``, and Adam/SGD act elementwise, so the
stacked run gives the sequential weights up to float rounding. The final weights are kept
(no validation selection: under-trained models are part of the zoo by design).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from invlab.cache import CacheMismatch, acquire_all, holding
from invlab.checkpoint import CheckpointError, load_as_recorded, read_metadata, save_checkpoint
from invlab.data import exact_mean_std
from invlab.data.shifts import fingerprint, mnist_id_split
from invlab.io import atomic_write_text
from invlab.models import create_model
from invlab.zoo.augment import augment
from invlab.zoo.spec import ZooModel

log = logging.getLogger("invlab.zoo")

IN_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@dataclass
class ZooData:
    """Standard MNIST, pixel space: training pool and ID test split, pool statistics."""

    pool_x: torch.Tensor  #: [N_pool, 1, 28, 28] in [0, 1]
    pool_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float
    fingerprint: str

    @property
    def normalization(self) -> dict[str, list[float]]:
        return {"mean": [self.mean], "std": [self.std]}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


_DATA: dict[tuple[int, int], ZooData] = {}


def zoo_data(n_pool: int = 10_000, seed: int = 0) -> ZooData:
    """The seeded pool/test split of ``mnist`` (memoized per process)."""

    if (n_pool, seed) not in _DATA:
        px, py, tx, ty = mnist_id_split(n_pool, seed)
        # exact integer statistics: independent of the thread count (issue 9)
        mean, std = exact_mean_std(px.mul(255).round().to(torch.uint8).numpy(), px.shape[-1])
        _DATA[(n_pool, seed)] = ZooData(px, py, tx, ty, mean, std, fingerprint(px, py, tx, ty))
    return _DATA[(n_pool, seed)]


def build_zoo_model(cfg: ZooModel) -> nn.Module:
    """The member's network, initialized from ``cfg.seed`` (global RNG untouched)."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return create_model(cfg.arch, in_shape=list(IN_SHAPE), num_classes=NUM_CLASSES,
                            **cfg.model_kwargs())


def _batches(cfg: ZooModel, data: ZooData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if cfg.n_train > len(data.pool_y):
        raise ValueError(f"n_train={cfg.n_train} exceeds the training pool of "
                         f"{len(data.pool_y)} images")
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    x_all, y_all = data.pool_x[:cfg.n_train], data.pool_y[:cfg.n_train]
    for _ in range(cfg.epochs):
        perm = torch.randperm(cfg.n_train, generator=gen)
        for i in range(0, cfg.n_train, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            yield data.normalize(augment(x_all[idx], cfg.augment, gen)), y_all[idx]


def _optimizer(cfg: ZooModel, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                           foreach=False)


def train_sequential(cfg: ZooModel, data: ZooData) -> nn.Module:
    """Train one member; returns the model in eval mode."""
    model = build_zoo_model(cfg)
    opt = _optimizer(cfg, list(model.parameters()))
    model.train()
    for xb, yb in _batches(cfg, data):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def train_stacked(cfgs: Sequence[ZooModel], data: ZooData) -> list[nn.Module]:
    """Train members with equal :meth:`ZooModel.stack_key` together; same result as
    :func:`train_sequential` per member (float tolerance). Returns models in eval mode."""
    keys = {c.stack_key() for c in cfgs}
    if len(keys) != 1:
        raise ValueError(f"a stack needs equal architecture and schedule; found {len(keys)} "
                         "different stack keys")
    models = [build_zoo_model(c) for c in cfgs]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def f(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    fwd = vmap(f)
    opt = _optimizer(cfgs[0], list(params.values()))
    m = len(cfgs)
    for steps in zip(*[_batches(c, data) for c in cfgs], strict=True):
        xb = torch.stack([s[0] for s in steps])  # [M, B, C, H, W]
        yb = torch.stack([s[1] for s in steps])  # [M, B]
        logits = fwd(params, buffers, xb)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
        loss = loss.view(m, -1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for i, model in enumerate(models):
        state = {k: v[i].detach().clone() for k, v in {**params, **buffers}.items()}
        model.load_state_dict(state)
        model.eval()
    return models


@torch.no_grad()
def id_accuracy(model: nn.Module, data: ZooData, batch: int = 2048) -> float:
    """Top-1 accuracy on the ID test split."""
    x, y = data.test_x, data.test_y
    hits = sum(int((model(data.normalize(x[i:i + batch])).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(y), batch))
    return hits / len(y)


def checkpoint_path(cfg: ZooModel, data_fingerprint: str, root: str | Path) -> Path:
    """``root/zoo/<sha256(config, data fingerprint)[:20]>.safetensors``."""
    return Path(root) / "zoo" / f"{_key(asdict(cfg), data_fingerprint)}.safetensors"


def _key(zoo: Any, data_fingerprint: Any) -> str:
    blob = json.dumps({"zoo": zoo, "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def verified_metadata(path: str | Path, data_fingerprint: str) -> dict[str, Any]:
    """The metadata of zoo checkpoint ``path`` if it proves what it is: the member config
    (``zoo``) and data fingerprint it records hash to the key in its name, and the
    fingerprint is ``data_fingerprint``. Raises :class:`invlab.cache.CacheMismatch`."""

    p = Path(path)
    try:
        meta = read_metadata(p)
    except (CheckpointError, OSError) as e:
        raise CacheMismatch(p, f"not a readable checkpoint ({e})") from e
    found = (meta.get("data_fingerprint") or {}).get("hash")
    zoo = meta.get("zoo")
    if not isinstance(zoo, dict) or "id_accuracy" not in meta:
        raise CacheMismatch(p, "it records no zoo member config")
    if _key(zoo, found) != p.stem:
        raise CacheMismatch(p, f"the member ({meta.get('model_id')}) and data it records hash "
                               f"to key {_key(zoo, found)}, not to its name")
    if found != data_fingerprint:
        raise CacheMismatch(p, f"it was trained on data {found}, but its key stands for data "
                               f"{data_fingerprint}")
    return meta


def load_zoo_checkpoint(cfg: ZooModel, data_fingerprint: str, root: str | Path,
                        data: Callable[[], ZooData] | None = None
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, metadata)`` of member ``cfg``'s cached checkpoint, verified
    (:func:`verified_metadata`). A mismatched file is retrained (one WARNING line names it)
    when ``data()`` can supply the training data, else raises
    :class:`invlab.cache.CacheMismatch`."""

    path = checkpoint_path(cfg, data_fingerprint, root)
    try:
        meta = verified_metadata(path, data_fingerprint)
        return load_as_recorded(path, meta)
    except CacheMismatch as e:
        if data is None:
            raise
        d = data()
        if d.fingerprint != data_fingerprint:
            raise CacheMismatch(path, f"{e.why}; and it cannot be retrained here: the data "
                                      f"found now is {d.fingerprint}") from e
    train_zoo([cfg], d, root, stacked=False)  # verifies again, retrains, says so
    return load_zoo_checkpoint(cfg, data_fingerprint, root)


def train_zoo(cfgs: Sequence[ZooModel], data: ZooData, root: str | Path, *, stacked: bool = True,
              max_stack: int = 16) -> list[dict[str, Any]]:
    """Train (or find cached) every member; save checkpoints under ``root/zoo/``.

    A cached checkpoint is used only if it proves what it is (:func:`verified_metadata`);
    one that does not is retrained and replaced, with one WARNING line naming it. Members
    are trained under their entry locks (:func:`invlab.cache.acquire_all`, all of a stack
    or none): another process, Ray worker or host training the same members is waited for
    and its checkpoints are used.

    Returns one row per member: ``model_id``, the config, ``checkpoint``, ``id_accuracy``,
    ``train_seconds`` (of its stack, divided by the stack size), ``reused``.
    """

    rows: dict[ZooModel, dict[str, Any]] = {}
    todo: dict[tuple[Any, ...], list[ZooModel]] = {}
    told: set[Path] = set()
    for c in cfgs:
        row = _cached_row(c, data, root, told)
        if row is not None:
            rows[c] = row
        else:
            todo.setdefault(c.stack_key(), []).append(c)
    for group in todo.values():
        for i in range(0, len(group), max_stack if stacked else 1):
            pending = group[i:i + (max_stack if stacked else 1)]
            while pending:
                locks = acquire_all([checkpoint_path(c, data.fingerprint, root) for c in pending],
                                    what=f"training zoo {pending[0].model_id}"
                                         + (f" (+{len(pending) - 1})" if len(pending) > 1 else ""))
                with holding(locks):
                    for c in pending:  # another writer may have finished some meanwhile
                        row = _cached_row(c, data, root, told)
                        if row is not None:
                            rows[c] = row
                    pending = [c for c in pending if c not in rows]
                    if locks and pending:
                        _train_chunk(pending, data, root, rows)
                        pending = []
    return [rows[c] for c in cfgs]


def _cached_row(c: ZooModel, data: ZooData, root: str | Path,
                told: set[Path]) -> dict[str, Any] | None:
    path = checkpoint_path(c, data.fingerprint, root)
    if not path.exists():
        return None
    try:
        meta = verified_metadata(path, data.fingerprint)
    except CacheMismatch as e:
        if path not in told:
            log.warning("%s; retraining it", e)
            told.add(path)
        return None
    return _row(c, path, meta["id_accuracy"], meta.get("train_seconds", 0.0), True)


def _train_chunk(chunk: list[ZooModel], data: ZooData, root: str | Path,
                 rows: dict[ZooModel, dict[str, Any]]) -> None:
    t0 = time.perf_counter()
    models = train_stacked(chunk, data) if len(chunk) > 1 else [train_sequential(chunk[0], data)]
    secs = (time.perf_counter() - t0) / len(chunk)
    for c, model in zip(chunk, models, strict=True):
        acc = id_accuracy(model, data)
        path = checkpoint_path(c, data.fingerprint, root)
        save_checkpoint(model, path, zoo=asdict(c), model_id=c.model_id,
                        normalization=data.normalization,
                        data_fingerprint={"source": "mnist", "split": "zoo pool + ID test",
                                          "images": len(data.pool_y) + len(data.test_y),
                                          "hash": data.fingerprint},
                        id_accuracy=acc, train_seconds=round(secs, 3))
        rows[c] = _row(c, path, acc, secs, False)


def _row(c: ZooModel, path: Path, acc: float, secs: float, reused: bool) -> dict[str, Any]:
    return {"model_id": c.model_id, "family": c.family, **asdict(c), "checkpoint": str(path),
            "id_accuracy": round(float(acc), 6), "train_seconds": round(float(secs), 3),
            "reused": reused}


def write_zoo_table(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The zoo table as CSV (atomic write)."""
    return atomic_write_text(path, pd.DataFrame(list(rows)).to_csv(index=False))
