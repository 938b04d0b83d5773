"""Expand-and-Cluster: recover the weights and layer sizes of a neural network from its
input-output pairs (Martinelli et al., ICML 2024)."""

from .activations import ACTIVATIONS, get_activation
from .mlp import MLPSpec, mse
from .reconstruct import ExpandAndCluster
from .teachers import Dataset, Teacher, make_teacher
from .train import Budget, TrainResult, train_students

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Budget",
    "Dataset",
    "ExpandAndCluster",
    "MLPSpec",
    "Teacher",
    "TrainResult",
    "get_activation",
    "make_teacher",
    "mse",
    "train_students",
]
