"""Steps 3-5 of the method: from N trained students to the teacher's network.

:class:`ExpandAndCluster` reconstructs one hidden layer (``_shallow``);
:class:`LayerwiseExpandAndCluster` reconstructs deep networks layer by layer with retraining
and the A.3 bias filter (``_layerwise``), optionally with re-expansion (``_reexpand``, not in
the paper). Both cluster a layer with ``_layer`` and train stages with ``_stages``; both
report with :class:`Report`.
"""

from ._expansion import Probe, WidthSearch, find_width
from ._layer import LayerClustering, ReconstructionError, reconstruct_layer
from ._layerwise import DEEP_BETA, DEEP_GAMMA, BiasFilter, LayerwiseExpandAndCluster, bias_spread, retrain_and_filter
from ._reexpand import Reexpansion, reexpand_layer
from ._report import Report
from ._shallow import ExpandAndCluster, per_layer
from ._stages import (StudentTraining, fixed_weights_mask, stage_init, stage_seeds, student_seed, sub_student,
                      usable, voters)

__all__ = [
    "DEEP_BETA",
    "DEEP_GAMMA",
    "BiasFilter",
    "ExpandAndCluster",
    "Probe",
    "WidthSearch",
    "find_width",
    "LayerClustering",
    "LayerwiseExpandAndCluster",
    "ReconstructionError",
    "Reexpansion",
    "Report",
    "StudentTraining",
    "bias_spread",
    "fixed_weights_mask",
    "per_layer",
    "reconstruct_layer",
    "reexpand_layer",
    "retrain_and_filter",
    "stage_init",
    "stage_seeds",
    "student_seed",
    "sub_student",
    "usable",
    "voters",
]
