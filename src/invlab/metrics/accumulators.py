"""Stateful shells around the functional metrics: ``update`` / ``compute`` / ``reset``.

Each evaluates its registered formula (``REGISTRY[name].fn``,
:mod:`invlab.metrics.registry`: the function of :mod:`invlab.metrics.functional`, no second
copy) and keeps the per-sample values, so a streamed evaluation gives exactly the functional
result::

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

from invlab.metrics.registry import REGISTRY

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
    concatenates them along samples; ``reset()`` clears the state. ``fn`` defaults to the
    formula registered under ``name`` (the subclasses below only name their metric).
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
        spec = REGISTRY.get(self.name)
        if spec is None:
            raise NotImplementedError(f"{type(self).__name__}: pass fn= or name= a registered "
                                      f"pair metric")
        return spec.fn(logits, logits_t)

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


class JS(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.js`."""

    name = "js"


class LogitL2(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.logit_l2` (LI)."""

    name = "logit_l2"


class LogitL2Normalized(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.logit_l2_normalized`."""

    name = "logit_l2_normalized"


class EffectiveInvariance(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.effective_invariance` (EI)."""

    name = "effective_invariance"


class Agreement(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.agreement`."""

    name = "agreement"


class Accuracy(PairAccumulator):
    """Accumulated :func:`invlab.metrics.functional.accuracy`: ``update(logits, labels)``.

    ``logits`` may be ``[N, K]`` or an orbit ``[k, N, K]`` (per-sample values ``[N, k]``).
    """

    name = "accuracy"
