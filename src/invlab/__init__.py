"""invlab: measure, train and study invariance in image classifiers.

Quick start::

    import invlab
    model = invlab.create_model("mlp5")
    m = invlab.measure(model, images, labels=labels, group="r4", metrics=["kl", "logit_l2"])
    print(m.summary)
"""

from __future__ import annotations

import logging
import sys

__version__ = "0.1.0"


def _setup_logging() -> None:
    """invlab reports data provenance and study progress on stderr (INFO) by default."""
    log = logging.getLogger("invlab")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("[invlab] %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


_setup_logging()

from invlab.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from invlab.groups import create_group, list_groups  # noqa: E402
from invlab.metrics import Measurement, measure  # noqa: E402
from invlab.models import (  # noqa: E402
    GroupPooled,
    WeightTied,
    create_model,
    list_models,
    model_factory,
)
from invlab.transforms import create_transform, list_transforms  # noqa: E402

__all__ = ["__version__", "create_group", "list_groups", "create_transform",
           "list_transforms", "create_model", "list_models",
           "GroupPooled", "WeightTied", "model_factory", "save_checkpoint", "load_checkpoint", "measure", "Measurement"]
