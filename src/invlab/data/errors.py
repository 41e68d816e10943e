"""The data layer's errors (one module every data reader imports; it imports only
:mod:`invlab.errors`)."""

from __future__ import annotations

from invlab.errors import InvlabError

__all__ = ["DataError", "DataMismatchError"]


class DataError(InvlabError, ValueError):
    """A data source is unknown or cannot be found."""


class DataMismatchError(DataError):
    """The data found is not the data a model, cell or checkpoint was built from."""

