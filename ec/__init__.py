"""Expand-and-Cluster: recover the weights and layer sizes of a neural network from its
input-output pairs (Martinelli et al., ICML 2024).

The data flow, one subpackage per arrow: teacher (:mod:`ec.teachers`) -> queries
(:mod:`ec.queries`) -> N students (:mod:`ec.train`) -> clusters per layer
(:mod:`ec.cluster`) -> reconstructed network (:mod:`ec.reconstruct`) -> fine-tune
(:mod:`ec.finetune`) -> metrics (:mod:`ec.metrics`) -> run directory (:mod:`ec.runs`).
"""

from .activations import ACTIVATIONS, get_activation
from .metrics import compare, compare_layers, compare_networks
from .mlp import MLPSpec, mse
from .queries import Dataset
from .reconstruct import (BiasFilter, ExpandAndCluster, LayerwiseExpandAndCluster, ReconstructionError, Reexpansion,
                          Report)
from .teachers import Teacher, make_teacher
from .train import Budget, TrainResult, train_students

__version__ = "0.1.0"


def recover(model, out=None, progress=None, **params):
    """Recover a network handed in (torch module, function, query pairs or path): Step 1
    finds the width, Expand-and-Cluster the weights; see :func:`ec.experiments.recover.recover`."""
    from .experiments.recover import recover as _recover

    return _recover(model, out, progress, **params)


__all__ = [
    "ACTIVATIONS",
    "BiasFilter",
    "Budget",
    "Dataset",
    "ExpandAndCluster",
    "LayerwiseExpandAndCluster",
    "MLPSpec",
    "ReconstructionError",
    "Reexpansion",
    "Report",
    "Teacher",
    "TrainResult",
    "compare",
    "compare_layers",
    "compare_networks",
    "get_activation",
    "make_teacher",
    "mse",
    "recover",
    "train_students",
]
