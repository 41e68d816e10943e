"""Output-level invariance metrics on logits (M23 eq. 1–2, M23 §4.4, D22).

Every function is pure and returns one value per sample. Inputs are logits ``[..., K]``;
``logits`` and ``logits_t`` (``f(x)`` and ``f(g·x)``) broadcast against each other, so
``logits [N, K]`` against an orbit ``logits_t [k, N, K]`` gives ``[k, N]`` in one call.
``kl``, ``js``, ``logit_l2`` and ``logit_l2_normalized`` are differentiable and are the
functions the training regularizers use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "accuracy",
    "agreement",
    "effective_invariance",
    "js",
    "kl",
    "logit_l2",
    "logit_l2_normalized",
    "logit_l2_normalized_detached",
]


def _check_pair(name: str, logits: torch.Tensor, logits_t: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(logits_t, torch.Tensor):
        raise TypeError(f"{name}: logits must be tensors")
    if logits.dim() < 1 or logits_t.dim() < 1 or logits.shape[-1] != logits_t.shape[-1]:
        raise ValueError(
            f"{name}: expected logits [..., K] with the same number of classes K; found "
            f"{tuple(logits.shape)} and {tuple(logits_t.shape)}"
        )


def kl(logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    r"""Predictive-distribution invariance error (DI, M23 eq. 1).

    .. math:: \mathrm{KL}(p \,\|\, q) = \sum_k p_k (\log p_k - \log q_k),\quad
        p = \mathrm{softmax} f(x),\ q = \mathrm{softmax} f(g x)

    computed from ``log_softmax`` for stability. Differentiable.

    Args:
        logits: ``f(x)``, ``[..., K]``.
        logits_t: ``f(g·x)``, ``[..., K]`` (broadcastable with ``logits``).

    Returns:
        ``[...]`` (e.g. ``[N]``), in nats, ``≥ 0`` up to float error.
    """
    _check_pair("kl", logits, logits_t)
    logp = F.log_softmax(logits, dim=-1)
    logq = F.log_softmax(logits_t, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def js(logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    r"""Jensen–Shannon divergence (natural log) of the two predictive distributions.

    .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m),
        \quad m = \tfrac12 (p + q)

    Args:
        logits: ``f(x)``, ``[..., K]``.
        logits_t: ``f(g·x)``, ``[..., K]``.

    Returns:
        ``[...]`` in ``[0, ln 2]``.
    """
    _check_pair("js", logits, logits_t)
    logp = F.log_softmax(logits, dim=-1)
    logq = F.log_softmax(logits_t, dim=-1)
    logp, logq = torch.broadcast_tensors(logp, logq)
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    return 0.5 * ((logp.exp() * (logp - logm)).sum(-1) + (logq.exp() * (logq - logm)).sum(-1))


def logit_l2(logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    r"""Logit invariance error (LI, M23 eq. 2): :math:`\tfrac12 \|f(x) - f(g x)\|_2^2`.

    Args:
        logits: ``[..., K]``.
        logits_t: ``[..., K]``.

    Returns:
        ``[...]``. Differentiable.
    """
    _check_pair("logit_l2", logits, logits_t)
    return 0.5 * (logits - logits_t).pow(2).sum(-1)


def logit_l2_normalized(
    logits: torch.Tensor, logits_t: torch.Tensor, eps: float = 1e-12,
    detach_denominator: bool = False,
) -> torch.Tensor:
    r"""Normalized logit invariance error (M23 §4.4).

    .. math:: \frac{\|f(x) - f(g x)\|_2^2}{\max(\|f(x)\|_2^2, \varepsilon)}

    Args:
        logits: ``[..., K]``.
        logits_t: ``[..., K]``.
        eps: floor of the denominator (only matters for all-zero logits).
        detach_denominator: stop the gradient through ``‖f(x)‖²`` (same value; the
            gradient is the numerator's scaled by ``1 / ‖f(x)‖²``, so the loss cannot be
            lowered by inflating the logits). Used by ``logit_l2_normalized_detached``.

    Returns:
        ``[...]``. Differentiable.
    """
    _check_pair("logit_l2_normalized", logits, logits_t)
    num = (logits - logits_t).pow(2).sum(-1)
    den = logits.pow(2).sum(-1).clamp_min(eps)
    return num / (den.detach() if detach_denominator else den)


def logit_l2_normalized_detached(
    logits: torch.Tensor, logits_t: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    r"""Variant of :func:`logit_l2_normalized` with a stop-gradient denominator (not M23's).

    .. math:: \frac{\|f(x) - f(g x)\|_2^2}{\operatorname{sg}(\max(\|f(x)\|_2^2, \varepsilon))}

    Same value as :func:`logit_l2_normalized`; only its gradient differs (no term pushing
    ``‖f(x)‖`` up). A training regularizer for the spectral-decay investigation.

    Returns:
        ``[...]``. Differentiable.
    """
    return logit_l2_normalized(logits, logits_t, eps, detach_denominator=True)


def _top1(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prob = F.softmax(logits, dim=-1)
    conf, pred = prob.max(-1)
    return conf, pred


def effective_invariance(logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    r"""Effective invariance (EI, Deng et al. 2022).

    .. math:: \mathrm{EI} = \sqrt{\hat p\, \hat p_t}\ \text{if}\ \hat y = \hat y_t\
        \text{else}\ 0

    with ``ŷ = argmax softmax f(x)``, ``p̂`` its probability, and ``ŷ_t, p̂_t`` the same for
    ``g·x``. Needs no labels.

    Args:
        logits: ``[..., K]``.
        logits_t: ``[..., K]``.

    Returns:
        ``[...]`` in ``[0, 1]`` (not differentiable through the argmax).
    """
    _check_pair("effective_invariance", logits, logits_t)
    conf, pred = _top1(logits)
    conf_t, pred_t = _top1(logits_t)
    ei = torch.sqrt(conf * conf_t)
    return torch.where(pred == pred_t, ei, torch.zeros_like(ei))


def agreement(logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """Top-1 consistency: ``1.0`` where ``argmax f(x) == argmax f(g·x)``, else ``0.0``.

    Args:
        logits: ``[..., K]``.
        logits_t: ``[..., K]``.

    Returns:
        ``[...]`` float (0/1).
    """
    _check_pair("agreement", logits, logits_t)
    return (logits.argmax(-1) == logits_t.argmax(-1)).to(torch.result_type(logits, logits_t))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness ``argmax f(x) == y`` as float (0/1).

    Args:
        logits: ``[..., N, K]`` (e.g. ``[k, N, K]`` for an orbit).
        labels: ``[N]`` integer class indices (broadcast over leading dims).

    Returns:
        ``[..., N]``.
    """
    if logits.dim() < 1:
        raise ValueError("accuracy: expected logits [..., N, K]")
    labels = torch.as_tensor(labels, device=logits.device)
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"accuracy: labels must be integer class indices, found {labels.dtype}")
    if labels.shape != logits.shape[-2:-1] and logits.dim() >= 2:
        raise ValueError(
            f"accuracy: labels of shape {tuple(labels.shape)} do not match logits "
            f"{tuple(logits.shape)} (expected [{logits.shape[-2]}])"
        )
    out_dtype = logits.dtype if logits.is_floating_point() else torch.float32
    return (logits.argmax(-1) == labels).to(out_dtype)
