"""The orbit engine: evaluate a model on ``{T·x}`` in large stacked batches.

``measure`` resolves the transform (:mod:`invlab.metrics.transform`), plans one pass from the
metrics' declarations (:mod:`invlab.metrics.plan`, :mod:`invlab.metrics.registry`) and
streams the images in chunks (:mod:`invlab.metrics.orbit`; memory independent of ``N``).
Per chunk it builds the orbit ``[x, T₁x, …, T_k x]`` once, runs one forward pass for all
output-level metrics (feature hooks registered only when layers are requested), and runs
integrated gradients / Jacobians only for SI / sensitivity (:mod:`invlab.metrics.passes`).
The result is a :class:`~invlab.metrics.result.Measurement`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from invlab.devices import DeviceError, resolve_device
from invlab.metrics import checks
from invlab.metrics.errors import MeasureError
from invlab.metrics.features import FeatureCapture, resolve_layers
from invlab.metrics.lie import check_in_measure
from invlab.metrics.memory_format import channels_last_convs
from invlab.metrics.options import (
    DEFAULT_N_SI,
    Request,
    check_legacy,
    deprecation_message,
    legacy_settings,
    resolve_request,
)
from invlab.metrics.orbit import Normalized, build_orbit, chunks, near_equal_chunks, normalizer
from invlab.metrics.passes import (
    Run,
    feature_keys,
    features_pass,
    lie_pass,
    logits_pass,
    saliency_pass,
    sensitivity_pass,
)
from invlab.metrics.plan import Plan, make_plan
from invlab.metrics.registry import (
    ALIASES,
    DEFAULT_METRICS,
    METRICS,
    REGISTRY,
    Metric,
    resolve_metrics,
)
from invlab.metrics.result import Measurement
from invlab.metrics.slicing import rows_per_call
from invlab.metrics.source import ImageSource, _finite, image_source
from invlab.metrics.transform import resolve_members, resolve_transform
from invlab.progress import progress_bar

__all__ = ["ALIASES", "DEFAULT_METRICS", "DEFAULT_N_SI", "METRICS", "Measurement", "measure",
           "resolve_metrics"]

_TARGET_ROWS = 16384  # rows (images × orbit) per forward pass when batch_size is None;
# the memory budget (a quarter of ``memory_budget_bytes`` for the orbit buffer) usually
# binds first: ≈12.9k rows of 1×36×36 float32 images with the 256 MiB default.
_RI_TARGET_ROWS = 4096  # with representation_invariance: the previous default and chunking,
# so that its per-chunk derangements (hence its values) are unchanged
_PROGRESS_MIN_WORK = 400_000  # forward-row equivalents above which progress=None shows a bar
_PROBE_MIN_PASSES = 5_000  # forward+backward passes above which a timed probe estimates time

log = logging.getLogger("invlab.metrics")


def _param(model: Any) -> torch.Tensor | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p
    return None


def _resolve(transform: Any, group: Any, names: list[str], members: Any,
             include_identity: bool, images: torch.Tensor) -> tuple[Any, list[Any]]:
    t = resolve_transform(transform, group)
    try:
        t.check_input(images)
        for m in names:
            if "invertible" in REGISTRY[m].needs:
                t.require(invertible=True, purpose=m.replace("_", " "))
    except ValueError as e:
        raise MeasureError(str(e)) from e
    els = resolve_members(t, members, include_identity)
    needs = [m for m in names if REGISTRY[m].per_member]
    if needs and not els:
        raise MeasureError(f"no transform members to measure {needs} over ({t.name}, "
                           f"members={members})")
    return t, els


def _check_derivatives(model: Any, t: Any, images: torch.Tensor, names: list[str],
                       configs: Mapping[str, Metric]) -> None:
    """Up front, for each ``family_derivative`` metric (the Lie derivative): ``t`` is a
    continuous family with valid magnitudes at ``m₀ ± ε`` and its ``layer`` exists."""
    for m in names:
        if "family_derivative" in REGISTRY[m].needs:
            check_in_measure(model, t, images, **configs[m].options())


def _batch_size(batch_size: int | None, images: torch.Tensor, dtype: torch.dtype, k: int,
                plan: Plan, budget: int, n: int) -> int:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise MeasureError(f"batch_size must be a positive int, found {batch_size!r}")
    if batch_size is None:
        row_bytes = images[:1].numel() * torch.finfo(dtype).bits // 8
        target = _RI_TARGET_ROWS if plan.features else _TARGET_ROWS
        rows = min(target, max(1, (budget // 4) // max(row_bytes, 1)))
        batch_size = max(2, rows // (k + 1))
    if plan.features:
        if n < 2:  # a derangement of the chunk's samples needs two of them
            raise MeasureError(f"{' / '.join(plan.having('features'))} need at least 2 images")
        batch_size = max(batch_size, 2)
    return batch_size


def _allocate(plan: Plan, n: int, k: int, n_grad: int | None = None) -> dict[str, torch.Tensor]:
    """NaN-filled outputs: a value never computed cannot pass as a number. SI and
    sensitivity get ``n_grad`` rows (the ``n_si`` subset; default ``n``)."""
    per: dict[str, torch.Tensor] = {}
    for m in plan.names:
        if REGISTRY[m].from_features is not None:
            only_default = plan.layers == ["penultimate"]
            for layer in plan.layers:
                for key in feature_keys(m, layer, only_default).values():
                    per[key] = torch.full((n, k), float("nan"))
        else:
            rows = n if n_grad is None or not _is_grad(m) else n_grad
            per[m] = torch.full((rows, k if REGISTRY[m].per_member else 1), float("nan"))
    for m in plan.labelled:
        per[f"clean_{m}"] = torch.full((n, 1), float("nan"))
    return per


def _is_grad(metric: str) -> bool:
    """Metrics computed from input gradients (SI, sensitivity): capped by ``n_si``
    (derived keys such as ``clean_accuracy`` or ``..._d_same`` are not)."""
    spec = REGISTRY.get(metric)
    return spec is not None and bool(spec.needs & {"gradients", "jacobian"})


def _subset(n: int, n_si: int | None, plan: Plan) -> torch.Tensor | None:
    """Indices of the images SI / sensitivity are computed on: ``n_si`` evenly spaced ones
    (``round(linspace(0, N−1, n_si))``, so class-sorted data is covered end to end), or
    None (all ``N``) when ``n_si`` is None or ``N ≤ n_si`` or neither metric is asked for."""
    if n_si is None or n <= n_si or not (plan.gradients or plan.jacobian):
        return None
    return torch.linspace(0, n - 1, n_si, dtype=torch.float64).round().long()


def _work(plan: Plan, n: int, k: int, n_steps: int,
          n_grad: int | None = None) -> tuple[float, float]:
    """Estimated work in forward-row equivalents and the SI share of a sample's work."""
    ng = n if n_grad is None else n_grad
    base = n * (k + 1) * (1 if plan.need_orbit else 0)
    si = 3.0 * ng * (k + 1) * n_steps if plan.gradients else 0.0
    sens = 30.0 * ng if plan.jacobian else 0.0
    lie = 2.0 * n if plan.family_derivative else 0.0
    total = base + si + sens + lie
    return total, (si / total if total else 0.0)


