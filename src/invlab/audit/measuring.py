"""The audit's measuring: load the user's model (:func:`load_user_model`) and data
(:func:`load_audit_data`), run the measures per transform (:func:`run_audit`)."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invlab.audit.verdicts import THRESHOLDS, _summarize, model_health
from invlab.checkpoint import load_checkpoint
from invlab.data import load_for_checkpoint, load_source, open_images
from invlab.errors import InvlabError
from invlab.metrics import measure
from invlab.metrics.functional import jacobian_spectral_norm
from invlab.metrics.orbit import Normalized
from invlab.models.factory import FactoryError, build_from_factory, import_factory
from invlab.models.pretrained import PRETRAINED, PretrainedError, load_pretrained
from invlab.progress import progress_bar
from invlab.transforms import TransformError, create_transform

DEFAULT_TRANSFORMS = ("r4", "rotate", "translate_x", "brightness_up")
OUTPUT_METRICS = ("kl", "logit_l2", "effective_invariance", "agreement")


class AuditError(InvlabError, ValueError):
    """A bad model file, factory, checkpoint, data set or transform (one-line message)."""


@dataclass(frozen=True)
class AuditSettings:
    """Budgets of an audit (defaults: minutes for a CIFAR-size CNN on 2 CPU cores)."""

    transforms: tuple[str, ...] = DEFAULT_TRANSFORMS
    layers: tuple[str, ...] | None = None  #: None: the penultimate features
    limit: int = 500  #: images for output and representation invariance
    n_si: int = 100  #: images for SI (integrated gradients are the expensive part)
    n_sensitivity: int = 100  #: images for the Jacobian's σ_max
    ig_steps: int = 32
    n_show: int = 4  #: images in each saliency grid
    seed: int = 0
    device: str = "cpu"
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    def __post_init__(self) -> None:
        for name in ("limit", "n_si", "n_sensitivity", "ig_steps"):
            v = getattr(self, name)
            low = {"limit": 2, "n_sensitivity": 0}.get(name, 1)  # 0 images: no σ_max
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise AuditError(f"{name} must be an int >= {low}, found {v!r}")
        if not self.transforms:
            raise AuditError("no transforms to audit; give e.g. --transforms r4,rotate")


# --------------------------------------------------------------------------- model


def _import_factory(spec: str) -> Any:
    """``FILE.py:function`` or ``package.module:function`` → the function."""

    try:
        return import_factory(spec, trusted=True)
    except FactoryError as e:
        raise AuditError(f"--model {e}") from e


def check_normalization(norm: Any, where: str) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` (per channel, or scalars), std > 0, all finite."""
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise AuditError(f"{where}: normalization must be a dict {{'mean': [...], 'std': [...]}} "
                         f"(per channel), found {norm!r}")
    out = {}
    for k in ("mean", "std"):
        v = norm[k] if isinstance(norm[k], (list, tuple)) else [norm[k]]
        if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                            and math.isfinite(x) for x in v):
            raise AuditError(f"{where}: normalization {k!r} must be finite numbers, found "
                             f"{norm[k]!r}")
        out[k] = [float(x) for x in v]
    if min(out["std"]) <= 0:
        raise AuditError(f"{where}: normalization 'std' must be > 0, found {out['std']}")
    return out


def call_factory(fn: Any, where: str, kwargs: dict[str, Any] | None = None
                 ) -> tuple[nn.Module, dict[str, list[float]]]:
    """:func:`invlab.models.factory.build_from_factory` (a module, or ``(module,
    normalization)``) with the normalization checked; a bare module without a
    ``normalization`` attribute gets none (the model sees the images in pixel space [0, 1];
    a warning line says so)."""
    try:
        model, norm = build_from_factory(fn, kwargs, where)
    except FactoryError as e:
        raise AuditError(str(e)) from e
    if norm is None:
        norm = getattr(model, "normalization", None)
    if norm is None:
        logging.getLogger("invlab").warning(
            "%s: the factory returned a bare module and no normalization: the model gets the "
            "images in pixel space [0, 1] (return (model, {'mean': [...], 'std': [...]}) if it "
            "was trained on normalized inputs)", where)
        norm = {"mean": [0.0], "std": [1.0]}
    return model, check_normalization(norm, where)


