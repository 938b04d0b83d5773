"""Deep teachers: layer-wise Expand-and-Cluster with retraining (paper section 5, Algorithm 1
of Fig. 3; appendix A.3, A.5, A.6.2, A.6.4).

For the hidden layers ``l = 1 .. L`` of N overparameterised students, in order:

1. **Cluster** layer ``l`` of the current N students: the sub-network (layer ``l``, layer
   ``l + 1``) of every student goes through the one-layer pipeline of
   :meth:`ec.reconstruct.ExpandAndCluster._reconstruct_layer`, with the reconstructed
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
   With ``reexpand=k`` (not in the paper), :mod:`ec.reexpand` then looks for neurons the
   clustering missed, with ``k`` free neurons beside the filtered layer, and the filter
   runs again on the grown layer.
3. At ``l = L`` the collapsed outgoing weights, with a least-squares bias, are the output
   layer.

Finally, neurons whose contribution to the next layer is (nearly) constant over the data
are folded into that layer's bias (:func:`fold_constant_neurons`), and the network is
fine-tuned, biases first, then every parameter; neurons the fine-tune silenced are folded
in turn, followed by one more fine-tune.

:class:`LayerwiseExpandAndCluster` is the estimator; :class:`ec.reconstruct.ExpandAndCluster`
hands deep student architectures to :func:`fit_layerwise`. :func:`compare_layers` compares
a deep reconstruction with its teacher layer by layer.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .activations import get_activation
from .cluster import Layer, flip_rule, prune_inactive
from .metrics import match_neurons, rmse
from .mlp import MLPSpec, mse
from .reconstruct import BIAS_BUDGET, FINETUNE_BUDGET, ExpandAndCluster, ReconstructionError, _as_xy, _bias_mask
from .reconstruct import student_seed
from .train import Budget, TrainResult
from .train.cached import run_key, train_students_cached

Array = np.ndarray

# Appendix A.6.4, deep MNIST teacher with retraining: the same values for every layer.
DEEP_GAMMA = 0.5
DEEP_BETA = math.pi / 5
# Appendix A.3: a reconstructed neuron whose retrained bias varies more than this is removed.
BIAS_STD_MAX = 0.1
# ... varies over this (lowest-loss) fraction of the retrained students.
BIAS_FRACTION = 0.5
# A removal after which the best retrained student fits this much worse took a neuron the
# layer needs: it is undone and the filter stops.
REMOVAL_LOSS_FACTOR = 10.0
# A neuron whose contribution to the next layer varies less than this fraction of the
# layer's largest contribution is a bias (the tolerance of ec.cluster.prune_inactive).
FOLD_TOL = 1e-4
# Matching teacher neurons: an excess neuron this close (degrees) to a teacher neuron is
# one of its duplicates, and its outgoing weights count for that teacher neuron.
DUPLICATE_DEG = 1.0


def per_layer(value, n_layers: int, name: str) -> tuple[float, ...]:
    """One float per hidden layer from a scalar or a sequence of ``n_layers`` values.

    Raises
    ------
    ValueError
        A sequence of the wrong length.
    """
    if np.ndim(value) == 0:
        return (float(value),) * n_layers
    values = tuple(float(v) for v in value)
    if len(values) != n_layers:
        raise ValueError(
            f"{name}={tuple(value)!r}: give one value or one per hidden layer ({n_layers})"
        )
    return values


def stage_seeds(seed: int, stage: int, n_students: int) -> list[int]:
    """Seeds of the students of retraining stage ``stage`` (0: the original students).

    Stage ``s`` uses :func:`ec.reconstruct.student_seed` indices ``s N .. s N + N - 1``, so
    stage 0 gives exactly the students of the one-layer estimator.
    """
    return [student_seed(seed, stage * n_students + i) for i in range(n_students)]


def fixed_weights_mask(spec: MLPSpec, n_fixed: int) -> Array:
    """Trainable mask: every parameter except the weight matrices of the first ``n_fixed`` layers."""
    mask = np.ones(spec.n_params, dtype=bool)
    for w0, b0, _ in spec.offsets()[:n_fixed]:
        mask[w0:b0] = False
    return mask


def stage_init(spec: MLPSpec, fixed: Sequence[tuple[Array, Array]], seed: int) -> Array:
    """Glorot-normal initialisation of ``spec`` from ``seed`` with the first layers replaced
    by ``fixed`` ``[(W, b), ...]``."""
    layers = spec.unpack(spec.init_params(seed))
    return spec.pack([*fixed, *layers[len(fixed):]])


def sub_student(student: TrainResult, layer: int, neurons: slice = slice(None)) -> TrainResult:
    """Hidden layer ``layer`` (0-based) of a student with its outgoing weights, as a
    one-hidden-layer :class:`TrainResult` with the student's loss (what
    :class:`ec.cluster.NeuronTable` clusters); only the ``neurons`` of that layer."""
    (W, b), (A, c) = student.spec.unpack(student.params)[layer:layer + 2]
    W, b, A = W[neurons], b[neurons], A[:, neurons]
    sub = MLPSpec((W.shape[1], len(b), len(c)), student.spec.activation)
    return replace(student, spec=sub, params=sub.pack([(W, b), (A, c)]))


def bias_spread(students: Sequence[TrainResult], layer: int) -> Array:
    """Standard deviation over students of every bias of hidden layer ``layer`` (0-based).

    Returns
    -------
    ndarray of float64, shape (width of the layer,)
    """
    B = np.array([s.spec.unpack(s.params)[layer][1] for s in students])
    return B.std(axis=0)


def fold_constant_neurons(
    spec: MLPSpec, theta: Array, X: Array, tol: float = FOLD_TOL
) -> tuple[MLPSpec, Array, list[list[int]]]:
    """Fold every hidden neuron whose contribution to the next layer is (nearly) constant
    over ``X`` into that layer's bias.

    A neuron ``k`` of a layer with
    ``std(h_k) * ||W_next[:, k]|| <= tol * max_j std(h_j) * ||W_next[:, j]||`` is removed and
    ``W_next[:, k] * mean(h_k)`` added to the next bias (:func:`ec.cluster.prune_inactive`
    applied to each layer). Constant-type neurons (``w ~ 0``, or saturated) and neurons
    the next layer ignores both go; the function changes by at most their contribution's
    variation, and not at all when it is exactly constant. Layers are visited from the last
    hidden layer down, and again until nothing changes, so that a neuron that only fed
    folded neurons goes too. A layer whose neurons would all go is kept.

    Parameters
    ----------
    spec : MLPSpec
    theta : ndarray of float64, shape (spec.n_params,)
    X : ndarray of float64, shape (n_samples, spec.d_in)
    tol : float

    Returns
    -------
    spec : MLPSpec
        With the smaller hidden widths.
    theta : ndarray of float64
    removed : list of list of int
        Per hidden layer, the indices (in the input network) of the folded neurons.
    """
    act = get_activation(spec.activation)
    layers = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]
    alive = [np.arange(width) for width in spec.hidden_sizes]
    X = np.asarray(X, dtype=np.float64)
    changed = True
    while changed:
        changed = False
        for l in reversed(range(len(alive))):
            h = X
            for W, b in layers[:l]:
                h = act.f(h @ W.T + b)
            (W, b), (A, c) = layers[l], layers[l + 1]
            pruned, dead = prune_inactive(Layer(W, b, A, c, np.zeros((len(c), W.shape[1]))), h, act, tol)
            if dead and len(dead) < len(b):  # an all-constant layer has nothing to fold into
                layers[l], layers[l + 1] = (pruned.W, pruned.b), (pruned.A, pruned.c)
                alive[l] = np.delete(alive[l], dead)
                changed = True
    new = spec.with_hidden_sizes(len(a) for a in alive)
    removed = [sorted(set(range(width)) - set(a.tolist())) for width, a in zip(spec.hidden_sizes, alive)]
    return new, new.pack(layers), removed


def _restore_fixed(res: TrainResult, theta0: Array, trainable: Array, X: Array, y: Array) -> TrainResult:
    """Put fixed parameters back bit for bit (should a backend round them) and re-evaluate."""
    if res.failed or np.array_equal(res.params[~trainable], theta0[~trainable]):
        return res
    params = res.params.copy()
    params[~trainable] = theta0[~trainable]
    return replace(res, params=params, loss=mse(res.spec, params, X, y))


def _usable(students: Sequence[TrainResult]) -> list[TrainResult]:
    return [s for s in students if not s.failed and np.isfinite(s.loss)]


def _layer_view(est: ExpandAndCluster, gamma: float, beta: float, feature_mask) -> ExpandAndCluster:
    """A copy of ``est`` that clusters one layer with its own gamma, beta and input mask."""
    view = copy.copy(est)
    view.gamma, view.beta, view.feature_mask = gamma, beta, feature_mask
    return view


def fit_layerwise(
    est: ExpandAndCluster,
    X: Array,
    y: Array,
    students: Sequence[TrainResult] | None = None,
    *,
    retrain_budget: Budget | None = None,
    bias_std_max: float = BIAS_STD_MAX,
    bias_fraction: float = BIAS_FRACTION,
    removal_loss_factor: float = REMOVAL_LOSS_FACTOR,
    fold_tol: float = FOLD_TOL,
    reexpand: int = 0,
    reexpand_budget: Budget | None = None,
) -> ExpandAndCluster:
    """Layer-wise Expand-and-Cluster with retraining; sets ``est``'s fitted attributes.

    Parameters
    ----------
    est : ExpandAndCluster
        Its parameters: ``student_hidden_sizes`` (one width per hidden layer), ``gamma`` and
        ``beta`` (one value or one per hidden layer), ``n_students``, ``backend``,
        ``budget`` (original students), ``finetune_budget``, ``seed``, ...
    X : ndarray of float64, shape (n_samples, d_in)
    y : ndarray of float64, shape (n_samples, d_out) or (n_samples,)
    students : sequence of TrainResult, optional
        Already trained original students (stage 0); trained here otherwise.
    retrain_budget : Budget, optional
        Per-student budget of every retraining (default: ``est.budget``).
    bias_std_max, bias_fraction, removal_loss_factor : float
        The A.3 filter: threshold of the bias spread, the share of the (lowest-loss)
        students it is measured over, and the rise of the best retrained loss that undoes a
        removal (``inf``: never).
    fold_tol : float
        Tolerance of :func:`fold_constant_neurons` before the final fine-tune.
    reexpand : int
        After each bias filter, look for neurons the clustering missed with this many free
        neurons per retrained student (:func:`ec.reexpand.reexpand_layer`; not in the
        paper), and filter the grown layer again. 0: off, the paper's procedure.
    reexpand_budget : Budget, optional
        Per-student budget of the re-expansion (default: ``retrain_budget``); its free
        neurons start small and need more than a retraining.

    Sets
    ----
    spec_, params_, layer_sizes_, weights_
        The reconstructed network.
    students_ : list of TrainResult
        The original students.
    retrained_ : list of list of TrainResult
        ``retrained_[s - 1]``: the students of stage ``s`` (first ``s`` layers fixed), last round.
    clusters_ : list of LayerClusters
        One per hidden layer.
    report_ : dict
        ``layer_sizes``, ``m_hat`` (per hidden layer), ``layers`` (per layer: clustering
        details, ``bias_filter`` with the spread and removed neurons, ``reexpand`` (with
        ``reexpand``), ``student_losses`` of the students it was clustered from), ``folded``
        (before the fine-tune) and ``folded_after_finetune`` (indices into the network after
        the first fold), ``train_loss`` per stage, ``train_rmse``, ``seconds``.

    Raises
    ------
    ReconstructionError
        Fewer than two usable students at some stage, no cluster survived, or the bias
        filter removed a whole layer.
    """
    X, y = _as_xy(X, y)
    n_hidden = len(est.student_hidden_sizes)
    widths = tuple(int(s) for s in est.student_hidden_sizes)
    gammas = per_layer(est.gamma, n_hidden, "gamma")
    betas = per_layer(est.beta, n_hidden, "beta")
    retrain_budget = retrain_budget or est.budget
    seconds = {"students": 0.0, "retrain": 0.0, "cluster": 0.0, "finetune": 0.0}

    t0 = time.perf_counter()
    current = list(students) if students is not None else est.train_students(X, y)
    seconds["students"] = time.perf_counter() - t0
    original = current
    fixed: list[tuple[Array, Array]] = []
    retrained, clusters_, layer_reports = [], [], []
    output = None
    for l in range(n_hidden):
        if l > 0:
            t0 = time.perf_counter()
            current, filt = retrain_and_filter(est, X, y, fixed, widths[l:], l, retrain_budget, bias_std_max,
                                               bias_fraction, removal_loss_factor)
            if reexpand:
                current, filt = _reexpand_and_filter(est, X, y, fixed, widths[l:], l, current, filt, reexpand,
                                                     reexpand_budget or retrain_budget, gammas[l - 1], betas[l - 1],
                                                     layer_reports[l - 1], (retrain_budget, bias_std_max,
                                                                            bias_fraction, removal_loss_factor))
            seconds["retrain"] += time.perf_counter() - t0
            retrained.append(current)
            layer_reports[l - 1]["bias_filter"] = filt
            layer_reports[l - 1]["m_hat"] = len(fixed[l - 1][1])
        usable = _usable(current)
        if len(usable) < 2:
            raise ReconstructionError(
                f"layer {l + 1}: only {len(usable)} of {len(current)} students are usable (not failed)"
            )
        best = min(usable, key=lambda s: s.loss)
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
        est._emit("stage", name=f"cluster layer {l + 1}")
        view = _layer_view(est, gammas[l], betas[l], est.feature_mask if l == 0 else None)
        layer, clusters, info = view._reconstruct_layer([sub_student(s, l) for s in usable], inputs, target)
        seconds["cluster"] += time.perf_counter() - t0
        clusters_.append(clusters)
        layer_reports.append({
            **info,
            "gamma": gammas[l],
            "beta": betas[l],
            "m_hat": len(layer.b),
            "student_widths": list(usable[0].spec.hidden_sizes),
            "student_losses": [float(s.loss) for s in current],
        })
        fixed.append((layer.W, layer.b))
        if last:
            output = (layer.A, layer.c)

    spec = MLPSpec((X.shape[1], *(len(b) for _, b in fixed), y.shape[1]), est.activation)
    theta = spec.pack([*fixed, output])
    losses = {"assembled": mse(spec, theta, X, y)}
    spec, theta, folded = fold_constant_neurons(spec, theta, X, fold_tol)
    losses["folded"] = mse(spec, theta, X, y)
    t0 = time.perf_counter()
    est._emit("stage", name="finetune")
    theta, losses["biases"] = est._finetune(spec, X, y, theta, BIAS_BUDGET, _bias_mask(spec))
    finetune = est.finetune_budget or FINETUNE_BUDGET
    theta, losses["finetuned"] = est._finetune(spec, X, y, theta, finetune, None)
    # The fine-tune often silences superfluous neurons (saturating them, or zeroing their
    # outgoing weights): fold those too, and fine-tune once more.
    spec_after, theta_after, folded_after = fold_constant_neurons(spec, theta, X, fold_tol)
    if any(folded_after):
        spec, theta = spec_after, theta_after
        losses["refolded"] = mse(spec, theta, X, y)
        theta, losses["finetuned"] = est._finetune(spec, X, y, theta, finetune, None)
    seconds["finetune"] = time.perf_counter() - t0

    est.spec_ = spec
    est.params_ = theta
    est.layer_sizes_ = spec.layer_sizes
    est.weights_ = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]
    est.students_ = list(original)
    est.retrained_ = retrained
    est.clusters_ = clusters_
    est.report_ = {
        "layer_sizes": list(spec.layer_sizes),
        "student_layer_sizes": [X.shape[1], *widths, y.shape[1]],
        "m_hat": list(spec.hidden_sizes),
        "n_students": len(original),
        "n_usable_students": len(_usable(original)),
        "failed_students": [i for i, s in enumerate(original) if s.failed or not np.isfinite(s.loss)],
        "student_losses": [float(s.loss) for s in original],
        "gamma": list(gammas),
        "beta": list(betas),
        "activation": est.activation,
        "bias_std_max": float(bias_std_max),
        "bias_fraction": float(bias_fraction),
        "removal_loss_factor": float(removal_loss_factor),
        "layers": layer_reports,
        "folded": folded,
        "folded_after_finetune": folded_after,
        "train_loss": losses,
        "train_rmse": math.sqrt(losses["finetuned"]),
        "seconds": seconds,
    }
    return est


def _reexpand_and_filter(est, X, y, fixed, upper_widths, stage, students, filt, n_free, budget, gamma, beta,
                         layer_report, filter_args):
    """Re-expansion after a bias filter (:mod:`ec.reexpand`), then the filter again with the
    added neurons protected; returns the students and filter report to go on with.

    A neuron the filter's guard put back is left out while the free neurons search: the
    layer needed *something* in its place, and that something is what they look for (a
    spurious stand-in also lures them into using it). If they find nothing, the stand-in
    goes back into the layer.
    """
    from .reexpand import reexpand_layer  # it builds on this module's stage helpers

    before = fixed[-1]
    reference = min(s.loss for s in _usable(students))
    if filt["restored"] is not None:
        drop = filt["history"][-2]["neurons"].index(filt["restored"])
        fixed[-1] = (np.delete(before[0], drop, axis=0), np.delete(before[1], drop))
        reference = filt["history"][-1]["best_loss"]
    grown = reexpand_layer(est, X, y, fixed, upper_widths, stage, budget, n_free, gamma, beta, reference)
    layer_report["reexpand"] = {**grown, "left_out": filt["restored"], "bias_filter_before": filt}
    n_added = sum(grown["added"])
    if not n_added:
        fixed[-1] = before
        return students, filt
    width = len(fixed[-1][1])
    return retrain_and_filter(est, X, y, fixed, upper_widths, stage, *filter_args,
                              protected=range(width - n_added, width))


def retrain_and_filter(
    est: ExpandAndCluster,
    X: Array,
    y: Array,
    fixed: list[tuple[Array, Array]],
    upper_widths: Sequence[int],
    stage: int,
    budget: Budget | None,
    bias_std_max: float = BIAS_STD_MAX,
    bias_fraction: float = BIAS_FRACTION,
    removal_loss_factor: float = REMOVAL_LOSS_FACTOR,
    protected: Sequence[int] = (),
) -> tuple[list[TrainResult], dict]:
    """Train the N students of ``stage`` and apply the A.3 bias filter to the last fixed layer.

    The students are ``(d_in, *fixed widths, *upper_widths, d_out)``, initialised with
    :func:`stage_init` from :func:`stage_seeds` and trained with the weight matrices of the
    ``fixed`` layers frozen (:func:`fixed_weights_mask`) and every bias learnable. While some
    neurons of the last fixed layer end with a bias spread (over the usable students) above
    ``bias_std_max`` over the lowest-loss ``bias_fraction`` of the usable students (at
    least two), the one with the largest spread is removed from ``fixed[-1]`` (in place) and
    the students are trained again: one neuron per round, because a badly clustered neuron
    disturbs the students' training and can inflate the spread of good neurons too. When a
    removal raised the best retrained loss more than ``removal_loss_factor`` times, the
    layer needed that neuron: it is put back, the previous round's students are returned
    and the filter stops (unconverged students spread good neurons' biases as well).

    Parameters
    ----------
    est : ExpandAndCluster
        Supplies ``n_students``, ``seed``, ``backend``, ``n_jobs``, ``backend_options``,
        ``activation`` and the progress callback.
    X, y : ndarray of float64, shapes (n, d_in) and (n, d_out)
    fixed : list of (W, b)
        The reconstructed layers; their ``b`` are the biases the students start from.
    upper_widths : sequence of int
        Widths of the hidden layers above them.
    stage : int
        ``len(fixed)``; picks the seeds.
    budget : Budget or None
    bias_std_max, bias_fraction, removal_loss_factor : float
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
        ``std`` (bias spread of the kept round), ``removed`` (indices in the layer as it was
        given, in removal order), ``restored`` (the index put back, or None), ``rounds``,
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
    kept = None  # the previous round: (alive, results, std)
    while True:
        rounds += 1
        fixed[-1] = (W[alive], b[alive])
        spec = MLPSpec((X.shape[1], *(len(bb) for _, bb in fixed), *upper_widths, y.shape[1]), est.activation)
        seeds = stage_seeds(est.seed, stage, int(est.n_students))
        theta0s = [stage_init(spec, fixed, s) for s in seeds]
        results, usable = train_stage(est, X, y, spec, seeds, theta0s, fixed_weights_mask(spec, len(fixed)), budget,
                                      f"retrain with {stage} fixed layer(s) {spec.layer_sizes} (round {rounds})",
                                      f"stage{stage}")
        best = sorted(usable, key=lambda s: s.loss)[:max(2, math.ceil(bias_fraction * len(usable) - 1e-9))]
        std = bias_spread(best, stage - 1)
        losses = sorted(s.loss for s in usable)
        history.append({"neurons": alive.tolist(), "std": std.tolist(), "best_loss": float(losses[0]),
                        "median_loss": float(losses[len(losses) // 2])})
        est._emit("stage", name=f"bias filter round {rounds}: best loss {losses[0]:.2e}, median "
                                f"{losses[len(losses) // 2]:.2e}, bias spread {np.round(std, 3).tolist()}")
        if kept is not None and losses[0] > removal_loss_factor * history[-2]["best_loss"]:
            alive, results, std = kept
            fixed[-1] = (W[alive], b[alive])
            restored = removed.pop()
            est._emit("stage", name=f"bias filter: removing neuron {restored} made the fit worse; put back")
            return results, _filter_report(std, removed, restored, rounds, history)
        worst = int(np.argmax(np.where(np.isin(alive, protected), -np.inf, std)))
        if std[worst] <= bias_std_max or alive[worst] in protected:
            return results, _filter_report(std, removed, None, rounds, history)
        if len(alive) == 1:
            raise ReconstructionError(
                f"layer {stage}: the bias filter removed every reconstructed neuron (last bias spread "
                f"{std[worst]:.3g} > {bias_std_max}; removed {removed})"
            )
        kept = (alive, results, std)
        removed.append(int(alive[worst]))
        alive = np.delete(alive, worst)


def train_stage(est: ExpandAndCluster, X: Array, y: Array, spec: MLPSpec, seeds: Sequence[int],
                theta0s: Sequence[Array], mask: Array, budget: Budget | None, label: str,
                folder_prefix: str) -> tuple[list[TrainResult], list[TrainResult]]:
    """Train N students of ``spec`` from ``theta0s`` with the parameters outside ``mask``
    fixed (put back bit for bit), saved in ``est.retrain_dir / <folder_prefix>-<hash>`` when
    ``est.retrain_dir`` is set, with progress events named ``label``.

    Returns
    -------
    results : list of TrainResult
        One per seed.
    usable : list of TrainResult
        The ones that did not fail.

    Raises
    ------
    ReconstructionError
        Fewer than two usable students.
    """
    options = est.backend_options or {}
    folder = None
    if est.retrain_dir is not None:
        key = run_key(X, y, np.stack(theta0s), mask, sizes=spec.layer_sizes, activation=est.activation,
                      backend=est.backend, budget=budget, options=options)
        folder = Path(est.retrain_dir) / f"{folder_prefix}-{key}"
    est._emit("stage", name=label)
    est._emit("stage", name="students", total=len(seeds), done=0)
    n_done = 0

    def finished(i, res, resumed=False):
        nonlocal n_done
        n_done += 1
        est._emit("student", index=i, result=res, done=n_done, total=len(seeds), resumed=resumed)

    results, loaded = train_students_cached(
        folder, spec, X, y, seeds, backend=est.backend, budget=budget, n_jobs=est.n_jobs, theta0s=theta0s,
        trainable=mask, on_result=finished, **options,
    )
    for i in loaded:
        finished(i, results[i], resumed=True)
    results = [_restore_fixed(r, t, mask, X, y) for r, t in zip(results, theta0s)]
    usable = _usable(results)
    if len(usable) < 2:
        raise ReconstructionError(f"{label}: only {len(usable)} of {len(results)} students usable")
    return results, usable


def _filter_report(std: Array, removed: list[int], restored: int | None, rounds: int, history: list[dict]) -> dict:
    return {"std": std.tolist(), "removed": removed, "restored": restored, "rounds": rounds, "history": history}


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
    bias_std_max : float
        A reconstructed neuron whose retrained bias has a larger standard deviation over
        the students is removed (A.3: 0.1).
    bias_fraction : float in (0, 1]
        That spread is measured over this share of the students, lowest loss first
        (1: all of them, as in A.3).
    removal_loss_factor : float > 1
        A removal after which the best retrained loss is this many times higher is undone
        and ends the filter (``inf``: never, as in A.3).
    fold_tol : float
        See :func:`fold_constant_neurons`.
    reexpand : int >= 0
        Free neurons per student for :func:`ec.reexpand.reexpand_layer` after each bias
        filter (0: off, as in the paper).
    reexpand_budget : Budget, optional
        Per student of the re-expansion (default: ``retrain_budget``).
    **kwargs
        The other parameters of :class:`ec.reconstruct.ExpandAndCluster` (``activation``,
        ``backend``, ``budget``, ``finetune_budget``, ``seed``, ``n_jobs``,
        ``feature_mask`` (first layer), ``progress``, ``backend_options``, ``cut``).

    Attributes
    ----------
    See :func:`fit_layerwise`.
    """

    def __init__(
        self,
        student_hidden_sizes: Sequence[int] = (32, 16),
        n_students: int = 10,
        gamma: float | Sequence[float] = DEEP_GAMMA,
        beta: float | Sequence[float] = DEEP_BETA,
        *,
        retrain_budget: Budget | None = None,
        bias_std_max: float = BIAS_STD_MAX,
        bias_fraction: float = BIAS_FRACTION,
        removal_loss_factor: float = REMOVAL_LOSS_FACTOR,
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
        self.fold_tol = fold_tol
        self.reexpand = reexpand
        self.reexpand_budget = reexpand_budget

    def _check_params(self) -> None:
        super()._check_params()
        if not self.bias_std_max > 0:
            raise ValueError(f"bias_std_max={self.bias_std_max!r}; allowed: > 0")
        if not 0 < self.bias_fraction <= 1:
            raise ValueError(f"bias_fraction={self.bias_fraction!r}; allowed: 0 < bias_fraction <= 1")
        if not self.removal_loss_factor > 1:
            raise ValueError(f"removal_loss_factor={self.removal_loss_factor!r}; allowed: > 1 (inf: never undo)")
        if not 0 <= self.fold_tol < 1:
            raise ValueError(f"fold_tol={self.fold_tol!r}; allowed: 0 <= fold_tol < 1")
        if isinstance(self.reexpand, bool) or not isinstance(self.reexpand, int) or self.reexpand < 0:
            raise ValueError(f"reexpand={self.reexpand!r}; allowed: an int >= 0 (free neurons per student, 0: off)")

    def fit(self, X: Array, y: Array, students: Sequence[TrainResult] | None = None) -> "LayerwiseExpandAndCluster":
        """Train (unless ``students`` are given), then reconstruct layer by layer; see
        :func:`fit_layerwise`."""
        self._check_params()
        return fit_layerwise(self, X, y, students, retrain_budget=self.retrain_budget,
                             bias_std_max=self.bias_std_max, bias_fraction=self.bias_fraction,
                             removal_loss_factor=self.removal_loss_factor, fold_tol=self.fold_tol,
                             reexpand=self.reexpand, reexpand_budget=self.reexpand_budget)


def compare_layers(spec: MLPSpec, theta: Array, teacher_spec: MLPSpec, teacher_theta: Array,
                   X_test: Array | None = None, y_test: Array | None = None) -> tuple[dict, list[dict]]:
    """Layer-by-layer comparison of a deep reconstruction with its teacher.

    Layer ``l`` of the reconstruction is compared in the teacher's coordinates: its input
    weights are mapped through the neuron matching of layer ``l - 1`` (matched neurons, and
    excess neurons within ``DUPLICATE_DEG`` of a teacher neuron as its duplicates; sign
    flips of odd activations included), then matched with :func:`ec.metrics.match_neurons`.

    Returns
    -------
    summary : dict
        ``r``, ``m_hat``, ``excess``, ``missing``: lists with one entry per hidden layer;
        ``layers``: per hidden layer ``r``, ``m_hat``, ``excess``, ``missing``,
        ``mean_angle_deg``, ``max_angle_deg``, ``mean_cos_dist``, ``max_cos_dist``; with
        test data ``test_rmse``.
    rows : list of dict
        The rows of :func:`ec.metrics.match_neurons` of every layer, with ``layer`` (0-based
        hidden layer); ``a_dist`` is meaningful only in the last hidden layer.
    """
    if spec.d_in != teacher_spec.d_in or spec.d_out != teacher_spec.d_out or spec.n_layers != teacher_spec.n_layers:
        raise ValueError(f"layer sizes {spec.layer_sizes} and {teacher_spec.layer_sizes} are not comparable")
    act = get_activation(spec.activation)
    rule = flip_rule(act)
    rec, tea = spec.unpack(theta), teacher_spec.unpack(teacher_theta)
    P = np.eye(spec.d_in)  # reconstructed inputs of the current layer -> teacher inputs
    layers, all_rows = [], []
    for l in range(spec.n_layers - 1):
        (W, b), (A, c) = rec[l], rec[l + 1]
        (Wt, bt), (At, ct) = tea[l], tea[l + 1]
        last = l == spec.n_layers - 2
        r_layer = Layer(W @ P, b, A if last else np.zeros((1, len(b))), c, np.zeros((1, 1)))
        t_layer = Layer(Wt, bt, At if last else np.zeros((1, len(bt))), ct, np.zeros((1, 1)))
        rows, excess, missing = match_neurons(r_layer, t_layer, act)
        P = np.zeros((len(b), len(bt)))
        for row in rows:
            P[row["reconstructed"], row["teacher"]] = rule.s if row["flipped"] else 1.0
        if excess:
            dup_rows, _, _ = match_neurons(_subset(r_layer, excess), t_layer, act)
            for row in dup_rows:
                if row["angle_deg"] <= DUPLICATE_DEG:
                    P[excess[row["reconstructed"]], row["teacher"]] = rule.s if row["flipped"] else 1.0
        stats = {"r": len(bt), "m_hat": len(b), "excess": len(excess), "missing": len(missing)}
        for key in ("angle_deg", "cos_dist"):
            vals = [row[key] for row in rows]
            stats[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
            stats[f"max_{key}"] = float(np.max(vals)) if vals else math.nan
        layers.append(stats)
        all_rows += [{"layer": l, **row} for row in rows]
    summary = {key: [L[key] for L in layers] for key in ("r", "m_hat", "excess", "missing")}
    summary["layers"] = layers
    if X_test is not None and y_test is not None:
        summary["test_rmse"] = rmse(spec.forward(theta, X_test), y_test)
    return summary, all_rows


def pooled_distances(rows: Sequence[dict]) -> dict:
    """Mean / max ``cos_dist`` and ``angle_deg`` over the matched neurons of every layer (rows
    of :func:`compare_layers`), and of ``a_dist`` over the last hidden layer's, where the
    output weights are comparable: the one-number summaries of a deep comparison."""
    last = max((row["layer"] for row in rows), default=0)
    out = {}
    for key, group in (("cos_dist", rows), ("angle_deg", rows), ("a_dist", [r for r in rows if r["layer"] == last])):
        vals = [row[key] for row in group]
        out[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
        out[f"max_{key}"] = float(np.max(vals)) if vals else math.nan
    return out


def _subset(layer: Layer, idx: Sequence[int]) -> Layer:
    idx = np.asarray(idx)
    return Layer(layer.W[idx], layer.b[idx], layer.A[:, idx], layer.c, layer.Theta)
