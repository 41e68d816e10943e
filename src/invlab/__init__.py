"""invlab: measure, train and study invariance in image classifiers.

Quick start::

    import invlab
    model = invlab.create_model("mlp5")
    m = invlab.measure(model, images, labels=labels, transform="r4", metrics=["kl", "logit_l2"])
    print(m.summary)
"""

from __future__ import annotations

from invlab._logging import configure_logging
from invlab._version import __version__
from invlab.checkpoint import load_checkpoint, save_checkpoint
from invlab.errors import InvlabError
from invlab.groups import create_group, list_groups
from invlab.metrics import Measurement, measure
from invlab.models import (
    GroupPooled,
    WeightTied,
    create_model,
    list_models,
    model_factory,
)
from invlab.studies import build_report, list_studies, run_study
from invlab.transforms import create_transform, list_transforms

__all__ = ["__version__", "configure_logging", "create_group", "list_groups", "create_transform",
           "list_transforms", "create_model", "list_models",
           "GroupPooled", "WeightTied", "model_factory", "save_checkpoint", "load_checkpoint", "measure", "Measurement",
           "list_studies", "run_study", "build_report", "InvlabError"]