def load_user_model(spec: str, device: str = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The model of ``--model``: ``FILE.py:factory``, ``module:factory`` or a checkpoint.

    Returns:
        (model in eval mode on ``device``, normalization, info) where info has ``spec``,
        ``kind`` (factory/checkpoint), ``class``, ``parameters`` and, for a checkpoint,
        its ``metadata``.
    """
    p = Path(spec)
    info: dict[str, Any] = {"spec": spec}
    if spec in PRETRAINED and not p.exists():  # a pretrained name: efficientnet_lite0
        try:
            model = load_pretrained(spec)
        except PretrainedError as e:
            raise AuditError(f"--model {spec}: {e}") from e
        norm = check_normalization(model.normalization, f"--model {spec}")
        info.update(kind="pretrained", preprocess=model.preprocess)
    elif p.suffix == ".safetensors" or (p.is_file() and ":" not in p.name):
        model, meta = load_checkpoint(p)
        norm = meta.get("normalization") or {"mean": [0.0], "std": [1.0]}
        info.update(kind="checkpoint", metadata=meta)
        norm = check_normalization(norm, f"--model {spec}")
    else:
        model, norm = call_factory(_import_factory(spec), f"--model {spec!r}")
        info.update(kind="factory")
        if isinstance(getattr(model, "preprocess", None), str):
            info["preprocess"] = model.preprocess  # the model's own eval transform
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as e:
        raise AuditError(f"--device {device}: cannot move the model there ({e})") from e
    info.update({"class": type(model).__name__,
                 "parameters": sum(int(q.numel()) for q in model.parameters())})
    return model, norm, info


# --------------------------------------------------------------------------- data


def _read_external(spec: str, limit: int, seed: int, preprocess: str | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Images of a path (``.npz``, ``.npy``, CIFAR ``.bin``, an image folder) or ``photos``,
    read lazily by :func:`invlab.data.open_images` (its errors name the file): only the
    ``limit`` images of the seeded subset are decoded. Labels are None for unlabelled data."""
    ds = open_images(spec, preprocess=preprocess)
    total = len(ds)
    idx = torch.arange(total)
    if total > limit:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit]
        idx = idx.sort().values
    x = torch.stack([ds.image(int(i)) for i in idx]) if total else torch.empty(0)
    y = None if ds.labels is None else ds.labels[idx].long()
    info = ds.describe()
    pre = f", preprocess {ds.preprocess.spec}" if ds.preprocess else ""
    lab = "" if ds.labels is not None else ", unlabelled"
    desc = f"{spec} ({total:,} images{pre}{lab})"
    if ds.mapping_text():
        desc += f"; {ds.mapping_text()}"
    return x, y, {"description": desc, "images_available": total, "format": info["format"],
                  "preprocess": info["preprocess"], "class_to_idx": info["class_to_idx"],
                  "classes": info["classes"], "labelled": info["labelled"]}


