"""Training: data augmentation (DA), weight-tying (WT), invariance regularization (IR)."""

from invlab.train.loop import TrainConfig, TrainResult, evaluate_accuracy, train
from invlab.train.tune import NuSearch, tune_nu

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_accuracy", "NuSearch", "tune_nu"]