def _ig_steps(plan: Plan, configs: Mapping[str, Metric]) -> int:
    """Integrated-gradient steps per image and member of the ``gradients`` metrics (their
    ``n_steps`` option; 0 when none is requested)."""
    return max((getattr(configs[m], "n_steps", 1) for m in plan.having("gradients")), default=0)


def _make_bar(progress: bool | None, work: float, desc: str, total: int) -> Any:
    show = progress if progress is not None else work >= _PROGRESS_MIN_WORK
    if not show:
        return None
    # a tqdm bar on a terminal, plain lines with rate and ETA otherwise (invlab.progress)
    return progress_bar(total=total, unit="img", file=sys.stderr, desc=desc,
                        dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]")


def _loop(run: Run, src: ImageSource, bounds: list[tuple[int, int]], device: Any,
          dtype: torch.dtype, sub: torch.Tensor | None = None) -> None:
    """The chunked pass over the streamed images; SI / sensitivity per chunk, or afterwards
    on the ``n_si`` subset ``sub`` (its images kept as they stream by: at most ``n_si``)."""
    plan, k = run.plan, run.k
    preds = None
    if sub is not None and plan.gradients and run.labels is None:
        preds = torch.zeros(src.n, dtype=torch.long)
    kept: list[torch.Tensor] = []  # the subset's images, in index order
    buf = None
    if plan.need_orbit:
        bs = max(bb - aa for aa, bb in bounds)
        buf = torch.empty(((k + 1) * bs, *src.shape[1:]), dtype=dtype, device=device)
    si_share = run.opts["si_share"]
    for ci, (a, b, xc, yc) in enumerate(src.chunks(bounds)):
        if src.kind != "tensor":  # a tensor was checked as a whole up front
            _finite(xc, a, src.n)
        if yc is not None:
            run.labels[a:b] = yc  # type: ignore[index]
        xb = xc.to(device=device, dtype=dtype)
        if sub is not None:
            kept.append(xc[sub[(sub >= a) & (sub < b)] - a])
        pred = orbit = None
        if plan.need_orbit:
            orbit = build_orbit(buf, run.transform, xb, run.members)
        if plan.need_logits:
            pred = logits_pass(run, orbit, a, b, first=ci == 0)
            if pred is None:  # non-finite logits: reported after the loop
                continue
        if plan.features:
            features_pass(run, orbit, a, b)
        if plan.family_derivative:
            lie_pass(run, xb, a, b)
        if run.progress is not None:
            run.progress.update((b - a) * (1 - si_share))
        if preds is not None and pred is not None:
            preds[a:b] = pred.cpu()
        if sub is not None:
            continue
        if plan.gradients:
            saliency_pass(run, xb, a, b, pred)
        if plan.jacobian:
            sensitivity_pass(run, xb, a, b)
    if sub is not None:
        _subset_loop(run, torch.cat(kept), src.n, sub, preds,
                     max(bb - aa for aa, bb in bounds), device, dtype)


