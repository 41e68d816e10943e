"""The one place invlab's version is written (pyproject.toml reads it: ``dynamic = ["version"]``)."""

__version__ = "0.2.0"
