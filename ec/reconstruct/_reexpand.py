"""Re-expansion: find the neurons of a reconstructed layer that the clustering missed.

Not in the paper. A teacher neuron that is active on a small part of the data (an A.4
neuron whose hyperplane cuts off a corner of the input cube) is the slowest for the
original students to pin down: with the others exact, they still hold it only as an
approximate mixture after thousands of CPU seconds, so its cluster is too small or too
spread to be kept, and the retrained students, whose reconstructed layer lacks it, cannot
reach zero loss. Re-expansion retrains N students whose reconstructed layer has its
found neurons *fixed* plus ``n_free`` freshly initialised free neurons (the layers above
at the student widths, as in the retraining), clusters the free neurons across these
students with the layer's gamma and beta, and adds each kept cluster that is not within
beta of a neuron the layer already has, provided the free neurons made the fit better:
the best student's loss must fall ``min_gain`` times below that of the students without
them (the previous round's). Unconverged students also agree on helper neurons (for g,
a partner ``-w`` of a fixed neuron with another bias, which g's linear part makes useful),
so a layer that misses nothing gets free clusters too, but no gain. The students are much
easier to train than the originals: all that is left to find is the residual. Rounds
repeat while they add neurons (at most ``max_rounds``); the caller then retrains and
bias-filters the grown layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..activations import get_activation
from ..cluster import NeuronTable, angles_to, cluster_layer, collapse
from ..mlp import MLPSpec
from ..progress import Event
from ..train import Budget, TrainResult
from ._layer import LayerClustering
from ._stages import StudentTraining, fixed_weights_mask, stage_init, stage_seeds, sub_student

Array = np.ndarray
# Seeds of re-expansion round k of stage s: stage_seeds(seed, SEED_STAGE_OFFSET * s + k, N),
# apart from the retraining stages' (s < SEED_STAGE_OFFSET).
SEED_STAGE_OFFSET = 100


@dataclass(frozen=True)
class Reexpansion:
    """Settings of the re-expansion that follows each bias filter (not in the paper).

    Attributes
    ----------
    n_free : int >= 0
        Free neurons added to the layer in every student; 0: no re-expansion.
    budget : Budget or None
        Per student (None: the retraining budget; free neurons start small and need more).
    max_rounds : int
    min_gain : float
        A round adds its neurons only if its best loss is this many times below the
        previous round's (the first round's: below the reference loss).
    """

    n_free: int = 0
    budget: Budget | None = None
    max_rounds: int = 3
    min_gain: float = 10.0


def reexpand_layer(training: StudentTraining, X: Array, y: Array, fixed: list[tuple[Array, Array]],
                   upper_widths: Sequence[int], stage: int, settings: Reexpansion, clustering: LayerClustering,
                   reference_loss: float) -> dict:
    """Grow the last reconstructed layer ``fixed[-1]`` (in place) by the neurons its free
    neurons agree on.

    Parameters
    ----------
    training : StudentTraining
    X, y : ndarray of float64, shapes (n, d_in) and (n, d_out)
    fixed : list of (W, b)
        The reconstructed layers; the last one grows.
    upper_widths : sequence of int
        Widths of the hidden layers above.
    stage : int
        ``len(fixed)``.
    settings : Reexpansion
        ``n_free >= 1``; its ``budget`` per student.
    clustering : LayerClustering
        The layer's gamma, beta, cut and (first layer) feature mask, used for the free neurons.
    reference_loss : float
        Best loss of the students trained with the layer as it is (no free neurons).

    Returns
    -------
    dict
        ``added`` (per round, the number of neurons added), ``free_clusters`` (per round,
        clusters of free neurons not already in the layer), ``rounds``, ``best_loss`` and
        ``median_loss`` per round (usable students), ``reference_loss``.
    """
    act, n_free = training.activation, settings.n_free
    sign_invariant = get_activation(act).sign_symmetric
    report = {"added": [], "free_clusters": [], "rounds": 0, "best_loss": [], "median_loss": [],
              "reference_loss": float(reference_loss)}
    previous = reference_loss
    for k in range(1, settings.max_rounds + 1):
        W, b = fixed[-1]
        m = len(b)
        spec = MLPSpec((X.shape[1], *(len(bb) for _, bb in fixed[:-1]), m + n_free, *upper_widths, y.shape[1]), act)
        seeds = stage_seeds(training.seed, SEED_STAGE_OFFSET * stage + k, training.n_students)
        theta0s = [_init(spec, fixed, s) for s in seeds]
        label = f"re-expand layer {stage}: {m} fixed + {n_free} free neurons (round {k})"
        _, usable = training.train_stage(X, y, spec, seeds, theta0s, _mask(spec, len(fixed), m), settings.budget,
                                         label, f"reexpand{stage}")
        losses = sorted(s.loss for s in usable)
        report["rounds"] = k
        report["best_loss"].append(float(losses[0]))
        report["median_loss"].append(float(losses[len(losses) // 2]))
        parts = [sub_student(s, stage - 1, slice(m, None)) for s in usable]
        new_W, new_b = _agreed_free_neurons(parts, act, clustering)
        new = [i for i in range(len(new_b)) if not _near_any(np.append(new_W[i], new_b[i]), W, b, clustering.beta,
                                                             sign_invariant)]
        report["free_clusters"].append(len(new))
        gain = previous / max(losses[0], 1e-300)
        if gain < settings.min_gain:
            new = []
        report["added"].append(len(new))
        training.emit(Event.STAGE, name=f"re-expand layer {stage} round {k}: best loss {losses[0]:.2e} (before: "
                                    f"{previous:.2e}, needs {settings.min_gain:g}x lower), "
                                    f"{report['free_clusters'][-1]} new free cluster(s), {len(new)} neuron(s) added")
        if not new:
            break
        previous = losses[0]
        fixed[-1] = (np.vstack([W, new_W[new]]), np.append(b, new_b[new]))
    return report


def _init(spec: MLPSpec, fixed, seed: int) -> Array:
    """Glorot init with the reconstructed layers in place; the last one's first rows."""
    theta = stage_init(spec, fixed[:-1], seed)
    layers = spec.unpack(theta)  # views: writing into them writes into theta
    W, b = fixed[-1]
    layers[len(fixed) - 1][0][:len(b)] = W
    layers[len(fixed) - 1][1][:len(b)] = b
    return theta


