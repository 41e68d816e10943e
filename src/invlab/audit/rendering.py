"""The audit's output: figures (saliency grids, profile plots), ``audit.html``, the
summary text ``invlab audit`` prints, and writing it all (:func:`write_audit`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invlab.attribution import boundary_for_group, integrated_gradients, saliency_map
from invlab.audit.measuring import AuditSettings, _member_name, _resolve_transform
from invlab.audit.verdicts import (
    CANNOT,
    MECHANISM_RULES,
    OUTPUT_RULES,
    audit_claims,
    rules_text,
)
from invlab.io import atomic_write, remove_stale_temps
from invlab.metrics.orbit import Normalized
from invlab.report import figures
from invlab.report.claims import write_claims
from invlab.report.html import escape, html_figures, html_table, read_figures, render_page
from invlab.report.metric_labels import axis_label, higher_is_better, resolve, short_name, upper_bound

# --------------------------------------------------------------------------- figures


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "t"


def saliency_grid(model: nn.Module, x: torch.Tensor, t: Any, norm: dict[str, Any],
                  s: AuditSettings, out: Path) -> Path | None:
    """PNG: rows = images; columns = image, its saliency m(x), then T⁻¹m(T·x) (masked) for up
    to 3 members. Identical maps across a row = saliency invariance."""
    if not t.is_invertible:
        return None
    plt = figures.pyplot()
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
    return Path(figures.save(fig, out, f"saliency_{_slug(t.name)}", dpi=110, formats=("png",))[0])


PROFILE_CURVES = (("agreement", "agreement", ""), ("effective_invariance", "EI", ""),
                  ("accuracy", "accuracy(T·x)", ""), ("saliency_similarity", "SI", ""),
                  ("representation_invariance", "RI", ""), ("kl", "DI = KL", "nats"))
"""A family's profile: ``(metric, legend name, unit)``. Scores where higher is better (the
metric registry's ``higher_is_better``) share the left axis; those where lower is better are
dashed on the right axis."""


def _profile_scores(ax: Any, xs: list[float], met: dict[str, Any]) -> None:
    """The higher-is-better curves on ``ax``, from a little below the lowest value (RI is
    unbounded below: all of it stays on the plot) to just above the scores' top (1 =
    invariant)."""
    names = [(m, name) for m, name, _ in PROFILE_CURVES if higher_is_better(m)]
    lo = 0.0
    for m, name in names:
        if met.get(m) is not None:
            ax.plot(xs, met[m], marker="o", ms=4, label=name)
            lo = min(lo, *(v for v in met[m] if v is not None and math.isfinite(v)))
    top = upper_bound([m for m, _ in names], 1.0)
    ax.set_ylim(lo - 0.05 * (top - lo) - 0.02, top + 0.05)
    if lo < 0:
        ax.axhline(0, color="0.6", lw=0.6, ls=":")
    ax.set_ylabel(axis_label(f"score ({top:g} = invariant)", names[0][0] if names else ""),
                  fontsize=10)


def _profile_errors(ax: Any, xs: list[float], met: dict[str, Any]) -> Any:
    """The lower-is-better curves (DI) dashed on a right axis twin of ``ax`` (returned; None
    when there is no such curve)."""
    curves = [c for c in PROFILE_CURVES if higher_is_better(c[0]) is False]
    if not curves:
        return None
    ax2 = ax.twinx()
    for i, (m, name, _) in enumerate(curves):
        if met.get(m) is not None:
            ax2.plot(xs, met[m], "--", color="k" if i == 0 else None, marker="x", ms=4,
                     label=f"{name} (right axis)")
    text = " / ".join(f"{name} ({unit})" if unit else name for _, name, unit in curves)
    ax2.set_ylabel(axis_label(text, curves[0][0]), fontsize=10)
    ax2.tick_params(labelsize=9)
    return ax2


def profile_plot(entry: dict[str, Any], out: Path, t: Any = None, hw: Any = None
                 ) -> Path | None:
    """PNG for a family: agreement, EI, accuracy, SI and RI (left axis; 1 = invariant, RI
    may be negative) and DI (right axis) against the magnitude in the family's own unit
    (degrees, factors; pixels for a translation when ``t`` and the canvas ``hw`` = (H, W)
    are given). Each axis says which way is better (:data:`PROFILE_CURVES`)."""
    if entry["kind"] != "family":
        return None
    plt = figures.pyplot()
    h, w = (None, None) if hw is None else (int(hw[0]), int(hw[1]))
    raw = [float(m) for m in entry["members"]]
    xv = [float(t.display_magnitude(m, h, w)) if hasattr(t, "display_magnitude") else m
          for m in raw]
    unit = t.display_unit(h, w) if hasattr(t, "display_unit") else ""
    order = sorted(range(len(xv)), key=lambda j: xv[j])
    xs = [xv[j] for j in order]
    fig, ax = plt.subplots(figsize=(7.4, 3.8))
    met = {k: None if v is None else [v[j] for j in order] for k, v in entry["metrics"].items()}
    _profile_scores(ax, xs, met)
    ax2 = _profile_errors(ax, xs, met)
    ax.set_xticks(xs, [f"{v:.3g}" for v in xs], fontsize=9, rotation=45)
    ax.tick_params(labelsize=9)
    family = entry["name"].split(":")[0]
    ax.set_xlabel(f"{family} magnitude" + (f" ({unit})" if unit else ""), fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels() if ax2 is not None else ([], [])
    # outside the axes, right of the DI axis and its label: it covers no curve
    ax.legend(h1 + h2, l1 + l2, fontsize=9, loc="upper left", bbox_to_anchor=(1.2, 1.0),
              borderaxespad=0, frameon=False)
    ax.set_title(f"invariance profile: {entry['name']}", fontsize=10)
    fig.tight_layout()
    return Path(figures.save(fig, out, f"profile_{_slug(entry['name'])}", dpi=110, formats=("png",))[0])


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


def _layer_columns(met: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, label)`` of the measured metrics beside :data:`TABLE_COLUMNS`: representation
    invariance per layer, labelled with the registry's short name and the layer (``RI``,
    ``RI@conv1``)."""
    fixed = {k for k, _ in TABLE_COLUMNS}
    return [(k, short_name(k) + k[len(r[0].name):]) for k in met
            if k not in fixed and (r := resolve(k)) is not None]


