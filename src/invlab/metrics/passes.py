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
from invlab.metrics.functional.representation import derangement
from invlab.metrics.lie import check_family, lie_forward
from invlab.metrics.orbit import Orbit
from invlab.metrics.plan import Plan
from invlab.metrics.registry import REGISTRY, Metric, StackedLogits
from invlab.metrics.slicing import MAX_ROWS

__all__ = ["Run", "feature_keys", "features_pass", "lie_pass", "logits_pass", "saliency_pass",
           "sensitivity_pass"]


@dataclass
class Run:
    """Everything a pass needs: the (normalizing) model, transform, members and outputs.

    ``configs`` holds the requested metrics' configured options (:class:`Metric`);
    ``opts`` the measure-wide ones a pass reads (``memory_budget_bytes``, ``n_si``) and
    ``si_share``, the gradient passes' share of the progress bar.
    """

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
    configs: dict[str, Metric]
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


def feature_keys(metric: str, layer: str, default_only: bool) -> dict[str, str]:
    """``per_sample`` keys of a ``features`` metric for ``layer``, by suffix: its score
    (``""``) and its derived values (``MetricSpec.derived``; representation invariance:
    ``_d_same``, ``_d_other``), each with ``@<layer>`` unless only the default layer is
    measured."""
    at = "" if default_only else f"@{layer}"
    return {sfx: f"{metric}{sfx}{at}" for sfx in ("", *REGISTRY[metric].derived)}


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
        for m in run.plan.labelled:  # accuracy of T·x, and of x as clean_<name>
            fn = REGISTRY[m].fn
            yb = run.labels[a:b].to(logits.device)  # type: ignore[index]
            run.per[m][a:b].copy_(fn(logits[1:], yb).T)
            run.per[f"clean_{m}"][a:b, 0].copy_(fn(logits[0], yb))
        pred = s.get("argmax")[0]
    return pred.clone()


def features_pass(run: Run, orbit: Orbit, a: int, b: int) -> None:
    """The ``features`` metrics per layer, ``[n, k]`` (``MetricSpec.from_features``:
    representation invariance, its score and both distances; B21's equivariance
    alignment): one derangement π per chunk, shared by layers, members and metrics; the
    alignment's column shuffles are drawn after π from the same generator (so adding it
    leaves representation invariance's values unchanged)."""
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
        for m in run.plan.having("features"):
            vals = REGISTRY[m].from_features(  # type: ignore[misc]
                z[0].expand_as(z[1:]), z[1:], perm, run.generator, run.configs[m])
            keys = feature_keys(m, layer, only_default)
            for sfx, v in vals.items():
                run.per[keys[sfx]][a:b] = v.T.float().cpu()
    run.feats = {}


def saliency_pass(run: Run, xb: torch.Tensor, a: int, b: int, pred: torch.Tensor | None) -> None:
    """The ``gradients`` metrics of the chunk (SI: integrated gradients of x and all T·x in
    one stacked computation), called with their configured options
    (``Metric.call_kwargs``)."""
    o = run.opts
    target = run.labels[a:b].to(xb.device) if run.labels is not None else pred
    bar = run.progress
    for m in run.plan.having("gradients"):
        kw = run.configs[m].call_kwargs()
        n_rows = (run.k + 1) * (b - a) * kw.get("n_steps", 1)

        def tick(rows: int, n_rows: int = n_rows) -> None:
            if bar is not None:
                bar.update(rows / n_rows * (b - a) * o["si_share"])

        run.per[m][a:b] = REGISTRY[m].fn(
            run.net, xb, run.transform, run.members, labels=target,
            memory_budget_bytes=o["memory_budget_bytes"], on_chunk=tick, **kw,
        ).float().cpu()


def sensitivity_pass(run: Run, xb: torch.Tensor, a: int, b: int) -> None:
    """The ``jacobian`` metrics per sample ``[n, 1]`` (σ_max of the input-logit Jacobian;
    no transform)."""
    for m in run.plan.having("jacobian"):
        run.per[m][a:b, 0] = REGISTRY[m].fn(
            run.net, xb, generator=run.generator,
            memory_budget_bytes=run.opts["memory_budget_bytes"],
            **run.configs[m].call_kwargs()).float().cpu()


def lie_pass(run: Run, xb: torch.Tensor, a: int, b: int) -> None:
    """The ``family_derivative`` metrics per sample ``[n, 1]`` (the Lie derivative along the
    family at ``m₀``: ``MetricSpec.fn`` with the configured ``eps`` / ``method``; ``at``
    gives ``m₀``, ``layer`` the differentiated output), in model calls of at most
    ``run.rows`` images (the central difference evaluates two copies of each)."""
    step = max(1, run.rows // 2)
    for m in run.plan.having("family_derivative"):
        cfg = run.configs[m]
        forward = lie_forward(run.net, run.model, cfg.layer)  # type: ignore[attr-defined]
        _, m0 = check_family(run.transform, cfg.at)  # type: ignore[attr-defined]
        for s in range(0, b - a, step):
            v = REGISTRY[m].fn(forward, run.transform, xb[s:s + step], m0, **cfg.call_kwargs())
            run.per[m][a + s:a + s + v.shape[0], 0] = v.float().cpu()
