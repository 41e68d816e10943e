"""The orbit engine: evaluate a model on ``{g·x}`` in large stacked batches.

``measure`` streams the images in chunks (memory independent of ``N``); per chunk it builds
the orbit ``[x, g₁·x, …, g_k·x]`` as one batch of ``(k+1)·n`` images, runs one forward pass
under ``torch.inference_mode`` and evaluates every requested output-level metric on the
``[n, K]`` / ``[k, n, K]`` logits (one ``log_softmax``/``softmax`` of the stacked logits
shared by all metrics; same definitions as the functional core). The orbit is written by
``group.act`` into one preallocated buffer reused by every chunk, and the chunk size comes
from a memory budget (large matmuls, ~10⁴ rows), with fixed-size chunks so that peak memory
does not depend on ``N``. Saliency similarity (integrated
gradients over steps × images) and sensitivity (Jacobians) are the only parts that need
gradients. The result is a :class:`Measurement` holding the per-sample, per-element values.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as tF
from torch import nn

from invlab.attribution import DEFAULT_MEMORY_BUDGET, SUPPORTED_METHODS
from invlab.groups import Group, GroupError, create_group
from invlab.metrics.errors import MeasureError
from invlab.metrics.functional import output as out_fn
from invlab.metrics.functional.representation import derangement, representation_invariance
from invlab.metrics.functional.saliency import saliency_similarity
from invlab.metrics.functional.sensitivity import jacobian_spectral_norm

__all__ = [
    "ALIASES",
    "DEFAULT_METRICS",
    "METRICS",
    "Measurement",
    "measure",
    "resolve_metrics",
]

_PAIR: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": out_fn.kl,
    "logit_l2": out_fn.logit_l2,
    "logit_l2_normalized": out_fn.logit_l2_normalized,
    "effective_invariance": out_fn.effective_invariance,
    "agreement": out_fn.agreement,
    "js": out_fn.js,
}

METRICS: dict[str, str] = {
    "accuracy": "argmax f(g·x) == y on the transformed copies (needs labels)",
    "kl": "KL(softmax f(x) || softmax f(g·x)) (DI, M23 eq. 1)",
    "logit_l2": "½‖f(x) − f(g·x)‖² (LI, M23 eq. 2)",
    "logit_l2_normalized": "‖f(x) − f(g·x)‖² / ‖f(x)‖² (M23 §4.4)",
    "effective_invariance": "sqrt(p̂·p̂_t) if the predictions agree else 0 (EI, D22)",
    "agreement": "argmax f(x) == argmax f(g·x) (D22)",
    "js": "Jensen–Shannon divergence, natural log",
    "saliency_similarity": "cos(m(x), g⁻¹·m(g·x)) of integrated-gradient saliency maps (SI, M23)",
    "sensitivity": "σ_max of the input-logit Jacobian per sample (M23 §4.4; no group)",
    "representation_invariance": "1 − d(z, z_t)/d(z, z_t∘π), penultimate features (B21)",
}
"""Metric names accepted by :func:`measure` and one-line descriptions."""

ALIASES: dict[str, str] = {
    "li": "logit_l2",
    "di": "kl",
    "si": "saliency_similarity",
    "ei": "effective_invariance",
    "acc": "accuracy",
    "ri": "representation_invariance",
}
"""Case-insensitive short names."""

DEFAULT_METRICS = ("accuracy", "kl", "logit_l2", "effective_invariance")
"""Used when ``metrics`` is None (``accuracy`` only when labels are given)."""

_TARGET_ROWS = 16384  # rows (images × orbit) per forward pass when batch_size is None;
# the memory budget (a quarter of ``memory_budget_bytes`` for the orbit buffer) usually
# binds first: ≈12.9k rows of 1×36×36 float32 images with the 256 MiB default.
_RI_TARGET_ROWS = 4096  # with representation_invariance: the previous default and chunking,
# so that its per-chunk derangements (hence its values) are unchanged


def resolve_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Canonical metric names from names/aliases (case-insensitive; a comma string is split).

    Raises:
        MeasureError: for an unknown name; the message lists the valid names and aliases.
    """
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",")]
    names: list[str] = []
    for m in metrics:
        key = str(m).strip().lower()
        if not key:
            continue
        key = ALIASES.get(key, key)
        if key not in METRICS:
            raise MeasureError(
                f"unknown metric {m!r}; valid metrics: {', '.join(METRICS)}; aliases: "
                + ", ".join(f"{a.upper()}={c}" for a, c in ALIASES.items())
            )
        if key not in names:
            names.append(key)
    if not names:
        raise MeasureError(f"no metric requested; valid metrics: {', '.join(METRICS)}")
    return names


