"""The per-chunk passes of :func:`invlab.metrics.measure`, one per kind of need.

Each pass reads the chunk's orbit (or images) and writes ``[n, k]`` values into
``run.per[metric][a:b]`` using the registered formulas (:mod:`invlab.metrics.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from invlab.metrics.checks import check_label_range, check_logits, expected_shape
from invlab.metrics.errors import MeasureError
from invlab.metrics.features import FeatureCapture
from invlab.metrics.functional.representation import (
    derangement,
    equivariance_alignment,
    ri_distances,
    shuffle_columns,
)
from invlab.metrics.functional.saliency import saliency_similarity
from invlab.metrics.functional.sensitivity import jacobian_spectral_norm
from invlab.metrics.orbit import Orbit
from invlab.metrics.plan import Plan
from invlab.metrics.registry import REGISTRY, StackedLogits
from invlab.metrics.slicing import MAX_ROWS

__all__ = ["Run", "align_key", "features_pass", "logits_pass", "ri_keys", "saliency_pass",
           "sensitivity_pass"]


@dataclass
class Run:
    """Everything a pass needs: the (normalizing) model, transform, members and outputs."""

    net: Any
    model: Any
    transform: Any
    members: list[Any]
    plan: Plan
    per: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    capture: FeatureCapture | None
    generator: torch.Generator | None
    opts: dict[str, Any]
    image_shape: tuple[int, ...]
    bad_logits: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    bad_features: dict[str, torch.Tensor] = field(default_factory=dict)
    feats: dict[str, torch.Tensor] = field(default_factory=dict)
    progress: Any = None
    rows: int = MAX_ROWS  #: images per model call (:func:`invlab.metrics.slicing.rows_per_call`)
    labels_per_chunk: bool = False  #: labels arrive with the chunks: range-checked per chunk

    @property
    def k(self) -> int:
        return len(self.members)


def ri_keys(layer: str, default_only: bool) -> tuple[str, str, str]:
    """``per_sample`` keys of the score and its two distances for ``layer``."""
    sfx = "" if default_only else f"@{layer}"
    base = "representation_invariance"
    return base + sfx, f"{base}_d_same{sfx}", f"{base}_d_other{sfx}"


def align_key(layer: str, default_only: bool) -> str:
    """``per_sample`` key of ``equivariance_alignment`` for ``layer``."""
    return "equivariance_alignment" + ("" if default_only else f"@{layer}")


def _net(run: Run, x: torch.Tensor) -> torch.Tensor:
    try:
        out = run.net(x)
    except RuntimeError as e:
        shape = expected_shape(run.model)
        raise MeasureError(
            f"the model failed on images of shape [C, H, W] = {list(run.image_shape)}"
            + (f" (model.in_shape = {list(shape)})" if shape else "") + f": {e}") from e
    return check_logits(out, x.shape[0])


def _forward(run: Run, orbit: Orbit) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits ``[k+1, n, K]`` of the orbit and the hooked layers' features
    ``{layer: [k+1, n, D]}`` (model calls of ``run.rows`` images; hooks registered
    only when needed)."""
    cap = run.capture
    hooked = cap is not None and bool(cap.hooked)
    outs: list[torch.Tensor] = []
    feats: dict[str, list[torch.Tensor]] = {}
    for part in orbit.parts:
        logits, zs = [], {}
        for sub in part.split(run.rows):
            if not hooked:
                logits.append(_net(run, sub))
                continue
            with cap.hooks():  # type: ignore[union-attr]
                logits.append(_net(run, sub))
            silent = [s for s in cap.hooked if s not in cap.out]  # type: ignore[union-attr]
            if silent:
                raise MeasureError(
                    f"layer{'s' if len(silent) > 1 else ''} {', '.join(map(repr, silent))} "
                    "produced no output (the model's forward never runs it, e.g. an unused "
                    "head); name a layer on the path from the input to the logits")
            for name, z in cap.out.items():  # type: ignore[union-attr]
                zs.setdefault(name, []).append(z)
            cap.out.clear()  # type: ignore[union-attr]
        outs.append(logits[0] if len(logits) == 1 else torch.cat(logits))
        for name, v in zs.items():
            feats.setdefault(name, []).append(v[0] if len(v) == 1 else torch.cat(v))
    return orbit.gather(outs), {name: orbit.gather(v) for name, v in feats.items()}


