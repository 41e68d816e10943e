"""Model zoos for the generalization study (D22): YAML grids of small MNIST classifiers,
trained per model or stacked (``torch.func``), cached as checkpoints.

Example::

    from invlab.zoo import load_zoo_spec, train_zoo, zoo_data, write_zoo_table
    rows = train_zoo(load_zoo_spec("quick"), zoo_data(), "runs/checkpoints")
    write_zoo_table(rows, "runs/zoo.csv")
"""

from invlab.zoo.augment import augment
from invlab.zoo.spec import AUGMENTS, ZooModel, expand_grid, expand_zoo, load_zoo_spec
from invlab.zoo.trainer import (
    ZooData,
    build_zoo_model,
    checkpoint_path,
    id_accuracy,
    load_zoo_checkpoint,
    train_sequential,
    train_stacked,
    train_zoo,
    verified_metadata,
    write_zoo_table,
    zoo_data,
)

__all__ = [
    "AUGMENTS", "ZooData", "ZooModel", "augment", "build_zoo_model", "checkpoint_path",
    "expand_grid", "expand_zoo", "id_accuracy", "load_zoo_checkpoint", "load_zoo_spec",
    "train_sequential", "train_stacked", "train_zoo", "verified_metadata", "write_zoo_table",
    "zoo_data",
]