def _subset_loop(run: Run, picked: torch.Tensor, n: int, sub: torch.Tensor,
                 preds: torch.Tensor | None, bs: int, device: Any, dtype: torch.dtype) -> None:
    """SI / sensitivity on the subset images ``picked`` (``images[sub]``; rows
    ``0..len(sub)-1`` of their outputs)."""
    ns = len(sub)
    sr = dataclasses.replace(
        run, labels=None if run.labels is None else run.labels[sub],
        opts={**run.opts, "si_share": run.opts["si_share"] * n / ns})
    for a, b in chunks(ns, bs):
        xb = picked[a:b].to(device=device, dtype=dtype)
        pred = None if preds is None else preds[sub[a:b]].to(device)
        if run.plan.gradients:
            saliency_pass(sr, xb, a, b, pred)
        if run.plan.jacobian:
            sensitivity_pass(sr, xb, a, b)


def _finish(run: Run, n: int) -> None:
    n_bad = int(run.bad_logits.sum())
    if n_bad:
        first = run.bad_logits.nonzero().flatten()[:5].tolist()
        raise MeasureError(
            f"the model returned NaN/inf logits for {n_bad} of {n} samples (on x or on some "
            f"T·x; first sample indices: {first}); metrics affected: "
            f"{', '.join(run.plan.names)}; check the inputs' preprocessing and the checkpoint")
    for layer, bad in run.bad_features.items():
        raise MeasureError(
            f"{', '.join(run.plan.having('features'))}: NaN/inf features at layer {layer!r} for "
            f"{int(bad.sum())} of {n} samples (on x or on some T·x; first sample indices: "
            f"{bad.nonzero().flatten()[:5].tolist()}); check the model and the inputs")
    checks.check_finite_results(run.per, n)