def _mask(spec: MLPSpec, n_fixed_layers: int, m: int) -> Array:
    """Trainable: everything but the weights of the lower reconstructed layers and of the
    first ``m`` neurons of the last one."""
    mask = fixed_weights_mask(spec, n_fixed_layers - 1)
    w0, _, _ = spec.offsets()[n_fixed_layers - 1]
    mask[w0:w0 + m * spec.layer_sizes[n_fixed_layers - 1]] = False
    return mask


def _agreed_free_neurons(parts: list[TrainResult], act, clustering: LayerClustering) -> tuple[Array, Array]:
    """One neuron per kept cluster of the free neurons (the first layer's clustering: on the
    informative inputs ``clustering.feature_mask`` only, as for the original students)."""
    c = clustering
    table = NeuronTable.from_students(parts)
    clusters = cluster_layer(table, act, c.gamma, c.beta, c.feature_mask, c.cut)
    if clusters.n_kept == 0:
        return np.zeros((0, table.W.shape[1])), np.zeros(0)
    layer, _ = collapse(table, clusters, act, c.feature_mask)
    return layer.W, layer.b


def _near_any(v: Array, W: Array, b: Array, beta: float, sign_invariant: bool) -> bool:
    """Whether ``v = [w; b]`` is within ``beta`` (radians) of a row of ``[W, b]`` (or of
    its negative, for activations whose clusters are taken up to sign)."""
    return bool(np.any(angles_to(np.hstack([W, b[:, None]]), v, sign_invariant) <= beta))