def load_audit_data(spec: str, info: dict[str, Any], limit: int, seed: int = 0,
                    preprocess: str | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Pixel-space images ``[N, C, H, W]`` in [0, 1] and labels for ``--data``.

    ``spec``: an invlab source (``mnist``, ``fashion-mnist``, ...; for a checkpoint its own
    test split as its study built it), a path :func:`invlab.data.open_images` reads (a
    ``.npz``, ``.npy``, CIFAR ``.bin``, an image folder) or ``photos``. At most ``limit``
    images, a seeded random subset when there are more. ``preprocess`` (e.g.
    ``"resize=256,crop=224"``) applies to image files only. Labels are None for unlabelled
    data (a flat folder without labels file, ``photos``).
    """
    p = Path(spec)
    meta = info.get("metadata")
    if p.exists() or spec.strip().lower() == "photos":
        x, y, rec = _read_external(spec, limit, seed, preprocess)
        return x.contiguous(), y, {"spec": spec, **rec, "images": len(x),
                                   "shape": list(x.shape[1:])}
    if preprocess:
        raise AuditError(f"--preprocess applies to image files (a folder, .npz, .npy, .bin or "
                         f"photos), not to the invlab source {spec!r}")
    if meta is not None:
        x, y = load_for_checkpoint(spec if ":" in spec else f"{spec}:test", meta)
        n = meta.get("normalization") or {"mean": 0.0, "std": 1.0}
        x = (x * n["std"] + n["mean"]).clamp(0, 1)  # back to pixel space
        desc = f"{spec} (the checkpoint's test split, {len(y):,} images)"
    else:
        try:
            ds = load_source(spec.partition(":")[0])
        except ValueError as e:
            raise AuditError(f"--data {spec!r}: {e}") from e
        x = torch.from_numpy(ds.images).float().div_(255.0)
        y = torch.from_numpy(ds.labels).long()
        desc = f"invlab source {spec} ({len(y):,} images)"
    total = len(y)
    if total > limit:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit]
        x, y = x[idx.sort().values], y[idx.sort().values]
    return x.contiguous(), y, {"spec": spec, "description": desc, "images_available": total,
                               "images": len(y), "shape": list(x.shape[1:])}


# --------------------------------------------------------------------------- measuring


def _resolve_transform(spec: str, images: torch.Tensor) -> Any:
    try:
        t = create_transform(spec)
        t.check_input(images[:1])
    except TransformError as e:
        raise AuditError(f"--transforms: {e}") from e
    return t


def _probe(model: nn.Module, norm: dict[str, list[float]], x: torch.Tensor,
           device: str) -> int:
    """Run the model on two images; return its number of classes (clear error otherwise)."""
    c = x.shape[1]
    if len(norm["mean"]) not in (1, c) or len(norm["std"]) not in (1, c):
        raise AuditError(f"normalization has {len(norm['mean'])} means / {len(norm['std'])} "
                         f"stds but the images have {c} channel(s)")
    m = Normalized(model, torch.tensor(norm["mean"]), torch.tensor(norm["std"])).to(device)
    try:
        with torch.no_grad():
            out = m(x[:2].to(device))
    except (Exception, SystemExit) as e:
        raise AuditError(f"the model rejects images of shape {list(x.shape[1:])} (C, H, W): "
                         f"{type(e).__name__}: {e}") from e
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point()):
        raise AuditError(f"the model must return [N, classes] float logits, returned "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    return int(out.shape[1])


def _member_name(t: Any, m: Any, hw: Any = None) -> str:
    """A member's label in the family's own unit (translations in pixels on an ``hw`` =
    (H, W) canvas)."""
    if hasattr(t, "member_label"):
        return str(t.member_label(m, *(hw if hw is not None else (None, None))))
    try:
        return str(t.at(m).name)
    except Exception:  # noqa: BLE001 - a label only
        return f"{t.name}:{m}"


def _measure_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, t: Any,
                 s: AuditSettings, norm: dict[str, Any], progress: bool,
                 si_note: str | None = None) -> dict[str, Any]:
    """All metrics of one transform: ``{metric: [k values]}`` over its non-identity members.
    ``si_note``: why SI is not applicable (then not measured), None when it is."""
    gen = torch.Generator().manual_seed(s.seed)
    metrics = [*OUTPUT_METRICS, "representation_invariance"] + (["accuracy"] if y is not None
                                                                else [])
    m = measure(model, x, labels=y, transform=t, normalization=norm, metrics=metrics,
                layers=list(s.layers) if s.layers else None, generator=gen, progress=False)
    # per member: each metric's summary statistic (the median for RI, as B21; else the mean)
    per = {k: list(m.by_member(k).values()) for k in m.per_sample
           if not k.endswith(("_d_same", "_d_other")) and k != "clean_accuracy"}
    si = None
    if t.is_invertible and si_note is None:
        n = min(s.n_si, len(x))
        msi = measure(model, x[:n], labels=None if y is None else y[:n], transform=t,
                      normalization=norm, metrics=["saliency_similarity"], generator=gen,
                      progress=progress,
                      options={"n_si": None, "saliency_similarity": {"n_steps": s.ig_steps}})
        si = msi.per_sample["saliency_similarity"].double().mean(0).tolist()
    per["saliency_similarity"] = si
    return {"members": [_jsonable(e) for e in m.members], "metrics": per,
            **({"si_note": si_note} if si_note and t.is_invertible else {})}


def _output_ignores_input(nm: nn.Module, x: torch.Tensor, device: str) -> bool:
    """True if ``∂(w·f(x))/∂x`` is exactly zero on (up to) 16 images for a random ``w``: the
    model's output does not depend on its input there, so its saliency maps are all zero
    and SI (a cosine of saliency maps) is not applicable."""
    xb = x[:16].to(device).clone().requires_grad_(True)
    with torch.enable_grad():
        out = nm(xb)
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return True
        w = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(0))
        (g,) = torch.autograd.grad((out * w.to(out)).sum(), xb, allow_unused=True)
    return g is None or not bool(g.ne(0).any())


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return v
    return v


def _sensitivity(model: nn.Module, x: torch.Tensor, norm: dict[str, Any], n: int,
                 device: str, seed: int) -> dict[str, Any]:
    if n == 0:  # --n-sensitivity 0: skipped (σ_max of a large model costs ~100 passes/image)
        return {"sigma_max_mean": None, "sigma_max_std": None, "n": 0}
    m = Normalized(model, torch.tensor(norm["mean"]), torch.tensor(norm["std"])).to(device)
    sig = jacobian_spectral_norm(m, x[:n].to(device),
                                 generator=torch.Generator().manual_seed(seed)).double().cpu()
    return {"sigma_max_mean": float(sig.mean()), "sigma_max_std": float(sig.std()) if n > 1
            else 0.0, "n": int(len(sig))}


def run_audit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
              normalization: dict[str, Any], settings: AuditSettings | None = None, *,
              progress: bool = True) -> dict[str, Any]:
    """Measure everything (see the module doc); returns the ``audit.json`` document.

    Args:
        model: ``[N, C, H, W]`` normalized images → ``[N, K]`` logits.
        images: pixel-space ``[N, C, H, W]`` in [0, 1] (already limited to the budget).
        labels: ``[N]`` or None.
        normalization: ``{"mean": [...], "std": [...]}`` applied after every transform.
    """
    s = settings or AuditSettings()
    t0 = time.perf_counter()
    transforms = [_resolve_transform(spec, images) for spec in s.transforms]
    classes = _probe(model, normalization, images, s.device)
    model.eval()
    doc: dict[str, Any] = {"settings": {**asdict(s), "transforms": list(s.transforms)},
                           "classes": classes, "transforms": []}
    with torch.no_grad():
        nm = Normalized(model, torch.tensor(normalization["mean"]),
                        torch.tensor(normalization["std"])).to(s.device)
        pred = torch.cat([nm(images[i:i + 512].to(s.device)).argmax(1).cpu()
                          for i in range(0, len(images), 512)])
    doc["clean_accuracy"] = None if labels is None else float((pred == labels).double().mean())
    si_note = None
    if _output_ignores_input(nm, images, s.device):
        si_note = "not applicable: the model's output does not depend on its input"
        doc["notes"] = [f"SI {si_note} (zero input gradient), so every saliency map is zero"]
    doc["model_health"] = model_health(pred, labels, classes)
    problems = doc["model_health"]["problems"]
    bar = progress_bar(transforms, desc="audit", unit="transform", disable=not progress,
                       file=sys.stderr)
    for t in bar:
        bar.set_postfix_str(t.name)
        try:
            res = _measure_one(model, images, labels, t, s, normalization, progress, si_note)
        except ValueError as e:  # MeasureError: names what is wrong
            raise AuditError(f"measuring {t.name}: {e}") from e
        res["member_names"] = [_member_name(t, m, images.shape[-2:]) for m in res["members"]]
        entry = {"name": t.name, "kind": t.kind, **t.flags(), **res}
        entry.update(_summarize(t, entry, s.thresholds, problems))
        doc["transforms"].append(entry)
    bar.close()
    doc["sensitivity"] = _sensitivity(model, images, normalization,
                                      min(s.n_sensitivity, len(images)), s.device, s.seed)
    doc["wall_seconds"] = time.perf_counter() - t0
    return doc