def measure(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: Any = None,
    *,
    transform: Any = None,
    metrics: str | Metric | Iterable[str | Metric] | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    normalization: dict[str, Any] | None = None,
    layers: Sequence[str] | str | None = None,
    options: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    device: Any = None,
    **deprecated: Any,
) -> Measurement:
    r"""Measure a classifier's invariance to a transformation on a set of images.

    For every image ``x`` and member ``T`` (a group element, or a magnitude of a family such
    as ``rotate``; default: the non-identity members) it evaluates ``f(x)`` and ``f(T·x)``
    for all ``T`` in one stacked batch ``[(k+1)·n, C, H, W]`` per chunk of ``n`` images and
    computes the requested metrics (:data:`METRICS`; aliases ``LI``, ``DI``, ``SI``, ``EI``,
    ``RI``, ``ALIGN``; ``invlab metrics list`` prints each one's direction, range and
    options):

    - output-level, any transform: ``accuracy`` (of ``T·x``), ``kl``, ``logit_l2``,
      ``logit_l2_normalized``, ``effective_invariance``, ``agreement``, ``js``;
    - ``saliency_similarity`` (invertible transforms only):
      ``cos(M·m(x), M·T⁻¹m(T·x))`` with integrated-gradient saliency maps of the label's
      logit (the prediction on ``x`` without labels) and ``M`` the transform's validity mask;
    - ``sensitivity``: ``σ_max(∂f/∂x)`` per image (no transform; ``[N, 1]``);
    - ``representation_invariance`` (any transform): B21's
      ``1 − d(z, z_T)/d(z, z_T∘π)`` on the penultimate features (``model.forward_features``
      when the model has it, else the input of its last ``nn.Linear``) or on each layer of
      ``layers`` (any submodule name, captured by forward hooks), with a seeded derangement
      π drawn per chunk; the two distances are stored as ``..._d_same`` / ``..._d_other``
      and per-layer keys get ``@<layer>``; summarized by the median (``Measurement.summary``,
      quartiles from ``Measurement.quartiles``), as B21;
    - ``equivariance_alignment`` (any transform): B21's alignment measure of equivariance
      ``cos_dist(b_i, b_π(i)) − cos_dist(d_i, d_π(i))`` with ``d = z − z_T`` and ``b`` = ``d``
      with each feature shuffled over the chunk's samples, on the same features and π as
      representation invariance (median summary);
    - ``lie_derivative`` (a continuous family such as ``rotate``; ``[N, 1]``): the outputs'
      rate of change along the family at its identity, ``‖f(T_{+ε}x) − f(T_{−ε}x)‖₂ / 2ε``
      per unit of magnitude (or Gruver et al.'s forward-mode derivative,
      ``LieDerivative(method="jvp")``), equal to :func:`invlab.metrics.lie_derivative`.

    ``factors_of_variation`` is in the registry too, but it is a dataset-level analysis
    (:func:`invlab.factors.factors_of_variation`): naming it here raises.

    **Options.** Each metric declares its options with their defaults in the registry
    (:mod:`invlab.metrics.registry`): ``saliency_similarity``: ``n_steps=50``,
    ``ig_method="gausslegendre"``, ``baseline=0.0``, ``ratio=0.9``, ``kernel_size=3``,
    ``sigma=1.0``, ``boundary=None``; ``representation_invariance``: ``distance="cosine"``;
    ``lie_derivative``: ``eps=0.01``, ``method="central"``, ``at=None``, ``layer=None``.
    Set them with a configured metric, ``metrics=["kl", SaliencySimilarity(n_steps=8)]``,
    or in ``options``, per metric (``{"saliency_similarity": {"n_steps": 8}}``, a name or
    alias as key) or flat (``{"n_steps": 8}``: every metric declaring it). ``options`` also
    holds the measure-wide options: ``members``, ``include_identity``, ``n_si``,
    ``num_workers``, ``memory_budget_bytes`` (Args below). Precedence: default < flat <
    per metric; a configured metric object must not be contradicted by ``options``. An
    unknown name raises one line listing the valid ones (:mod:`invlab.metrics.options`).

    **Deprecated keywords** (for one release, with a ``DeprecationWarning`` that spells
    the new call; same results bit for bit): ``group=`` (now ``transform=``, which takes
    group names too), ``images=`` (now the positional ``data``), ``members=`` /
    ``elements=``, ``include_identity=``, ``n_si=``, ``num_workers=``,
    ``memory_budget_bytes=`` (now ``options={...}``), ``n_steps=``, ``ig_method=``,
    ``baseline=``, ``saliency_ratio=`` (now ``ratio``), ``kernel_size=``, ``sigma=``,
    ``boundary=`` (now ``options={"saliency_similarity": {...}}``) and
    ``representation_distance=`` (now ``options={"representation_invariance":
    {"distance": ...}}``).

    **Pixel space.** With ``normalization={"mean": [...], "std": [...]}`` the images are
    pixel-space (e.g. in [0, 1]): transforms act on them and the normalization is applied
    before the model (gradients, hence SI and sensitivity, are then w.r.t. pixel-space
    inputs, and the IG baseline ``0`` is a black image). Without it the images go to the
    model as they are; exact groups commute with per-channel normalization, so this is
    exact for them, while for other transforms the images are assumed to be the model's
    pixel-space input (a rotation fills with 0 in whatever space the images are).

    The model is put in eval mode and its training flag restored afterwards; everything
    except saliency and sensitivity runs without autograd.

    **Data larger than memory.** ``data`` may be a tensor, a map-style
    ``torch.utils.data.Dataset`` yielding ``image [C, H, W]`` or ``(image, label)`` (e.g.
    :func:`invlab.data.open_images`), or a ``DataLoader`` yielding ``[B, C, H, W]`` batches
    or ``(images, labels)`` in any batch size. It is read chunk by chunk
    (:mod:`invlab.metrics.source`), so peak memory is one chunk's orbit whatever ``N``; the
    per-sample values are bit-identical to those of the equal tensor.

    **Device.** The model runs where its parameters are (``device=None``), or on ``device``
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"`` or a ``torch.device``): the
    model is moved there for the measurement and moved back afterwards; chunks are moved
    one at a time; per-sample results are on the CPU.

    Args:
        model: ``[N, C, H, W] -> [N, K]`` floating-point logits (an ``nn.Module``;
            ``in_shape`` is checked when the model has it).
        data: ``[N, C, H, W]`` float tensor, a Dataset or a DataLoader (above):
            preprocessed like the training data, or pixel-space with ``normalization``.
        transform: any transform spec (``"r4"``, ``"rotate:30"``, ``"rotate"`` for the whole
            family, ...) or object; default ``"r4"``.
        metrics: names or aliases (a list, or a comma string) and/or configured metrics
            (:class:`~invlab.metrics.registry.SaliencySimilarity` ``(n_steps=8)``, ...);
            default :data:`DEFAULT_METRICS` (``accuracy`` only when there are labels).
        labels: ``[N]`` class indices (needed by ``accuracy``; the SI target when given).
            Default: the data's own labels (``dataset.labels`` or the ``(image, label)``
            pairs); unlabelled data with a metric that needs labels raises.
        normalization: per-channel ``mean``/``std`` applied after the transforms.
        layers: layer names for representation invariance (default the penultimate).
        options: the metrics' options (above) and the measure-wide ones:
            ``members`` — explicit members (elements or magnitudes);
            ``include_identity`` — also measure the identity member (default False);
            ``n_si`` — the number of images SI and ``sensitivity`` are computed on
            (default 100, as ``invlab audit --n-si``): with ``N > n_si`` they run on
            ``n_si`` evenly spaced images (``round(linspace(0, N−1, n_si))``), their
            ``per_sample`` values are ``[n_si, k]`` and ``Measurement.indices[metric]``
            holds the images' indices; None computes them on all ``N``; the other metrics
            always use all ``N``; before SI / sensitivity start, one log line states the
            cost and a time estimate from a timed probe;
            ``num_workers`` — DataLoader workers decoding a Dataset's images (default 0);
            ``memory_budget_bytes`` — bound for one chunk of gradient computations
            (default 256 MiB).
        batch_size: images per chunk (each chunk runs ``(k+1)·batch_size`` images at once);
            default ``16384 / (k+1)``, bounded by a quarter of ``memory_budget_bytes``
            for the orbit buffer (``4096 / (k+1)`` and near-equal chunks with
            ``representation_invariance``, whose derangements are drawn per chunk).
        generator: seeds the derangement (representation invariance) and power iteration.
        progress: progress on stderr (a tqdm bar on a terminal, else log lines with rate
            and ETA: :func:`invlab.progress.progress_bar`); None (default) shows it for
            long measurements (SI, sensitivity or large orbits); False never.
        device: where to run the model (above); None = where its parameters are.
        **deprecated: the keywords listed above, for one release.

    Returns:
        :class:`Measurement` with ``per_sample[metric]`` of shape ``[N, k]`` (columns = the
        members; for a family, its magnitudes: see ``by_member`` and ``to_frame``);
        ``settings`` records the options used (``settings["options"]``: each requested
        metric's).

    Raises:
        MeasureError: bad images/labels/members/metric or option names/layers, a transform
            lacking what a metric needs (SI: invertible), a model that rejects the input
            shape or returns non-float logits, and NaN/inf anywhere (images, weights, logits,
            features, gradients, Jacobians), naming the metric and the number of samples.
        TypeError: a keyword that is neither a parameter nor a deprecated one.

    Example:
        >>> import torch
        >>> from invlab.models import create_model
        >>> from invlab.metrics import SaliencySimilarity, measure
        >>> m = measure(create_model("wt_mlp5"), torch.randn(8, 1, 36, 36), transform="r4",
        ...             metrics=["LI", "kl"])
        >>> m.summary["logit_l2"] < 1e-8
        True
        >>> m = measure(create_model("wt_mlp5"), torch.randn(4, 1, 36, 36), transform="r4",
        ...             metrics=[SaliencySimilarity(n_steps=4)], options={"n_si": None})
        >>> tuple(m.per_sample["saliency_similarity"].shape)
        (4, 3)
    """
    data, group, legacy = _fold_deprecated(data, deprecated)
    call = _Call(model, data, transform, group, labels, normalization, layers,
                 resolve_request(metrics, options, legacy), batch_size, generator, progress)
    if device is None:
        return _measure(call, None)
    try:
        target = resolve_device(device, where="device")
    except DeviceError as e:
        raise MeasureError(str(e)) from e
    p = _param(model)
    if p is None or p.device == target:
        return _measure(call, target)
    home = p.device
    model.to(target)  # type: ignore[union-attr]
    try:
        return _measure(call, target)
    finally:
        model.to(home)  # type: ignore[union-attr]


