"""Stateful shells around the functional metrics: ``update`` / ``compute`` / ``reset``.

They reuse :mod:`invlab.metrics.functional` (no second copy of any formula) and keep the
per-sample values, so a streamed evaluation gives exactly the functional result::

    >>> import torch
    >>> from invlab.metrics.accumulators import KL
    >>> acc = KL()
    >>> a, b = torch.randn(6, 9), torch.randn(6, 9)
    >>> acc.update(a[:4], b[:4]); acc.update(a[4:], b[4:])
    >>> bool(torch.allclose(acc.per_sample(), __import__("invlab.metrics.functional",
    ...      fromlist=["kl"]).kl(a, b)))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invlab.metrics.functional import output as F

__all__ = [
    "JS",
    "KL",
    "Accuracy",
    "Agreement",
    "EffectiveInvariance",
    "LogitL2",
    "LogitL2Normalized",
    "PairAccumulator",
]


class PairAccumulator:
    """Accumulates a pairwise metric ``fn(logits, logits_t)`` over batches.

    ``update(logits [N, K], logits_t [N, K] or [k, N, K])`` stores per-sample values
    ``[N]`` or ``[N, k]``; ``compute()`` is their mean (a 0-d tensor); ``per_sample()``
    concatenates them along samples; ``reset()`` clears the state.
    """

    name = "pair"

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 name: str | None = None) -> None:
        if fn is not None:
            self.fn = fn
        if name is not None:
            self.name = name
        self._values: list[torch.Tensor] = []

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        self._values = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, logits_t: torch.Tensor) -> None:
        """Add a batch: ``logits [N, K]`` against ``logits_t [N, K]`` or ``[k, N, K]``."""
        v = self.fn(logits, logits_t)
        self._values.append((v.T if v.dim() == 2 else v).detach())

    def per_sample(self) -> torch.Tensor:
        """``[N]`` (or ``[N, k]``) values seen since the last reset."""
        if not self._values:
            raise RuntimeError(f"{self.name}: compute() called before update()")
        return torch.cat(self._values)

    def compute(self) -> torch.Tensor:
        """Mean over every accumulated sample (and element)."""
        return self.per_sample().double().mean().to(self._values[0].dtype)


class KL(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.kl` (DI)."""

    name = "kl"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.kl(logits, logits_t)


class JS(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.js`."""

    name = "js"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.js(logits, logits_t)


class LogitL2(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.logit_l2` (LI)."""

    name = "logit_l2"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.logit_l2(logits, logits_t)


class LogitL2Normalized(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.logit_l2_normalized`."""

    name = "logit_l2_normalized"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.logit_l2_normalized(logits, logits_t)


class EffectiveInvariance(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.effective_invariance` (EI)."""

    name = "effective_invariance"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.effective_invariance(logits, logits_t)


class Agreement(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.agreement`."""

    name = "agreement"

    def fn(self, logits: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return F.agreement(logits, logits_t)


class Accuracy(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.accuracy`: ``update(logits, labels)``.

    ``logits`` may be ``[N, K]`` or an orbit ``[k, N, K]`` (per-sample values ``[N, k]``).
    """

    name = "accuracy"

    def fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.accuracy(logits, labels)