def _rows(entry: dict[str, Any], per_member: bool) -> list[list[str]]:
    met = entry["metrics"]
    cols = [k for k, _ in TABLE_COLUMNS + _layer_columns(met)]
    if not per_member:
        return [[entry["name"], entry["verdict"], *[_fmt(entry["mean"].get(c)) for c in cols]]]
    return [[n, v["verdict"], *[_fmt(None if met.get(c) is None else met[c][j]) for c in cols]]
            for j, (n, v) in enumerate(zip(entry["member_names"], entry["member_verdicts"]))]


def _columns(doc: dict[str, Any]) -> list[str]:
    extra = _layer_columns(doc["transforms"][0]["metrics"])
    return ["transform", "verdict", *[label for _, label in TABLE_COLUMNS + extra]]


_LI = {"holds": "pass", "does not hold": "fail", CANNOT: "na"}


def _health_warning(doc: dict[str, Any]) -> str:
    """One line when the model fails a precondition of its verdicts (else empty)."""
    problems = (doc.get("model_health") or {}).get("problems") or []
    return ("WARNING: " + "; ".join(problems) + ". No transform is called invariant for this "
            "model: a constant predictor agrees with itself under every transform."
            if problems else "")


def render_audit_html(doc: dict[str, Any], out: Path) -> str:
    """``audit.html``: verdicts, numbers, figures, settings (the report template)."""
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
             f'<p class="note">Verdict rules: outputs invariant when '
             f"{rules_text(OUTPUT_RULES, th)}; mechanism invariant when "
             f"{rules_text(MECHANISM_RULES, th)} (SI only for invertible transforms). A model "
             "at chance or whose predictions collapse to one class is never called "
             "invariant.</p>")
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
    written += [Path(p) for p in write_claims(d, audit_claims(doc))]
    written.append(Path(atomic_write(d / "audit.html", render_audit_html(doc, d))))
    return written



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
            + f"\n\nverdicts (outputs invariant: "
              f"{rules_text(OUTPUT_RULES, s['thresholds'], ', ', ascii=True)}; mechanism: "
              f"{rules_text(MECHANISM_RULES, s['thresholds'], ascii=True)}):\n" + verdicts)