@dataclass
class _Call:
    """The arguments of one ``measure`` call, the deprecated ones folded in."""

    model: Any
    data: Any
    transform: Any
    group: Any  # the deprecated group= (group names only, as before)
    labels: Any
    normalization: Any
    layers: Any
    request: Request
    batch_size: int | None
    generator: torch.Generator | None
    progress: bool | None


def _fold_deprecated(data: Any, deprecated: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(data, group, legacy)``: the deprecated ``images=`` / ``group=`` taken out of
    ``deprecated`` and the rest (:data:`~invlab.metrics.options.LEGACY`, ``elements=``
    folded into ``members``), after one ``DeprecationWarning`` that spells the new call."""
    legacy = dict(deprecated)
    renamed: dict[str, tuple[str, Any]] = {}
    group = legacy.pop("group", None)
    if "group" in deprecated:
        renamed["group"] = ("transform", group)
    if "images" in legacy:
        if data is not None:
            raise MeasureError("pass the images once: as the positional data argument (images= "
                               "is its deprecated name)")
        data = legacy.pop("images")
        renamed["images"] = ("data", _Raw("<the images, positionally>"))
    if "elements" in legacy:  # members= wins, as before
        elements = legacy.pop("elements")
        if legacy.get("members") is None:
            legacy["members"] = elements
    check_legacy(legacy)
    if data is None:
        raise MeasureError("measure() needs data: the images [N, C, H, W], a Dataset or a "
                           "DataLoader, as its second argument")
    if deprecated:  # stacklevel: the caller of measure()
        warnings.warn(deprecation_message(list(deprecated), legacy, renamed), DeprecationWarning,
                      stacklevel=3)
    return data, group, legacy


class _Raw(str):
    """A placeholder printed as is in the deprecation message."""

    def __repr__(self) -> str:
        return str(self)


def _measure(call: _Call, run_device: torch.device | None) -> Measurement:
    model, req = call.model, call.request
    if not callable(model):
        raise MeasureError(f"model must be callable (an nn.Module), found {type(model).__name__}")
    images = call.data
    if isinstance(images, torch.Tensor):
        images = checks.check_images(model, images)  # messages name the whole tensor's shape
    src = image_source(images, call.labels, req.common.num_workers)
    names = req.metrics
    if req.default_metrics and not src.labelled:
        names = [m for m in names if "labels" not in REGISTRY[m].needs]
    head = checks.check_images(model, src.head)
    t, els = _resolve(call.transform, call.group, names, req.common.members,
                      req.common.include_identity, head)
    _check_derivatives(model, t, head, names, req.configs)
    if src.streams_labels:
        lab: torch.Tensor | None = torch.zeros(src.n, dtype=torch.long)  # filled per chunk
    else:
        try:
            lab = checks.check_labels(src.labels, src.n, names)
        except MeasureError as e:
            if src.kind == "tensor" or src.labels is not None:
                raise
            raise MeasureError(f"the {src.kind} yields images without labels: {e}") from e
    if src.kind == "tensor":
        checks.check_finite_images(images)
    checks.check_finite_weights(model, names, src.n)
    p = _param(model)
    device = p.device if p is not None else (run_device or head.device)
    dtype = p.dtype if p is not None and p.is_floating_point() else head.dtype
    norm = normalizer(call.normalization, head.shape[1], dtype, device)
    net = model if norm is None else Normalized(model, *norm)
    with channels_last_convs(model, net, head[:2].to(device, dtype)):
        m = _measure_run(call, net, src, t, els, lab, norm, names, device, dtype)
    m.settings["device"] = str(device)
    return m


def _measure_run(call: _Call, net: Any, src: ImageSource, t: Any, els: list[Any],
                 lab: torch.Tensor | None, norm: Any, names: list[str], device: torch.device,
                 dtype: torch.dtype) -> Measurement:
    model, req = call.model, call.request
    n, k = src.n, len(els)
    head = src.head
    feats = any("features" in REGISTRY[m].needs for m in names)
    lays = resolve_layers(model, call.layers) if feats else []
    plan = make_plan(names, lab is not None, lays, hasattr(model, "forward_features"))
    budget = req.common.memory_budget_bytes
    bs = _batch_size(call.batch_size, head, dtype, k, plan, budget, n)
    sub = _subset(n, req.common.n_si, plan)
    n_grad = n if sub is None else len(sub)
    steps = _ig_steps(plan, req.configs)
    opts: dict[str, Any] = {"memory_budget_bytes": budget, "n_si": req.common.n_si}
    work, opts["si_share"] = _work(plan, n, k, steps, n_grad)
    capture = None
    if plan.features:
        capture = FeatureCapture(model, lays, pre=norm and net.normalize)  # type: ignore[arg-type]
    run = Run(net=net, model=model, transform=t, members=els, plan=plan,
              per=_allocate(plan, n, k, n_grad), labels=lab, capture=capture,
              generator=call.generator, opts=opts,
              configs={m: req.configs[m] for m in names}, image_shape=tuple(head.shape[1:]),
              bad_logits=torch.zeros(n, dtype=torch.bool),
              rows=rows_per_call(model, net, head[:1].to(device, dtype), bs * (k + 1)),
              labels_per_chunk=src.streams_labels)
    bounds = (near_equal_chunks if plan.features else chunks)(n, bs)
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    if plan.gradients or plan.jacobian:
        log.info(_cost_line(run, head, n, n_grad, device, dtype))
    run.progress = _make_bar(call.progress, work, f"measure {t.name}", n)
    try:
        _loop(run, src, bounds, device, dtype, sub)
    finally:
        if run.progress is not None:
            run.progress.close()
        if was_training is not None:
            model.train(was_training)  # type: ignore[union-attr]
    _finish(run, n)
    settings = {"metrics": names, "include_identity": req.common.include_identity,
                "batch_size": bs, "layers": lays, "normalization": call.normalization,
                **legacy_settings(req),
                "options": {m: c.options() for m, c in run.configs.items() if c.options()}}
    idx = {} if sub is None else {m: sub for m in run.per if _is_grad(m)}
    return Measurement(per_sample=run.per, group=t.name, elements=els, n=n,
                       settings=settings, kind=getattr(t, "kind", "group"), indices=idx)


def _probe(run: Run, images: torch.Tensor, device: Any, dtype: torch.dtype,
           timed: bool) -> tuple[int | None, float | None]:
    """The number of classes and (``timed``) the seconds per forward+backward row: the
    second of two passes on 256 rows (the first 32 images repeated; integrated gradients
    run in batches at least that large), gradients w.r.t. the input only (no parameter
    ``.grad`` is touched). ``(None, None)`` when it fails: the estimate is best effort and
    the measurement itself reports errors."""
    x = images[:32 if timed else 1].to(device=device, dtype=dtype).detach()
    if timed:
        x = x.repeat(-(-256 // x.shape[0]), *([1] * (x.dim() - 1)))[:256]
    try:
        sec = None
        for _ in range(2 if timed else 1):
            t0 = time.perf_counter()
            with torch.enable_grad():
                xi = x.clone().requires_grad_(True)
                out = run.net(xi)
                if timed:
                    torch.autograd.grad(out.max(-1).values.sum(), xi)
            sec = (time.perf_counter() - t0) / x.shape[0] if timed else None
        return int(out.shape[-1]), sec
    except Exception:  # noqa: BLE001 - a probe never stops a measurement
        return None, None


def _duration(s: float) -> str:
    """``40 s``, ``3.5 min``, ``2.1 h``."""
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


def _cost_line(run: Run, images: torch.Tensor, n: int, n_grad: int, device: Any,
               dtype: torch.dtype) -> str:
    """One line: what SI / sensitivity will cost (passes, and time from a timed probe)."""
    k, o = run.k, run.opts
    capped = (f"{n_grad} of {n} images (n_si={o['n_si']}; n_si=None for all)"
              if n_grad < n else f"all {n} images")
    parts, passes = [], 0
    steps = _ig_steps(run.plan, run.configs)
    si = n_grad * (k + 1) * steps if run.plan.gradients else 0
    n_cls, sec = _probe(run, images, device, dtype, timed=si + 10 * n_grad >= _PROBE_MIN_PASSES)
    if run.plan.gradients:
        passes += si
        parts.append(f"SI: {n_grad} images × {k + 1} (x and {k} members) × {steps} IG "
                     f"steps = {si:,} forward+backward passes")
    if run.plan.jacobian:
        per = (n_cls if n_cls <= 32 else 200) if n_cls else 10
        passes += n_grad * per
        parts.append(f"sensitivity: {n_grad} images × {per} passes (one backward per class; "
                     f"200 power-iteration passes beyond 32 classes) = {n_grad * per:,}")
    line = f"measure {run.transform.name}: SI/sensitivity on {capped}; " + "; ".join(parts)
    if sec is not None:
        line += f"; ≈{_duration(passes * sec)} from a timed probe"
    return line
