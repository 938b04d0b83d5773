"""Deep teachers: layer-wise Expand-and-Cluster with retraining (paper section 5, Algorithm 1
of Fig. 3; appendix A.3, A.5, A.6.2, A.6.4).

For the hidden layers ``l = 1 .. L`` of N overparameterised students, in order:

1. **Cluster** layer ``l`` of the current N students: the sub-network (layer ``l``, layer
   ``l + 1``) of every student goes through the one-layer pipeline of
   :func:`ec.reconstruct._layer.reconstruct_layer`, with the reconstructed
   layers' outputs as inputs and this layer's own ``gamma_l``, ``beta_l``.
2. **Retrain** (``l < L``): N new students whose first ``l`` layers are the reconstructed
   ones, weight vectors *fixed* and biases learnable (a ``trainable`` mask over the full
   network), the remaining layers at the student widths, freshly initialised. A
   reconstructed neuron of layer ``l`` whose learned bias differs across the students
   (standard deviation > ``bias_std_max``, 0.1 in A.3) was badly clustered: the worst such
   neuron is removed from the layer and the students are retrained, until every spread is
   below the threshold. The spread is taken over the lowest-loss ``bias_fraction`` of the
   students (default half): a student stuck in a local minimum compensates with any bias,
   which says nothing about the neuron (the paper's students are near zero loss;
   ``bias_fraction=1`` is its rule). Unconverged students spread the biases of good neurons
   too, so a removal must not cost fit: when the best retrained loss rises more than
   ``removal_loss_factor`` (10x) after a removal, the neuron is put back and the filter
   stops. The biases of the reconstructed layers are then those of the lowest-loss student.
   With ``reexpand=k`` (not in the paper), :mod:`._reexpand` then looks for neurons the
   clustering missed, with ``k`` free neurons beside the filtered layer, and the filter
   runs again on the grown layer.
3. At ``l = L`` the collapsed outgoing weights, with a least-squares bias, are the output
   layer.

Finally, neurons whose contribution to the next layer is (nearly) constant over the data
are folded into that layer's bias (:func:`ec.finetune.fold_constant_neurons`), and the network is
fine-tuned, biases first, then every parameter; neurons the fine-tune silenced are folded
in turn, followed by one more fine-tune.

:class:`LayerwiseExpandAndCluster` is the estimator; its :meth:`~LayerwiseExpandAndCluster.fit`
runs the loop. The stages get their settings as frozen values (:class:`StudentTraining`,
:class:`BiasFilter`, :class:`Reexpansion`), never the estimator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..finetune import BIAS_BUDGET, FINETUNE_BUDGET, FOLD_TOL, bias_mask, fold_constant_neurons
from ..mlp import MLPSpec, mse, output_variance
from ..progress import Event
from ..train import Budget, TrainResult
from ._layer import LayerClustering, ReconstructionError, reconstruct_layer
from ._reexpand import Reexpansion, reexpand_layer
from ._report import Report
from ._shallow import ExpandAndCluster, _as_xy, per_layer, student_summary
from ._stages import (ZERO_LOSS_FRACTION, StudentTraining, fixed_weights_mask, stage_init, stage_seeds, sub_student,
                      usable, voters)

Array = np.ndarray

# Appendix A.6.4, deep MNIST teacher with retraining: the same values for every layer.
DEEP_GAMMA = 0.5
DEEP_BETA = math.pi / 5


@dataclass(frozen=True)
class BiasFilter:
    """Settings of the A.3 bias filter applied after each retraining.

    Attributes
    ----------
    std_max : float
        A reconstructed neuron whose retrained bias has a larger standard deviation over the
        students is removed (A.3: 0.1).
    fraction : float in (0, 1]
        That spread is measured over this share of the students, lowest loss first (1: all
        of them, as in A.3).
    removal_loss_factor : float > 1
        A removal after which the best retrained loss is this many times higher took a
        neuron the layer needs: it is undone and ends the filter (``inf``: never, as in A.3).
    at_once : bool
        Remove every neuron above ``std_max`` in one round instead of the worst one only
        (fewer retraining rounds). When that makes the fit ``removal_loss_factor`` times
        worse, they are put back and the filter goes on one neuron per round.
    """

    std_max: float = 0.1
    fraction: float = 0.5
    removal_loss_factor: float = 10.0
    at_once: bool = False

    def check(self) -> None:
        if not self.std_max > 0:
            raise ValueError(f"bias_std_max={self.std_max!r}; allowed: > 0")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"bias_fraction={self.fraction!r}; allowed: 0 < bias_fraction <= 1")
        if not self.removal_loss_factor > 1:
            raise ValueError(f"removal_loss_factor={self.removal_loss_factor!r}; allowed: > 1 (inf: never undo)")


def bias_spread(students: Sequence[TrainResult], layer: int) -> Array:
    """Standard deviation over students of every bias of hidden layer ``layer`` (0-based).

    Returns
    -------
    ndarray of float64, shape (width of the layer,)
    """
    B = np.array([s.spec.unpack(s.params)[layer][1] for s in students])
    return B.std(axis=0)


class LayerwiseExpandAndCluster(ExpandAndCluster):
    """Expand-and-Cluster for deep networks: layer-wise clustering with retraining.

    Parameters
    ----------
    student_hidden_sizes : tuple of int
        Hidden widths of the overparameterised students, e.g. ``(32, 16)`` for an 8-4-2-1
        teacher at rho = 8.
    n_students : int
    gamma, beta : float or sequence of float
        One value for every hidden layer or one per hidden layer (default: A.6.4's deep
        MNIST values 0.5 and pi/5).
    retrain_budget : Budget, optional
        Per-student budget of every retraining (default: ``budget``).
    bias_std_max, bias_fraction, removal_loss_factor : float
        The A.3 filter (:class:`BiasFilter`'s ``std_max``, ``fraction``,
        ``removal_loss_factor``).
    bias_at_once : bool
        Remove every neuron above the threshold in one round (:class:`BiasFilter`'s
        ``at_once``; False: the worst one per round, as in A.3).
    fold_tol : float
        See :func:`ec.finetune.fold_constant_neurons`.
    reexpand : int >= 0
        Free neurons per student for the re-expansion after each bias filter
        (:class:`Reexpansion`; 0: off, as in the paper).
    reexpand_budget : Budget, optional
        Per student of the re-expansion (default: ``retrain_budget``).
    **kwargs
        The other parameters of :class:`ExpandAndCluster` (``activation``, ``backend``,
        ``budget``, ``finetune_budget``, ``loss_ratio`` (every layer; a unanimous near-best
        group on the first only), ``seed``, ``n_jobs``, ``feature_mask`` (first layer),
        ``progress``, ``backend_options``, ``cut``, ``retrain_dir``).

    Attributes
    ----------
    spec_, params_, layer_sizes_, weights_
        The reconstructed network.
    students_ : list of TrainResult
        The original students.
    retrained_ : list of list of TrainResult
        ``retrained_[s - 1]``: the students of stage ``s`` (first ``s`` layers fixed), last round.
    clusters_ : list of LayerClusters
        One per hidden layer.
    report_ : Report
        Per layer also ``bias_filter`` (the spread and removed neurons) and ``reexpand``;
        ``folded`` (before the fine-tune) and ``folded_after_finetune`` (indices into the
        network after the first fold).
    """

    _deep = True

    def __init__(
        self,
        student_hidden_sizes: Sequence[int] = (32, 16),
        n_students: int = 10,
        gamma: float | Sequence[float] = DEEP_GAMMA,
        beta: float | Sequence[float] = DEEP_BETA,
        *,
        retrain_budget: Budget | None = None,
        bias_std_max: float = BiasFilter.std_max,
        bias_fraction: float = BiasFilter.fraction,
        removal_loss_factor: float = BiasFilter.removal_loss_factor,
        bias_at_once: bool = BiasFilter.at_once,
        fold_tol: float = FOLD_TOL,
        reexpand: int = 0,
        reexpand_budget: Budget | None = None,
        **kwargs,
    ):
        super().__init__(student_hidden_sizes, n_students, gamma, beta, **kwargs)
        self.retrain_budget = retrain_budget
        self.bias_std_max = bias_std_max
        self.bias_fraction = bias_fraction
        self.removal_loss_factor = removal_loss_factor
        self.bias_at_once = bias_at_once
        self.fold_tol = fold_tol
        self.reexpand = reexpand
        self.reexpand_budget = reexpand_budget

    def _bias_filter(self) -> BiasFilter:
        return BiasFilter(float(self.bias_std_max), float(self.bias_fraction), float(self.removal_loss_factor),
                          bool(self.bias_at_once))

    def _check_params(self) -> None:
        super()._check_params()
        self._bias_filter().check()
        if not 0 <= self.fold_tol < 1:
            raise ValueError(f"fold_tol={self.fold_tol!r}; allowed: 0 <= fold_tol < 1")
        if isinstance(self.reexpand, bool) or not isinstance(self.reexpand, int) or self.reexpand < 0:
            raise ValueError(f"reexpand={self.reexpand!r}; allowed: an int >= 0 (free neurons per student, 0: off)")

    def fit(self, X: Array, y: Array, students: Sequence[TrainResult] | None = None) -> "LayerwiseExpandAndCluster":
        """Train (unless ``students`` are given), then reconstruct layer by layer.

        Parameters
        ----------
        X : ndarray of float64, shape (n_samples, d_in)
        y : ndarray of float64, shape (n_samples, d_out) or (n_samples,)
        students : sequence of TrainResult, optional
            Already trained original students (stage 0); trained here otherwise.

        Returns
        -------
        self

        Raises
        ------
        ReconstructionError
            Fewer than two usable students at some stage, no cluster survived, or the bias
            filter removed a whole layer.
        """
        self._check_params()
        X, y = _as_xy(X, y)
        mask = self._check_mask(X.shape[1])
        training = self._training()
        bias_filter = self._bias_filter()
        retrain_budget = self.retrain_budget or self.budget
        reexpansion = Reexpansion(self.reexpand, self.reexpand_budget or retrain_budget)
        n_hidden = len(self.student_hidden_sizes)
        widths = tuple(int(s) for s in self.student_hidden_sizes)
        gammas = per_layer(self.gamma, n_hidden, "gamma")
        betas = per_layer(self.beta, n_hidden, "beta")
        seconds = {"students": 0.0, "retrain": 0.0, "cluster": 0.0, "finetune": 0.0}

        t0 = time.perf_counter()
        current = list(students) if students is not None else self.train_students(X, y)
        seconds["students"] = time.perf_counter() - t0
        original = current
        fixed: list[tuple[Array, Array]] = []
        retrained, clusters_, layer_reports = [], [], []
        output = None
        for l in range(n_hidden):
            if l > 0:
                t0 = time.perf_counter()
                current, filt = retrain_and_filter(training, X, y, fixed, widths[l:], l, retrain_budget, bias_filter)
                if reexpansion.n_free:
                    clustering = LayerClustering(gammas[l - 1], betas[l - 1], self.cut, mask if l == 1 else None)
                    current, filt = _reexpand_and_filter(
                        training, X, y, fixed, widths[l:], l, current, filt, reexpansion=reexpansion,
                        bias_filter=bias_filter, retrain_budget=retrain_budget, clustering=clustering,
                        layer_report=layer_reports[l - 1])
                seconds["retrain"] += time.perf_counter() - t0
                retrained.append(current)
                layer_reports[l - 1]["bias_filter"] = filt
                layer_reports[l - 1]["m_hat"] = len(fixed[l - 1][1])
            n_usable = len(usable(current))
            if n_usable < 2:
                raise ReconstructionError(
                    f"layer {l + 1}: only {n_usable} of {len(current)} students are usable (not failed)"
                )
            good, unanimous = voters(current, self.loss_ratio, gammas[l], ZERO_LOSS_FRACTION * output_variance(y))
            # Retrained students share a fixed, inexact layer that bounds their losses, and a
            # near-best group of them need not all hold a neuron: 3-2-2-1 seed 1 lost a
            # second-layer neuron held by 6 of its 8 (docs/deep.md), so gamma counts there.
            unanimous = unanimous and l == 0
            best = min(good, key=lambda s: s.loss)
            best_layers = best.spec.unpack(best.params)
            fixed = [(W, best_layers[j][1].copy()) for j, (W, _) in enumerate(fixed)]
            hidden = best.spec.hidden(best.params, X)
            inputs = X if l == 0 else hidden[l - 1]
            last = l == n_hidden - 1
            # The outgoing weights must reproduce the network output (last layer) or, in
            # between, the next-layer pre-activations of the best student.
            W_next, b_next = best_layers[l + 1]
            target = y if last else hidden[l] @ W_next.T + b_next

            t0 = time.perf_counter()
            self._emit(Event.STAGE, name=f"cluster layer {l + 1}")
            layer, clusters, info = reconstruct_layer(
                [sub_student(s, l) for s in good], inputs, target, self.activation, gammas[l], betas[l],
                mask if l == 0 else None, self.cut, unanimous)
            seconds["cluster"] += time.perf_counter() - t0
            clusters_.append(clusters)
            layer_reports.append({
                **info,
                "gamma": gammas[l],
                "unanimous": unanimous,
                "beta": betas[l],
                "m_hat": len(layer.b),
                "student_widths": list(good[0].spec.hidden_sizes),
                "student_losses": [float(s.loss) for s in current],
                "voter_losses": [float(s.loss) for s in good],
            })
            fixed.append((layer.W, layer.b))
            if last:
                output = (layer.A, layer.c)

        spec = MLPSpec((X.shape[1], *(len(b) for _, b in fixed), y.shape[1]), self.activation)
        theta = spec.pack([*fixed, output])
        losses = {"assembled": mse(spec, theta, X, y)}
        spec, theta, folded = fold_constant_neurons(spec, theta, X, self.fold_tol)
        losses["folded"] = mse(spec, theta, X, y)
        t0 = time.perf_counter()
        self._emit(Event.STAGE, name="finetune")
        theta, losses["biases"] = self._finetune(spec, X, y, theta, BIAS_BUDGET, bias_mask(spec))
        finetune_budget = self.finetune_budget or FINETUNE_BUDGET
        theta, losses["finetuned"] = self._finetune(spec, X, y, theta, finetune_budget, None)
        # The fine-tune often silences superfluous neurons (saturating them, or zeroing their
        # outgoing weights): fold those too, and fine-tune once more.
        spec_after, theta_after, folded_after = fold_constant_neurons(spec, theta, X, self.fold_tol)
        if any(folded_after):
            spec, theta = spec_after, theta_after
            losses["refolded"] = mse(spec, theta, X, y)
            theta, losses["finetuned"] = self._finetune(spec, X, y, theta, finetune_budget, None)
        seconds["finetune"] = time.perf_counter() - t0

        self._set_network(spec, theta)
        self.students_ = list(original)
        self.retrained_ = retrained
        self.clusters_ = clusters_
        self.report_ = Report(
            layer_sizes=list(spec.layer_sizes),
            student_layer_sizes=[X.shape[1], *widths, y.shape[1]],
            m_hat=list(spec.hidden_sizes),
            **student_summary(original),
            gamma=list(gammas),
            beta=list(betas),
            activation=self.activation,
            layers=layer_reports,
            train_loss=losses,
            train_rmse=math.sqrt(losses["finetuned"]),
            seconds=seconds,
            bias_filter={"std_max": bias_filter.std_max, "fraction": bias_filter.fraction,
                         "removal_loss_factor": bias_filter.removal_loss_factor, "at_once": bias_filter.at_once},
            folded=folded,
            folded_after_finetune=folded_after,
        )
        return self


def _reexpand_and_filter(training: StudentTraining, X: Array, y: Array, fixed: list[tuple[Array, Array]],
                         upper_widths: Sequence[int], stage: int, students: list[TrainResult], filt: dict, *,
                         reexpansion: Reexpansion, bias_filter: BiasFilter, retrain_budget: Budget | None,
                         clustering: LayerClustering, layer_report: dict) -> tuple[list[TrainResult], dict]:
    """Re-expansion after a bias filter (:mod:`._reexpand`), then the filter again with the
    added neurons protected; returns the students and filter report to go on with.

    A neuron the filter's guard put back is left out while the free neurons search: the
    layer needed *something* in its place, and that something is what they look for (a
    spurious stand-in also lures them into using it). If they find nothing, the stand-in
    goes back into the layer.
    """
    before = fixed[-1]
    reference = min(s.loss for s in usable(students))
    if filt["restored"] is not None:
        drop = filt["neurons"].index(filt["restored"])
        fixed[-1] = (np.delete(before[0], drop, axis=0), np.delete(before[1], drop))
        reference = filt["history"][-1]["best_loss"]
    grown = reexpand_layer(training, X, y, fixed, upper_widths, stage, reexpansion, clustering, reference)
    layer_report["reexpand"] = {**grown, "left_out": filt["restored"], "bias_filter_before": filt}
    n_added = sum(grown["added"])
    if not n_added:
        fixed[-1] = before
        return students, filt
    width = len(fixed[-1][1])
    return retrain_and_filter(training, X, y, fixed, upper_widths, stage, retrain_budget, bias_filter,
                              protected=range(width - n_added, width))


def retrain_and_filter(
    training: StudentTraining,
    X: Array,
    y: Array,
    fixed: list[tuple[Array, Array]],
    upper_widths: Sequence[int],
    stage: int,
    budget: Budget | None,
    bias_filter: BiasFilter = BiasFilter(),
    protected: Sequence[int] = (),
) -> tuple[list[TrainResult], dict]:
    """Train the N students of ``stage`` and apply the A.3 bias filter to the last fixed layer.

    The students are ``(d_in, *fixed widths, *upper_widths, d_out)``, initialised with
    :func:`stage_init` from :func:`stage_seeds` and trained with the weight matrices of the
    ``fixed`` layers frozen (:func:`fixed_weights_mask`) and every bias learnable. While some
    neurons of the last fixed layer end with a bias spread (over the usable students) above
    ``bias_filter.std_max`` over the lowest-loss ``bias_filter.fraction`` of the usable students (at
    least two), the one with the largest spread is removed from ``fixed[-1]`` (in place) and
    the students are trained again: one neuron per round, because a badly clustered neuron
    disturbs the students' training and can inflate the spread of good neurons too. When a
    removal raised the best retrained loss more than ``bias_filter.removal_loss_factor`` times, the
    layer needed that neuron: it is put back, the previous round's students are returned
    and the filter stops (unconverged students spread good neurons' biases as well).

    Parameters
    ----------
    training : StudentTraining
    X, y : ndarray of float64, shapes (n, d_in) and (n, d_out)
    fixed : list of (W, b)
        The reconstructed layers; their ``b`` are the biases the students start from.
    upper_widths : sequence of int
        Widths of the hidden layers above them.
    stage : int
        ``len(fixed)``; picks the seeds.
    budget : Budget or None
    bias_filter : BiasFilter
    protected : sequence of int
        Neurons of the last fixed layer the filter never removes (those re-expansion added:
        they made the fit at least ten times better, stronger evidence than the bias spread
        of briefly retrained students, which is large for a neuron active on a small part
        of the data, whose bias trades off against its outgoing weight).

    Returns
    -------
    students : list of TrainResult
        The students of the kept round (fixed weights bit for bit as given).
    report : dict
        ``neurons`` (those kept, indices in the layer as it was given), ``std`` (bias spread
        of the kept round), ``removed`` (indices in the layer as it was given, in removal
        order), ``restored`` (the index put back, or None), ``rounds``,
        ``history`` (per round: ``neurons`` left, ``std``, ``best_loss`` and ``median_loss``
        of the usable students).

    Raises
    ------
    ReconstructionError
        Fewer than two usable students, or the filter removed every neuron of the layer.
    """
    W, b = fixed[-1]
    alive = np.arange(len(b))
    removed: list[int] = []
    history: list[dict] = []
    rounds = 0
    at_once = bias_filter.at_once
    kept = None  # before the last removal: (alive, results, std, best loss)
    while True:
        rounds += 1
        fixed[-1] = (W[alive], b[alive])
        spec = MLPSpec((X.shape[1], *(len(bb) for _, bb in fixed), *upper_widths, y.shape[1]), training.activation)
        seeds = stage_seeds(training.seed, stage, training.n_students)
        theta0s = [stage_init(spec, fixed, s) for s in seeds]
        label = f"retrain with {stage} fixed layer(s) {spec.layer_sizes} (round {rounds})"
        results, good = training.train_stage(X, y, spec, seeds, theta0s, fixed_weights_mask(spec, len(fixed)),
                                             budget, label, f"stage{stage}")
        best = sorted(good, key=lambda s: s.loss)[:max(2, math.ceil(bias_filter.fraction * len(good) - 1e-9))]
        std = bias_spread(best, stage - 1)
        losses = sorted(s.loss for s in good)
        history.append({"neurons": alive.tolist(), "std": std.tolist(), "best_loss": float(losses[0]),
                        "median_loss": float(losses[len(losses) // 2])})
        training.emit(Event.STAGE, name=f"bias filter round {rounds}: best loss {losses[0]:.2e}, median "
                                f"{losses[len(losses) // 2]:.2e}, bias spread {np.round(std, 3).tolist()}")
        loss = losses[0]
        if kept is not None and loss > bias_filter.removal_loss_factor * kept[3]:
            n_back = len(kept[0]) - len(alive)
            alive, results, std, loss = kept
            fixed[-1] = (W[alive], b[alive])
            put_back = removed[-n_back:]
            del removed[-n_back:]
            kept = None
            if n_back == 1:
                training.emit(Event.STAGE, name=f"bias filter: removing neuron {put_back[0]} made the fit worse; "
                                                "put back")
                return results, _filter_report(alive, std, removed, put_back[0], rounds, history)
            # Several at once took a neuron the layer needs: back to one per round from there.
            at_once = False
            training.emit(Event.STAGE, name=f"bias filter: removing neurons {put_back} together made the fit "
                                            "worse; put back, now one per round")
        free = ~np.isin(alive, protected)
        worst = int(np.argmax(np.where(free, std, -np.inf)))
        if std[worst] <= bias_filter.std_max or not free[worst]:
            return results, _filter_report(alive, std, removed, None, rounds, history)
        if len(alive) == 1:
            raise ReconstructionError(
                f"layer {stage}: the bias filter removed every reconstructed neuron (last bias spread "
                f"{std[worst]:.3g} > {bias_filter.std_max}; removed {removed})"
            )
        go = np.flatnonzero(free & (std > bias_filter.std_max)) if at_once else np.array([worst])
        if len(go) == len(alive):  # never the whole layer at once: the worst first
            go = np.array([worst])
        kept = (alive, results, std, loss)
        removed += [int(i) for i in alive[go]]
        alive = np.delete(alive, go)


def _filter_report(alive: Array, std: Array, removed: list[int], restored: int | None, rounds: int,
                   history: list[dict]) -> dict:
    return {"neurons": alive.tolist(), "std": std.tolist(), "removed": removed, "restored": restored,
            "rounds": rounds, "history": history}