@dataclass
class Measurement:
    """Per-sample results of :func:`measure`.

    Attributes:
        per_sample: metric → ``[N, k]`` values over the ``k`` group elements used (column
            ``j`` is ``elements[j]``). ``sensitivity`` has no group: ``[N, 1]``.
            ``accuracy`` is the accuracy of the transformed copies ``g·x`` (as the spec
            defines it); the accuracy on the untransformed images is added as
            ``clean_accuracy`` ``[N, 1]`` whenever ``accuracy`` is requested.
        group: group name.
        elements: the ``k`` elements (columns).
        n: number of samples.
        settings: the options used (for the record).
    """

    per_sample: dict[str, torch.Tensor]
    group: str
    elements: list[int]
    n: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(self.per_sample)

    def _get(self, metric: str) -> torch.Tensor:
        key = ALIASES.get(metric.strip().lower(), metric.strip().lower())
        if key not in self.per_sample:
            raise KeyError(f"{metric!r} was not measured; available: {', '.join(self.per_sample)}")
        return self.per_sample[key]

    def sample_means(self, metric: str) -> torch.Tensor:
        """``[N]``: each sample's value averaged over the elements."""
        return self._get(metric).double().mean(1)

    @property
    def summary(self) -> dict[str, float]:
        """metric → mean over samples and elements."""
        return {m: float(v.double().mean()) for m, v in self.per_sample.items()}

    def std(self, metric: str) -> float:
        """Sample standard deviation (ddof=1) of the per-sample means."""
        v = self.sample_means(metric)
        return float(v.std()) if v.numel() > 1 else float("nan")

    def ci(self, metric: str, level: float = 0.95) -> tuple[float, float]:
        r"""Student-t interval for the mean of the per-sample means ``s_i``.

        .. math:: \bar s \pm t_{(1+\ell)/2,\,N-1}\, \mathrm{sd}(s) / \sqrt{N}
        """
        from scipy import stats

        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), found {level}")
        v = self.sample_means(metric)
        n = v.numel()
        mean = float(v.mean())
        if n < 2:
            return (float("nan"), float("nan"))
        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(v.std()) / math.sqrt(n)
        return (mean - half, mean + half)

    def to_frame(self) -> Any:
        """Long-format ``pandas.DataFrame`` with columns ``metric, sample, element, value``
        (``element`` is ``<NA>`` for per-sample-only metrics such as ``sensitivity``)."""
        import numpy as np
        import pandas as pd

        parts = []
        for m, v in self.per_sample.items():
            n, k = v.shape
            if m in _NO_GROUP:
                el = pd.array([pd.NA] * (n * k), dtype="Int64")
            else:
                el = pd.array(np.tile(np.asarray(self.elements, dtype=np.int64), n),
                              dtype="Int64")
            parts.append(pd.DataFrame({
                "metric": m,
                "sample": np.repeat(np.arange(n), k),
                "element": el,
                "value": v.detach().cpu().double().numpy().reshape(-1),
            }))
        return pd.concat(parts, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"metrics": {name: {"mean", "std", "ci95": [lo, hi]}}, "n", "group",
        "elements"}``."""
        metrics = {}
        for m in self.per_sample:
            lo, hi = self.ci(m)
            metrics[m] = {"mean": _num(self.summary[m]), "std": _num(self.std(m)),
                          "ci95": [_num(lo), _num(hi)]}
        return {"metrics": metrics, "n": self.n, "group": self.group,
                "elements": list(self.elements)}

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v:.4g}" for k, v in self.summary.items())
        return f"Measurement(n={self.n}, group={self.group!r}, elements={self.elements}, {s})"


_NO_GROUP = {"sensitivity", "clean_accuracy"}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _expected_shape(model: Any) -> tuple[int, ...] | None:
    for m in (model, getattr(model, "model", None)):
        shape = getattr(m, "in_shape", None)
        if shape is not None:
            try:
                return tuple(int(s) for s in shape)
            except (TypeError, ValueError):
                return None
    return None


def _validate(
    model: Any, images: Any, labels: Any, group: Group, names: list[str],
    elements: Sequence[int] | None, include_identity: bool, batch_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    if not callable(model):
        raise MeasureError(f"model must be callable (an nn.Module), found {type(model).__name__}")
    if not isinstance(images, torch.Tensor):
        raise MeasureError(f"images must be a torch.Tensor [N, C, H, W], found "
                           f"{type(images).__name__}")
    if images.dim() != 4:
        raise MeasureError(
            f"images must be 4-D [N, C, H, W], found shape {tuple(images.shape)}"
            + ("; add a channel dimension with images.unsqueeze(1)" if images.dim() == 3 else "")
        )
    if not images.is_floating_point():
        raise MeasureError(f"images must be floating point (preprocessed like the training "
                           f"data), found dtype {images.dtype}")
    expected = _expected_shape(model)
    if expected is not None and tuple(images.shape[1:]) != expected:
        raise MeasureError(
            f"images have shape [C, H, W] = {list(images.shape[1:])} but the model expects "
            f"{list(expected)}; preprocess (pad/resize, channels) like the training data"
        )
    try:
        group.check_input(images)
    except GroupError as e:
        raise MeasureError(str(e)) from e
    n = images.shape[0]
    if n == 0:
        raise MeasureError("images is empty (N = 0)")
    if elements is None:
        els = list(group.elements if include_identity else group.non_identity)
    else:
        if isinstance(elements, (int, torch.Tensor)) and not isinstance(elements, bool):
            elements = [int(e) for e in torch.as_tensor(elements).reshape(-1).tolist()]
        els = []
        for e in elements:
            try:
                els.append(group.check_element(e))
            except GroupError as err:
                raise MeasureError(str(err)) from err
        if include_identity and group.identity not in els:
            els.insert(0, group.identity)
    needs_group = [m for m in names if m not in _NO_GROUP]
    if needs_group and not els:
        raise MeasureError(f"no group elements to measure {needs_group} over (group "
                           f"{group.name} of order {group.order}, elements={elements})")
    lab = None
    if labels is not None:
        lab = torch.as_tensor(labels)
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise MeasureError(f"labels must be integer class indices, found dtype {lab.dtype}")
        if lab.dim() != 1 or lab.shape[0] != n:
            raise MeasureError(
                f"labels must have shape [N] = [{n}] to match the images, found "
                f"{tuple(lab.shape)}")
        lab = lab.long()
    elif "accuracy" in names:
        raise MeasureError("metric 'accuracy' needs labels; pass labels=[N] or drop it")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise MeasureError(f"batch_size must be a positive int, found {batch_size!r}")
    return images, lab, els


def _param(model: Any) -> torch.Tensor | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p
    return None


def _near_equal_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Near-equal contiguous chunks of at most ``size`` (each ≥ 2 when ``n ≥ 2``).

    Used with ``representation_invariance``, whose derangement is drawn per chunk: this
    keeps its values (for a given ``batch_size`` and ``generator``) as before.
    """
    m = max(1, math.ceil(n / size))
    base, extra = divmod(n, m)
    out, a = [], 0
    for i in range(m):
        b = a + base + (1 if i < extra else 0)
        out.append((a, b))
        a = b
    return out


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Contiguous chunks of ``size`` (the last one shorter), each ≥ 2 when ``n ≥ 2``.

    Fixed-size chunks keep the peak memory of one chunk independent of ``n``.
    """
    size = max(1, size)
    out = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(out) >= 2 and out[-1][1] - out[-1][0] < 2:
        (a0, _), (_, b1) = out[-2], out[-1]
        mid = b1 - (b1 - a0) // 2
        out[-2:] = [(a0, mid), (mid, b1)]
    return out


_FUSED = {"kl", "logit_l2", "effective_invariance", "agreement"}


def _pair_metrics(logits: torch.Tensor, pair: list[str]) -> dict[str, torch.Tensor]:
    """Pair metrics ``[k, n]`` from the stacked logits ``[k+1, n, K]`` (row 0 is ``f(x)``).

    Same formulas as :mod:`invlab.metrics.functional.output`, sharing one ``log_softmax``
    (KL) and one ``softmax`` (EI) over all ``(k+1)·n`` rows instead of one per metric.
    """
    lx, lt = logits[0], logits[1:]
    out: dict[str, torch.Tensor] = {}
    if "kl" in pair:
        logp = tF.log_softmax(logits, dim=-1)
        out["kl"] = (logp[0].exp() * (logp[0] - logp[1:])).sum(-1)
    if "logit_l2" in pair:
        out["logit_l2"] = 0.5 * (lx - lt).pow(2).sum(-1)
    if "effective_invariance" in pair:
        conf, pred = tF.softmax(logits, dim=-1).max(-1)
        ei = torch.sqrt(conf[0] * conf[1:])
        out["effective_invariance"] = torch.where(pred[0] == pred[1:], ei,
                                                  torch.zeros_like(ei))
    if "agreement" in pair:
        am = logits.argmax(-1)
        out["agreement"] = (am[0] == am[1:]).to(logits.dtype)
    for m in pair:
        if m not in _FUSED:
            out[m] = _PAIR[m](lx, lt)
    return out


def measure(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    group: str | Group = "r4",
    metrics: str | Iterable[str] | None = None,
    elements: Sequence[int] | None = None,
    include_identity: bool = False,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    n_steps: int = 50,
    ig_method: str = "gausslegendre",
    baseline: float = 0.0,
    saliency_ratio: float = 0.9,
    kernel_size: int = 3,
    sigma: float = 1.0,
    boundary: str | None = None,
    representation_distance: str = "cosine",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> Measurement:
    r"""Measure a classifier's invariance to a finite group on a set of images.

    For every image ``x`` and element ``g`` in ``elements`` (default: the non-identity
    elements) it evaluates ``f(x)`` once and ``f(g·x)`` for all ``g`` in one stacked batch
    ``[(k+1)·n, C, H, W]`` per chunk of ``n`` images, and computes the requested metrics
    (see :data:`METRICS`; aliases ``LI``, ``DI``, ``SI``, ``EI``):

    - output-level (:mod:`invlab.metrics.functional`): ``accuracy`` (of ``g·x``), ``kl``,
      ``logit_l2``, ``logit_l2_normalized``, ``effective_invariance``, ``agreement``, ``js``;
    - ``saliency_similarity``: ``cos(m(x), g⁻¹·m(g·x))`` with integrated gradients of the
      label's logit (the prediction on ``x`` without labels), ``n_steps`` Gauss–Legendre
      points by default;
    - ``sensitivity``: ``σ_max(∂f/∂x)`` per image (no group; ``[N, 1]``);
    - ``representation_invariance``: B21 on ``model.forward_features`` with a seeded
      derangement π drawn per chunk (so values depend on ``batch_size`` and ``generator``).

    The model is put in eval mode and its training flag restored afterwards; everything
    except saliency and sensitivity runs under ``torch.no_grad``.

    Args:
        model: ``[N, C, H, W] -> [N, K]`` logits (an ``nn.Module``; ``in_shape`` is checked
            when the model has it).
        images: ``[N, C, H, W]`` float, preprocessed like the training data.
        labels: ``[N]`` class indices (needed by ``accuracy``; the SI target when given).
        group: group or name (``r4``, ``t<n>``, ``flip``, ``d4``).
        metrics: names or aliases (list or comma string); default :data:`DEFAULT_METRICS`.
        elements: explicit elements; default non-identity (all with ``include_identity``).
        include_identity: also measure ``g = e``.
        batch_size: images per chunk (each chunk runs ``(k+1)·batch_size`` images at once);
            default ``16384 / (k+1)``, bounded by a quarter of ``memory_budget_bytes``
            for the orbit buffer (``4096 / (k+1)`` and near-equal chunks with
            ``representation_invariance``, whose derangements are drawn per chunk).
        generator: seeds the derangement (representation invariance) and power iteration.
        progress: show a tqdm bar on stderr.
        n_steps, ig_method, baseline: integrated-gradient settings for SI.
        saliency_ratio, kernel_size, sigma, boundary: saliency-map settings for SI
            (``boundary`` defaults to circular for ``t<n>``, symmetric otherwise).
        representation_distance: ``cosine`` or ``l2``.
        memory_budget_bytes: bound for one chunk of gradient computations.

    Returns:
        :class:`Measurement` with ``per_sample[metric]`` of shape ``[N, k]``.

    Raises:
        MeasureError: bad images/labels/elements/metric names, a model that rejects the
            input shape, or non-finite logits (with the number of affected samples).

    Example:
        >>> import torch
        >>> from invlab.models import create_model
        >>> from invlab.metrics import measure
        >>> m = measure(create_model("wt_mlp5"), torch.randn(8, 1, 36, 36), group="r4",
        ...             metrics=["LI", "kl"])
        >>> m.summary["logit_l2"] < 1e-8
        True
    """
    names = resolve_metrics(DEFAULT_METRICS if metrics is None else metrics)
    if metrics is None and labels is None:
        names = [m for m in names if m != "accuracy"]
    if ig_method not in SUPPORTED_METHODS:
        raise MeasureError(f"unknown ig_method {ig_method!r}; valid: {', '.join(SUPPORTED_METHODS)}")
    try:
        g = create_group(group)
    except GroupError as e:
        raise MeasureError(str(e)) from e
    images, lab, els = _validate(model, images, labels, g, names, elements, include_identity,
                                 batch_size)
    if "representation_invariance" in names and not hasattr(model, "forward_features"):
        raise MeasureError("representation_invariance needs model.forward_features")
    n, k = images.shape[0], len(els)
    p = _param(model)
    device = p.device if p is not None else images.device
    dtype = p.dtype if p is not None and p.is_floating_point() else images.dtype
    with_ri = "representation_invariance" in names
    if batch_size is None:
        row_bytes = images[:1].numel() * torch.finfo(dtype).bits // 8
        target = _RI_TARGET_ROWS if with_ri else _TARGET_ROWS
        rows = min(target, max(1, (memory_budget_bytes // 4) // max(row_bytes, 1)))
        batch_size = max(2, rows // (k + 1))
    if with_ri:
        batch_size = max(batch_size, 2)
        if n < 2:
            raise MeasureError("representation_invariance needs at least 2 images")

    pair = [m for m in names if m in _PAIR]
    per: dict[str, torch.Tensor] = {}
    for m in names:
        per[m] = torch.empty(n, 1 if m in _NO_GROUP else k, dtype=torch.float32)
    if "accuracy" in names:
        per["clean_accuracy"] = torch.empty(n, 1, dtype=torch.float32)
    need_logits = bool(pair) or "accuracy" in names or (
        "saliency_similarity" in names and lab is None)
    nonfinite = torch.zeros(n, dtype=torch.bool)

    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", file=sys.stderr, desc=f"measure {g.name}")
    chunks = (_near_equal_chunks if with_ri else _chunks)(n, batch_size)
    use_orbit = need_logits or "representation_invariance" in names
    buf = None
    if use_orbit:
        # one orbit buffer [(k+1)·bs, C, H, W] for all chunks: x, then g·x for each element
        bs = max(bb - aa for aa, bb in chunks)
        buf = torch.empty(((k + 1) * bs, *images.shape[1:]), dtype=dtype, device=device)
    try:
        for ci, (a, b) in enumerate(chunks):
            xb = images[a:b].to(device=device, dtype=dtype)
            nb = b - a
            lx = None
            if use_orbit:
                orbit = buf[:(k + 1) * nb]  # type: ignore[index]
                ov = orbit.view(k + 1, nb, *images.shape[1:])
                with torch.inference_mode():
                    ov[0].copy_(xb)
                    for j, e in enumerate(els):
                        ov[j + 1].copy_(g.act(xb, e))
            if need_logits:
                with torch.inference_mode():
                    try:
                        logits = model(orbit)
                    except RuntimeError as e:
                        raise MeasureError(
                            f"the model failed on images of shape [C, H, W] = "
                            f"{list(images.shape[1:])}"
                            + (f" (model.in_shape = {list(_expected_shape(model) or [])})"
                               if _expected_shape(model) else "")
                            + f": {e}"
                        ) from e
                    if logits.dim() != 2 or logits.shape[0] != orbit.shape[0]:
                        raise MeasureError(
                            f"the model must return logits [N, K]; for {orbit.shape[0]} images "
                            f"it returned shape {tuple(logits.shape)}")
                    logits = logits.view(k + 1, nb, -1)
                    bad = ~torch.isfinite(logits).all(-1).all(0)
                    if bool(bad.any()):
                        nonfinite[a:b] |= bad.cpu()
                        continue
                    if ci == 0 and lab is not None and int(lab.max()) >= logits.shape[-1]:
                        raise MeasureError(
                            f"labels go up to {int(lab.max())} but the model has "
                            f"{logits.shape[-1]} classes")
                    if ci == 0 and lab is not None and int(lab.min()) < 0:
                        raise MeasureError(f"labels must be >= 0, found {int(lab.min())}")
                    for m, v in _pair_metrics(logits, pair).items():
                        per[m][a:b].copy_(v.T)
                    if "accuracy" in names:
                        yb = lab[a:b].to(device)
                        am = logits.argmax(-1)
                        per["accuracy"][a:b].copy_((am[1:] == yb).T)
                        per["clean_accuracy"][a:b, 0].copy_(am[0] == yb)
                    if "saliency_similarity" in names and lab is None:
                        pred = logits[0].argmax(-1)
                if "saliency_similarity" in names and lab is None:
                    lx = pred.clone()  # a normal tensor (the SI target), outside inference mode
            if "representation_invariance" in names:
                with torch.no_grad():
                    z = model.forward_features(orbit)  # type: ignore[union-attr]
                    z = z.reshape(k + 1, nb, -1)
                    perm = derangement(nb, generator, device=z.device)
                    per["representation_invariance"][a:b] = representation_invariance(
                        z[0].expand_as(z[1:]), z[1:], perm=perm,
                        distance=representation_distance).T.float().cpu()
            if "saliency_similarity" in names:
                target = lab[a:b].to(device) if lab is not None else lx
                per["saliency_similarity"][a:b] = saliency_similarity(
                    model, xb, g, els, labels=target, n_steps=n_steps, method=ig_method,
                    baselines=baseline, ratio=saliency_ratio, kernel_size=kernel_size,
                    sigma=sigma, boundary=boundary, memory_budget_bytes=memory_budget_bytes,
                ).float().cpu()
            if "sensitivity" in names:
                per["sensitivity"][a:b, 0] = jacobian_spectral_norm(
                    model, xb, generator=generator, memory_budget_bytes=memory_budget_bytes
                ).float().cpu()
            if bar is not None:
                bar.update(nb)
    finally:
        if bar is not None:
            bar.close()
        if was_training is not None:
            model.train(was_training)  # type: ignore[union-attr]
    n_bad = int(nonfinite.sum())
    if n_bad:
        first = nonfinite.nonzero().flatten()[:5].tolist()
        raise MeasureError(
            f"the model returned NaN/inf logits for {n_bad} of {n} samples (on x or on some "
            f"g·x; first sample indices: {first}); check the inputs' preprocessing and the "
            f"checkpoint")
    settings = {
        "metrics": names, "include_identity": include_identity, "batch_size": batch_size,
        "n_steps": n_steps, "ig_method": ig_method, "baseline": baseline,
        "saliency_ratio": saliency_ratio, "kernel_size": kernel_size, "sigma": sigma,
        "boundary": boundary, "representation_distance": representation_distance,
    }
    return Measurement(per_sample=per, group=g.name, elements=els, n=n, settings=settings)
