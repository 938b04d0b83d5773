"""Symmetry reduction: finish a slow student on the smaller network it is close to.

Near a zero-loss point an overparameterised one-hidden-layer student typically holds
neurons that only *approach* an exact symmetry: near-duplicates converging onto a teacher
neuron (from both sides, outgoing weights of mixed signs), cancelling pairs, neurons whose
outgoing weight decays to zero, and nearly constant neurons whose input weights shrink to
zero. Along these directions the loss is quartic or flatter, so both the gradient flow and
Newton's method only converge algebraically or linearly (the slow tails that keep a student
at loss 1e-10 for minutes). Şimşek et al. (2021) describe the zero-loss manifold these
configurations approach: the expansions of a smaller network.

:func:`reduce_shallow` maps the student to that smaller network — merge each group of
near-duplicate neurons into one (first-moment matching of the outgoing weights: the merged
neuron is the ``a``-weighted mean of the group), replace each group of parallel neurons (one
hyperplane direction, several scales and biases, imitating one neuron) by the single neuron
along that direction that best fits their summed output, drop groups whose contribution
barely varies over the data (folding its mean into the output bias) — where the minimum is
typically non-degenerate, so Newton converges quadratically. :meth:`Reduction.expand` maps
the reduced parameters back to the original width *exactly* (duplicates share ``[w; b]``,
their outgoing weights split in the original proportions; dropped neurons get outgoing
weight 0): the same network function, hence a zero-loss point of the original student when
the reduced network reaches zero loss. :func:`reduction_finish` tries a ladder of tolerances,
most aggressive first, and keeps a result only when the full student's loss improves (the
:class:`~ec.train.flow.objective.Objective` keeps the best point). :func:`reduce_network`
does the same for every hidden layer of a deep network in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import least_squares
from scipy.spatial.distance import pdist, squareform

from ...activations import get_activation
from ...mlp import MLPSpec
from .kernels import MSE
from .newton import second_order
from .objective import Objective, Stop

Array = np.ndarray
# (mode, merge_tol, drop_tol) of reduce_shallow, most aggressive first: when a rung reduces
# too much, Newton on the reduced network stalls and the next, milder rung is tried.
LADDER = (
    ("parallel", 0.05, 1e-2),
    ("duplicates", 0.1, 3e-2),
    ("parallel", 0.01, 1e-3),
    ("duplicates", 0.03, 1e-2),
    ("duplicates", 0.01, 1e-3),
    ("duplicates", 1e-3, 1e-5),
)
_STAT_SAMPLES = 4096  # samples used to measure how much each neuron's output varies
MAX_REDUCED_PARAMS = 600  # larger reduced networks would make each Newton step too costly
DEEP_ROUND = 10  # Levenberg-Marquardt steps on a reduced deep network between progress checks


@dataclass(frozen=True)
class Reduction:
    """A one-hidden-layer network reduced by merging and dropping neurons.

    Attributes
    ----------
    spec : MLPSpec
        The original network.
    small_spec : MLPSpec
        The reduced network (``len(groups)`` hidden neurons).
    small_theta : ndarray of float64, shape (small_spec.n_params,)
        Reduced parameters that approximate the original function.
    groups : tuple of ndarray of int
        For each reduced neuron, the original neurons that take its ``[w; b]`` on expansion
        (a merged duplicate group; the host alone for a refit parallel group, whose other
        members keep their own ``[w; b]`` with outgoing weight 0).
    weights : tuple of ndarray of float64
        Their shares of the reduced neuron's outgoing weight (each sums to 1).
    theta : ndarray of float64, shape (spec.n_params,)
        The original parameters (dropped neurons keep their input weights on expansion).
    """

    spec: MLPSpec
    small_spec: MLPSpec
    small_theta: Array
    groups: tuple
    weights: tuple
    theta: Array

    def expand(self, small_theta: Array) -> Array:
        """Original-width parameters with exactly the function of ``small_theta``.

        Parameters
        ----------
        small_theta : ndarray of float64, shape (small_spec.n_params,)

        Returns
        -------
        theta : ndarray of float64, shape (spec.n_params,)
        """
        W, b = (np.array(p) for p in self.spec.unpack(self.theta)[0])
        (Ws, bs), (As, cs) = self.small_spec.unpack(small_theta)
        A = np.zeros((self.spec.d_out, len(b)))  # dropped neurons: outgoing weight 0
        for j, (members, share) in enumerate(zip(self.groups, self.weights)):
            W[members], b[members] = Ws[j], bs[j]
            A[:, members] = As[:, [j]] * share
        return self.spec.pack([(W, b), (A, cs)])


@dataclass(frozen=True)
class NetworkReduction:
    """Every hidden layer of a network reduced in turn, each step a :class:`Reduction` of the
    sub-network made of one hidden layer and its outgoing layer, on that layer's inputs.

    Attributes
    ----------
    spec : MLPSpec
        The original network.
    small_spec : MLPSpec
    small_theta : ndarray of float64, shape (small_spec.n_params,)
    steps : tuple of (int, Reduction, MLPSpec, MLPSpec)
        Hidden-layer index, its reduction, and the network before and after that step.
    """

    spec: MLPSpec
    small_spec: MLPSpec
    small_theta: Array
    steps: tuple

    def expand(self, small_theta: Array) -> Array:
        """As :meth:`Reduction.expand`, undoing the layer steps last first."""
        theta = np.asarray(small_theta, dtype=np.float64)
        for layer, red, before, after in reversed(self.steps):
            layers = [(np.array(W), np.array(b)) for W, b in after.unpack(theta)]
            sub = red.expand(red.small_spec.pack(layers[layer : layer + 2]))
            layers[layer : layer + 2] = red.spec.unpack(sub)
            theta = before.pack(layers)
        return theta


def reduce_network(
    spec: MLPSpec, theta: Array, X: Array, y: Array, merge_tol: float, drop_tol: float, mode: str = "duplicates"
) -> NetworkReduction | None:
    """:func:`reduce_shallow` applied to each hidden layer in turn, first to last.

    Each layer is reduced on its inputs in the network reduced so far, so the steps compose
    and :meth:`NetworkReduction.expand` undoes them exactly, last first. Parameters as for
    :func:`reduce_shallow`; ``drop_tol`` is relative to the spread of the next layer's
    pre-activations (of ``y`` for the last hidden layer).

    Returns
    -------
    NetworkReduction or None
        None when no layer changes.
    """
    act = get_activation(spec.activation)
    steps, current, params = [], spec, np.asarray(theta, dtype=np.float64)
    h = np.asarray(X, dtype=np.float64)[_stat_rows(len(X))]  # reduce_shallow uses no more
    for layer in range(spec.n_layers - 1):
        layers = current.unpack(params)
        (W, b), (W_next, b_next) = layers[layer], layers[layer + 1]
        sub_spec = MLPSpec((h.shape[1], len(b), len(b_next)), spec.activation)
        sub_theta = sub_spec.pack([(W, b), (W_next, b_next)])
        target = y if layer == spec.n_layers - 2 else sub_spec.forward(sub_theta, h)
        red = reduce_shallow(sub_spec, sub_theta, h, target, merge_tol, drop_tol, mode)
        if red is not None:
            sizes = list(current.hidden_sizes)
            sizes[layer] = red.small_spec.hidden_sizes[0]
            reduced = current.with_hidden_sizes(sizes)
            new_layers = list(layers)
            new_layers[layer : layer + 2] = red.small_spec.unpack(red.small_theta)
            steps.append((layer, red, current, reduced))
            current, params = reduced, reduced.pack(new_layers)
        if layer < spec.n_layers - 2:
            W, b = current.unpack(params)[layer]
            h = act.f(h @ W.T + b)
    if not steps:
        return None
    return NetworkReduction(spec, current, params, tuple(steps))


def reduce_shallow(
    spec: MLPSpec, theta: Array, X: Array, y: Array, merge_tol: float, drop_tol: float, mode: str = "duplicates"
) -> Reduction | None:
    """Merge groups of neurons into one and drop nearly constant groups.

    Parameters
    ----------
    spec : MLPSpec
        One hidden layer.
    theta : ndarray of float64, shape (spec.n_params,)
    X : ndarray of float64, shape (N, d_in)
    y : ndarray of float64, shape (N, d_out) or (N,)
    merge_tol : float
        ``mode="duplicates"``: neurons whose ``[w; b]`` differ by at most ``merge_tol``
        times the larger norm are chained (single linkage) into one group, merged into their
        ``a``-weighted mean. ``mode="parallel"``: neurons whose input weight vectors make an
        angle of at most ``merge_tol`` radians (up to sign) are chained into one group, which
        is replaced by the one neuron along that direction that best fits the group's summed
        output (a 1-D least-squares fit): several neurons on one hyperplane direction that
        together imitate a single one, a trap the gradient flow leaves only slowly if at all.
    drop_tol : float
        A group whose summed output has a standard deviation over the data of at most
        ``drop_tol * std(y)`` is dropped, its mean folded into the output bias.
    mode : {"duplicates", "parallel"}

    Returns
    -------
    Reduction or None
        None when nothing would be merged or dropped, or when nothing would remain.
    """
    if len(spec.hidden_sizes) != 1:
        raise ValueError(f"reduce_shallow needs one hidden layer, got layer sizes {spec.layer_sizes}")
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}; allowed: {', '.join(_MODES)}")
    act = get_activation(spec.activation)
    (W, b), (A, c) = spec.unpack(theta)
    m = len(b)
    rows = _stat_rows(len(X))
    H = act.f(X[rows] @ W.T + b)  # (n, m)
    scale = float(np.std(y)) or 1.0
    V = np.column_stack([W, b])
    labels = _MODES[mode](V, merge_tol) if m > 1 else np.ones(1, dtype=int)
    hosts, shares, neurons, new_c = [], [], [], np.array(c, dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out = H[:, members] @ A[:, members].T  # (n, d_out): the group's contribution
        spread = out.std(axis=0)
        if np.linalg.norm(spread) <= drop_tol * scale:
            new_c += out.mean(axis=0)
        elif len(members) == 1 or mode == "duplicates":
            total = A[:, members].sum(axis=1)
            share = (total @ A[:, members]) / (total @ total) if total @ total > 0 else np.full(len(members), 1.0 / len(members))
            hosts.append(members)
            shares.append(share)
            neurons.append((share @ V[members, :-1], share @ V[members, -1], total))
        else:
            host = members[np.argmax([np.linalg.norm(A[:, k]) * H[:, k].std() for k in members])]
            w, bias, a, offset = _fit_along(act, X[rows], out, W[host], V[members])
            new_c += offset
            hosts.append(np.array([host]))  # the other members keep their [w; b], get a = 0
            shares.append(np.ones(1))
            neurons.append((w, bias, a))
    if not hosts or len(hosts) == m:  # nothing merged or dropped
        return None
    Ws = np.array([n[0] for n in neurons])
    bs = np.array([n[1] for n in neurons])
    As = np.column_stack([n[2] for n in neurons])
    small = spec.with_hidden_sizes((len(hosts),))
    return Reduction(spec, small, small.pack([(Ws, bs), (As, new_c)]), tuple(hosts), tuple(shares), np.array(theta))


def _stat_rows(n: int) -> Array:
    """Evenly spread rows (at most ``_STAT_SAMPLES``) on which neuron outputs are measured."""
    return np.linspace(0, n - 1, min(n, _STAT_SAMPLES)).astype(int)


def _duplicate_groups(V: Array, tol: float) -> Array:
    norms = np.linalg.norm(V, axis=1)
    larger = np.maximum.outer(norms, norms)[np.triu_indices(len(V), 1)]  # pdist's pair order
    rel = pdist(V) / np.maximum(larger, 1e-300)  # |v_i - v_j| / max(|v_i|, |v_j|)
    return fcluster(linkage(rel, "single"), tol, criterion="distance")


def _parallel_groups(V: Array, tol: float) -> Array:
    W = V[:, :-1]
    unit = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-300)
    angle = np.arccos(np.clip(np.abs(unit @ unit.T), 0.0, 1.0))
    return fcluster(linkage(squareform(angle, checks=False), "single"), tol, criterion="distance")


_MODES = {"duplicates": _duplicate_groups, "parallel": _parallel_groups}


def _fit_along(act, X: Array, target: Array, direction: Array, starts: Array):
    """One neuron ``a sigma(s u.x + t) + offset`` along ``u = direction / |direction|`` that
    best fits ``target`` (n, d_out) in least squares; ``a`` and ``offset`` are solved linearly
    for each ``(s, t)`` (variable projection), each member of the group a starting point."""
    u = direction / np.linalg.norm(direction)
    z = X @ u

    def solve(p):
        B = np.column_stack([act.f(p[0] * z + p[1]), np.ones_like(z)])
        coef = np.linalg.lstsq(B, target, rcond=None)[0]
        return coef, B @ coef - target

    best = None
    for v in starts:
        s0 = float(v[:-1] @ u)
        fit = least_squares(lambda p: solve(p)[1].ravel(), np.array([s0, v[-1]]), method="lm", max_nfev=200)
        if best is None or fit.cost < best.cost:
            best = fit
    (a, offset), _ = solve(best.x)
    return best.x[0] * u, best.x[1], a, offset


def _deep_finish(small: Objective, start_loss: float, max_steps: int, deadline: float, now) -> int:
    """Levenberg-Marquardt on a reduced deep network, as for deep students (an indefinite
    Hessian stalls Newton, and a Gauss-Newton step costs a fraction of a Hessian), in rounds
    of :data:`DEEP_ROUND` steps. A round that gains less than 10x while the loss is still
    above the student's ends the try: near an exact reduced network LM converges
    quadratically (3-2-2-1 students: 1e-12 -> 1e-31 in under 30 steps), so a reduced network
    that is not one (most rungs, for students far from a zero-loss point) costs one round,
    not ``max_steps``. Returns the steps done."""
    done = 0
    while done < max_steps and deadline > now():
        before = small.best_loss
        _, n, reason = second_order(small, small.best_u, min(DEEP_ROUND, max_steps - done), deadline - now(), "lm")
        done += n
        if reason != "budget" or n == 0 or (small.best_loss > 0.1 * before and small.best_loss > start_loss):
            break
    return done


def reduction_finish(obj: Objective, max_time: float, steps_per_try: int = 200) -> tuple[Array, int, str]:
    """Try each rung of :data:`LADDER` from ``obj.best_u``; Newton on each reduced network.

    Every expanded result is evaluated through ``obj`` (so the best point is kept and the
    stopping rules apply). A rung that improves the student's loss by more than a factor
    of 10 starts the ladder again from the new best point; it ends when no rung improves.

    Parameters
    ----------
    obj : Objective
        The full student, all parameters free (any number of hidden layers).
    max_time : float
        Seconds (on ``obj``'s clock) for all rungs together.
    steps_per_try : int
        Newton steps per rung at most.

    Returns
    -------
    u : ndarray of float64, shape (obj.n_free,)
        The best point (``obj.best_u``).
    steps : int
        Newton steps done on reduced networks.
    reason : str
        ``"min_loss"``, ``"min_grad"``, ``"budget"`` or ``"converged"`` (no rung improves).
    """
    spec, X, y = obj.mse.spec, obj.mse.X, obj.mse.y
    deadline = obj.deadline = obj.now() + max_time
    steps, improved = 0, True
    try:
        while improved:  # a reduced minimum may itself reduce further: climb the ladder again
            improved = False
            for mode, merge_tol, drop_tol in LADDER:
                left = deadline - obj.now()
                if left <= 0:
                    return obj.best_u, steps, "budget"
                start_loss = obj.best_loss
                red = reduce_network(spec, obj.theta(obj.best_u), X, y, merge_tol, drop_tol, mode)
                if red is None or red.small_spec.n_params > MAX_REDUCED_PARAMS:
                    continue
                small = Objective(MSE(red.small_spec, X, y), red.small_theta, None, obj.budget, obj.clock)
                if len(red.small_spec.hidden_sizes) == 1:
                    _, n, _ = second_order(small, small.best_u, steps_per_try, left, "newton")
                else:
                    n = _deep_finish(small, start_loss, steps_per_try, deadline, obj.now)
                steps += n
                if np.isfinite(small.best_loss) and small.best_loss < start_loss:
                    obj.loss_grad(red.expand(small.theta(small.best_u)))
                if obj.best_loss < 0.1 * start_loss:
                    improved = True
                    break
    except Stop as stop:
        return obj.best_u, steps, stop.reason
    return obj.best_u, steps, "converged"
