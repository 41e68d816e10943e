"""Transformations of pixel-space images ``[N, C, H, W]`` in ``[0, 1]``.

One concept covers exact groups, parametric families and fixed transforms::

    >>> import invlab
    >>> t = invlab.create_transform("rotate:30")      # a fixed Transform: t(images)
    >>> fam = invlab.create_transform("rotate")       # a Family over B21's 10 angles
    >>> fam.magnitudes[:3], fam.at(45).name
    ([0.0, -27.0, 45.0], 'rotate:45')
    >>> invlab.create_transform("r4").is_group        # exact groups are TransformSets
    True

Every :class:`TransformSet` has ``members`` (identity first), ``apply_all(x) -> [k, N, C, H,
W]`` (all members in one batched call), flags ``is_exact`` / ``is_invertible`` /
``is_group``, ``invert_all`` and ``validity_masks`` for invertible ones, and ``require(...)``
for callers that need a property. See ``docs/concepts.md`` (Transformations) for the conventions.
"""

from __future__ import annotations

from invlab.transforms.base import Family, Transform, TransformError, TransformSet
from invlab.transforms.exact import GroupElement
from invlab.transforms.ops import Op, OpFamily, OpTransform
from invlab.transforms.spec import FAMILIES, create_transform, list_transforms, transform_rows

__all__ = [
    "TransformError",
    "TransformSet",
    "Transform",
    "Family",
    "GroupElement",
    "Op",
    "OpTransform",
    "OpFamily",
    "FAMILIES",
    "create_transform",
    "list_transforms",
    "transform_rows",
]
