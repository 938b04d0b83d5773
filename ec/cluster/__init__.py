"""Clustering student neurons into teacher neurons (paper section 5 step 3, appendix A.3).

Pipeline for one hidden layer of N students:

1. :class:`NeuronTable` stacks every student's neurons; features are ``[w; b]``
   (directions for positive-scaling activations).
2. :func:`cluster_neurons`: average-linkage clustering on the Euclidean distance (cosine
   for positive scaling), taken up to the sign of the vectors for odd / even+linear
   activations (the canonical sign alignment done pairwise, see
   :func:`pairwise_distances`); the dendrogram cut that maximises the number of clusters
   with neurons of at least ``ceil(gamma N)`` distinct students and a median
   within-cluster angle of at most ``beta`` (``cut="size"``: the paper's count of big
   clusters only; :func:`choose_cut` documents the tie-break); big clusters whose median
   angle exceeds ``beta`` are dropped.
3. :func:`collapse`: winner-take-all from the lowest-loss student of each cluster;
   :func:`prune_inactive` folds neurons that are constant over the data into the bias.
4. :func:`correct_affine`: least-squares output bias, and for even+linear activations the
   affine skip ``Theta x`` and the sign flips that cancel it.

:func:`canonicalise` and :func:`flip` implement the function-preserving symmetries
themselves (sign flips with their affine compensation, positive rescaling).
"""

from ..activations import get_activation
from ._canonical import FlipRule, Layer, NeuronTable, canonicalise, flip, flip_rule, normalise_scale
from ._collapse import angles_to, best_flips, collapse, correct_affine, fit_affine, prune_inactive
from ._hierarchy import (
    LayerClusters,
    average_linkage,
    big_cluster_counts,
    aligned_nodes,
    choose_cut,
    cluster_counts,
    cluster_neurons,
    labels_after,
    median_angle,
    min_cluster_size,
    node_support,
    pairwise_angles,
    pairwise_distances,
)

__all__ = [
    "FlipRule",
    "Layer",
    "LayerClusters",
    "NeuronTable",
    "aligned_nodes",
    "angles_to",
    "average_linkage",
    "best_flips",
    "big_cluster_counts",
    "canonicalise",
    "choose_cut",
    "cluster_counts",
    "cluster_layer",
    "cluster_neurons",
    "collapse",
    "correct_affine",
    "fit_affine",
    "flip",
    "flip_rule",
    "labels_after",
    "median_angle",
    "min_cluster_size",
    "node_support",
    "normalise_scale",
    "pairwise_angles",
    "pairwise_distances",
    "prune_inactive",
]


def cluster_layer(table: NeuronTable, activation, gamma: float, beta: float, feature_mask=None,
                  cut: str = "aligned", lowest: bool = False) -> LayerClusters:
    """Cluster the neurons of a :class:`NeuronTable` with the metric its activation needs.

    Parameters
    ----------
    table : NeuronTable
    activation : str or Activation
    gamma : float in (0, 1]
    beta : float
        Radians.
    feature_mask : ndarray of bool, shape (d,), optional
        Input dimensions used for the features and angles (informative inputs only).
    cut : {"aligned", "size"}
        Cut criterion, see :func:`cluster_neurons`.
    lowest : bool
        The lowest of the cuts that maximise it (see :func:`cluster_neurons`).
    """
    act = get_activation(activation)
    F, Wm = table.features(act, feature_mask)
    return cluster_neurons(
        F,
        Wm,
        n_students=len(table.losses),
        gamma=gamma,
        beta=beta,
        metric="cosine" if act.positive_scaling else "euclidean",
        sign_invariant=act.sign_symmetric,
        cut=cut,
        groups=table.student,
        lowest=lowest,
    )