def logits_pass(run: Run, orbit: Orbit, a: int, b: int, first: bool) -> torch.Tensor | None:
    """One forward of the orbit; pair metrics and accuracy. Returns the prediction on ``x``
    ``[n]`` (the SI target without labels), or None when the chunk's logits are non-finite.
    Hooked features are left in ``run.feats`` for :func:`features_pass`."""
    with torch.inference_mode():
        logits, run.feats = _forward(run, orbit)
        bad = ~torch.isfinite(logits).all(-1).all(0)
        if bool(bad.any()):
            run.bad_logits[a:b] |= bad.cpu()
            return None
        if first and not run.labels_per_chunk:
            check_label_range(run.labels, logits.shape[-1])
        elif run.labels_per_chunk:
            check_label_range(run.labels[a:b], logits.shape[-1])  # type: ignore[index]
        s = StackedLogits(logits)
        for m in run.plan.pair:
            spec = REGISTRY[m]
            v = spec.stacked(s) if spec.stacked is not None else spec.fn(logits[0], logits[1:])
            run.per[m][a:b].copy_(v.T)
        if run.plan.accuracy:
            acc = REGISTRY["accuracy"].fn
            yb = run.labels[a:b].to(logits.device)  # type: ignore[index]
            run.per["accuracy"][a:b].copy_(acc(logits[1:], yb).T)
            run.per["clean_accuracy"][a:b, 0].copy_(acc(logits[0], yb))
        pred = s.get("argmax")[0]
    return pred.clone()


def features_pass(run: Run, orbit: Orbit, a: int, b: int) -> None:
    """Representation invariance (the score and both distances) and/or B21's equivariance
    alignment per layer, ``[n, k]``: one derangement π per chunk, shared by layers, members
    and both metrics; the alignment's column shuffles are drawn after π from the same
    generator (so adding it leaves representation invariance's values unchanged)."""
    cap = run.capture
    assert cap is not None
    nb, k = b - a, run.k
    feats = dict(run.feats)
    if not run.plan.need_logits and cap.hooked:
        with torch.no_grad():
            feats.update(_forward(run, orbit)[1])
    if cap.uses_forward_features:
        with torch.no_grad():
            feats["penultimate"] = orbit.gather([
                torch.cat([cap.forward_features(sub) for sub in p.split(run.rows)])
                for p in orbit.parts])
    perm = derangement(nb, run.generator, device=orbit.parts[0].device)
    only_default = run.plan.layers == ["penultimate"]
    for layer in run.plan.layers:
        z = feats[layer].reshape(k + 1, nb, -1)
        bad = ~torch.isfinite(z).all(-1).all(0)
        if bool(bad.any()):
            mask = run.bad_features.setdefault(layer, torch.zeros(len(run.bad_logits),
                                                                  dtype=torch.bool))
            mask[a:b] |= bad.cpu()
        if "representation_invariance" in run.plan.names:
            d_same, d_other, score = ri_distances(z[0].expand_as(z[1:]), z[1:], perm,
                                                  run.opts["representation_distance"])
            for key, v in zip(ri_keys(layer, only_default), (score, d_same, d_other)):
                run.per[key][a:b] = v.T.float().cpu()
        if "equivariance_alignment" in run.plan.names:
            zs = z[0].expand_as(z[1:])
            cols = shuffle_columns(zs, run.generator)
            al = equivariance_alignment(zs, z[1:], perm, cols)
            run.per[align_key(layer, only_default)][a:b] = al.T.float().cpu()
    run.feats = {}


def saliency_pass(run: Run, xb: torch.Tensor, a: int, b: int, pred: torch.Tensor | None) -> None:
    """SI of the chunk (integrated gradients of x and all T·x in one stacked computation)."""
    o = run.opts
    target = run.labels[a:b].to(xb.device) if run.labels is not None else pred
    bar = run.progress
    n_rows = (run.k + 1) * (b - a) * o["n_steps"]

    def tick(rows: int) -> None:
        if bar is not None:
            bar.update(rows / n_rows * (b - a) * o["si_share"])

    run.per["saliency_similarity"][a:b] = saliency_similarity(
        run.net, xb, run.transform, run.members, labels=target, n_steps=o["n_steps"],
        method=o["ig_method"], baselines=o["baseline"], ratio=o["saliency_ratio"],
        kernel_size=o["kernel_size"], sigma=o["sigma"], boundary=o["boundary"],
        memory_budget_bytes=o["memory_budget_bytes"], on_chunk=tick,
    ).float().cpu()


def sensitivity_pass(run: Run, xb: torch.Tensor, a: int, b: int) -> None:
    """σ_max of the input-logit Jacobian per sample ``[n, 1]`` (no transform)."""
    run.per["sensitivity"][a:b, 0] = jacobian_spectral_norm(
        run.net, xb, generator=run.generator,
        memory_budget_bytes=run.opts["memory_budget_bytes"]).float().cpu()
