"""One hidden layer from N students (paper section 5, steps 3-4; appendix A.3): cluster the
layer's neurons over the students, collapse each kept cluster winner-take-all, remove
constant-type neurons, fix the outgoing bias and (even+linear activations) the affine
correction by least squares."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..cluster import Layer, LayerClusters, NeuronTable, cluster_layer, collapse, correct_affine, prune_inactive
from ..train import TrainResult

Array = np.ndarray


class ReconstructionError(RuntimeError):
    """Nothing could be reconstructed (no usable student, or no cluster survived)."""


@dataclass(frozen=True)
class LayerClustering:
    """How one hidden layer's neurons are clustered: its gamma and beta (radians), the cut
    criterion and the inputs compared (``feature_mask``; None: all)."""

    gamma: float
    beta: float
    cut: str = "aligned"
    feature_mask: Array | None = None


def reconstruct_layer(students: list[TrainResult], X: Array, y: Array, activation: str, gamma: float,
                      beta: float, feature_mask: Array | None, cut: str,
                      unanimous: bool = False) -> tuple[Layer, LayerClusters, dict]:
    """Cluster, collapse and correct one hidden layer.

    Parameters
    ----------
    students : list of TrainResult
        One-hidden-layer students (or sub-students: one layer of deep students with its
        outgoing weights, :func:`ec.reconstruct._stages.sub_student`).
    X : ndarray of float64, shape (n_samples, layer inputs)
        The layer's inputs (for the first layer: the network inputs).
    y : ndarray of float64, shape (n_samples, n_targets)
        What the layer's outgoing weights must reproduce (last layer: the network outputs).
    activation : str
    gamma, beta : float
        This layer's cluster-size fraction and median-angle limit (radians).
    feature_mask : ndarray of bool or None
        Inputs used for clustering.
    cut : {"aligned", "size"}
    unanimous : bool
        The students are a near-best group (:func:`ec.reconstruct.voters`): a cluster needs
        a neuron of every one of them (``gamma`` is ignored), cut as low as that allows.

    Returns
    -------
    layer : Layer
    clusters : LayerClusters
    info : dict
        JSON-friendly clustering and collapse details; ``near_misses`` (:func:`near_misses`).

    Raises
    ------
    ReconstructionError
        No cluster survived, or every kept cluster is a constant-type neuron.
    """
    table = NeuronTable.from_students(students)
    clusters = cluster_layer(table, activation, 1.0 if unanimous else gamma, beta, feature_mask, cut, lowest=unanimous)
    if clusters.n_kept == 0:
        raise ReconstructionError(
            f"no cluster of aligned neurons from >= {clusters.min_size} students "
            f"({'every one of the near-best group' if unanimous else f'gamma={gamma}'}, "
            f"beta={beta:.4g}): the students do not agree on any neuron"
        )
    layer, winners = collapse(table, clusters, activation, feature_mask)
    layer, pruned = prune_inactive(layer, X, activation)
    if len(layer.b) == 0:
        raise ReconstructionError("every kept cluster is a constant- or zero-type neuron")
    layer, affine = correct_affine(layer, X, y, activation)
    clusters = replace(clusters, info={**clusters.info, "collapse": winners, "pruned": pruned, "affine": affine})
    labels, reasons = clusters.labels, list(clusters.rejected.values())
    info = {
        "near_misses": near_misses(table, clusters),
        "n_neurons": int(len(labels)),
        "n_clusters": int(len(np.unique(labels))),
        "n_big": clusters.info["n_big"],
        "kept": len(clusters.kept),
        "rejected_small": reasons.count("small"),
        "rejected_unaligned": reasons.count("unaligned"),
        "merged": clusters.info["merged"],
        "min_size": clusters.min_size,
        "cut": cut,
        "cut_height": clusters.cut_height,
        "metric": clusters.metric,
        "sign_invariant": clusters.sign_invariant,
        "collapse": winners,
        "pruned": pruned,
        "affine": affine,
    }
    return layer, clusters, info


NEAR_MISS_SLACK = 2


def near_misses(table: NeuronTable, clusters: LayerClusters, slack: int = NEAR_MISS_SLACK) -> list[int]:
    """Supports (distinct students) of the clusters rejected as too small that miss
    ``ceil(gamma N)`` by at most ``slack`` students, largest first: neurons that a few more
    converged students, or a lower gamma, would have kept. A failed reconstruction with near
    misses says so instead of failing silently."""
    supports = [len(np.unique(table.student[clusters.labels == c]))
                for c, why in clusters.rejected.items() if why == "small"]
    return sorted((s for s in supports if s >= clusters.min_size - slack), reverse=True)
