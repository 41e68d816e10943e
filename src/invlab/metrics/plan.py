"""Plan one pass over the data from the metrics' declarations (:mod:`invlab.metrics.registry`).

Per chunk the pass builds the orbit once (when any metric needs ``T·x``), runs one forward
for all ``logit_pairs`` metrics (with feature hooks registered only when a layer is
requested), a features pass only when the default layer is ``model.forward_features``,
integrated gradients only for ``saliency_similarity``, Jacobians only for
``sensitivity`` and the family derivative only for ``lie_derivative``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from invlab.metrics.registry import REGISTRY

__all__ = ["Plan", "make_plan"]


@dataclass(frozen=True)
class Plan:
    """What one pass computes.

    Attributes:
        names: the requested metrics (canonical names).
        pair: metrics computed from the orbit logits ``[k+1, n, K]`` alone.
        labelled: metrics of the orbit logits and the labels (``accuracy``; each also gets
            its ``clean_<name>`` on the untransformed images).
        features: a ``features`` metric requested (representation invariance, alignment;
            layers in ``layers``).
        gradients: a ``gradients`` metric requested (saliency similarity; needs an
            invertible transform).
        jacobian: a ``jacobian`` metric requested (sensitivity).
        family_derivative: a ``family_derivative`` metric requested (the Lie derivative;
            needs a continuous family).
        need_logits: the forward pass on the orbit runs (pair metrics, accuracy, the SI
            target without labels, or hooked layers).
        need_orbit: the orbit is built.
        layers: layer names for representation invariance.
    """

    names: list[str]
    pair: list[str] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)
    features: bool = False
    gradients: bool = False
    jacobian: bool = False
    family_derivative: bool = False
    need_logits: bool = False
    need_orbit: bool = False
    layers: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> bool:
        """A labelled metric (``accuracy``) is requested."""
        return bool(self.labelled)

    def having(self, need: str) -> list[str]:
        """The requested metrics that need ``need`` (an entry of
        :data:`~invlab.metrics.registry.NEEDS`), in the order requested."""
        return [m for m in self.names if need in REGISTRY[m].needs]

    @property
    def needs_members(self) -> list[str]:
        """Metrics that need at least one transform member."""
        return [m for m in self.names if REGISTRY[m].per_member]


def make_plan(names: list[str], has_labels: bool, layers: list[str],
              forward_features: bool) -> Plan:
    """The :class:`Plan` for ``names`` (declarations in :data:`REGISTRY`).

    Args:
        names: canonical metric names.
        has_labels: labels were given (SI targets them; else the prediction on ``x``).
        layers: resolved layer names (only used with representation invariance).
        forward_features: the default layer is ``model.forward_features`` (a separate
            forward); every other layer is hooked into the logits forward.
    """
    needs = {m: REGISTRY[m].needs for m in names}
    pair = [m for m in names if needs[m] == {"logit_pairs"}]
    labelled = [m for m in names if needs[m] == {"logit_pairs", "labels"}]
    features = any("features" in v for v in needs.values())
    gradients = any("gradients" in v for v in needs.values())
    jacobian = any("jacobian" in v for v in needs.values())
    family_derivative = any("family_derivative" in v for v in needs.values())
    hooked = features and any(not (s == "penultimate" and forward_features) for s in layers)
    need_logits = bool(pair) or bool(labelled) or (gradients and not has_labels) or hooked
    return Plan(names=names, pair=pair, labelled=labelled, features=features,
                gradients=gradients, jacobian=jacobian,
                family_derivative=family_derivative, need_logits=need_logits,
                need_orbit=need_logits or features, layers=layers if features else [])
