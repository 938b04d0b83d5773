"""From clusters to one reconstructed layer: winner-take-all collapse, then the affine
correction that even+linear activations need (paper section 5 step 3, appendix A.3)."""

from __future__ import annotations

import itertools

import numpy as np

from ..activations import Activation, get_activation
from ._canonical import Layer, NeuronTable, flip, flip_rule, normalise_scale
from ._hierarchy import LayerClusters, medoid_index

Array = np.ndarray

# Exhaustive search over sign patterns up to this many neurons (2^16 patterns), greedy above.
_EXHAUSTIVE_FLIPS = 16


def collapse(table: NeuronTable, clusters: LayerClusters, activation: str | Activation,
             feature_mask: Array | None = None) -> tuple[Layer, list[dict]]:
    """Winner-take-all: one neuron per kept cluster, from the lowest-loss student in it.

    In each cluster the reference is its medoid (smallest summed distance to the other
    members). The winner is the lowest-loss student with a member within ``beta`` of the
    reference (on the input weights, up to sign where the activation allows it). Its
    members within ``beta`` are its duplicates of the neuron: they are mirrored to the
    reference's orientation where needed (sign-symmetric activations), normalised
    (positive scaling), averaged, and their outgoing weights summed.

    Returns
    -------
    layer : Layer
        ``W`` (m_hat, d), ``b`` (m_hat,), ``A`` (d_out, m_hat); ``c`` and ``Theta`` are zero:
        the output bias and the affine correction come from :func:`correct_affine`.
    info : list of dict
        Per kept cluster: ``cluster``, ``size``, ``winner`` (student index), ``winner_loss``,
        ``duplicates`` (neuron indices of the winner that were merged).
    """
    act = get_activation(activation)
    F, Wm = table.features(act, feature_mask)
    d_out, d = table.A.shape[0], table.W.shape[1]
    W, b, A, info = np.zeros((0, d)), np.zeros(0), np.zeros((d_out, 0)), []
    for c in clusters.kept:
        rows = clusters.members(c)
        ref = rows[medoid_index(F[rows], clusters.metric, clusters.sign_invariant)]
        angle = angles_to(Wm[rows], Wm[ref], clusters.sign_invariant)
        close = rows[angle <= clusters.beta]
        winner = min(set(table.student[close].tolist()), key=lambda j: (table.losses[j], j))
        dup = close[table.student[close] == winner]
        part = table.layer(dup)
        if act.sign_symmetric:
            part = flip(part, F[dup] @ F[ref] < 0, act)
        if act.positive_scaling:
            part = normalise_scale(part)
        w, bias = part.W.mean(axis=0), part.b.mean()
        if act.positive_scaling:  # the mean of unit vectors is shorter than 1
            norm = np.linalg.norm(np.append(w, bias))
            w, bias = w / norm, bias / norm
        W, b = np.vstack([W, w]), np.append(b, bias)
        A = np.hstack([A, part.A.sum(axis=1, keepdims=True)])
        info.append({
            "cluster": int(c),
            "size": int(len(rows)),
            "winner": int(winner),
            "winner_loss": float(table.losses[winner]),
            "duplicates": table.neuron[dup].tolist(),
        })
    return Layer(W, b, A, np.zeros(d_out), np.zeros((d_out, d))), info


def prune_inactive(
    layer: Layer, X: Array, activation: str | Activation, tol: float = 1e-4
) -> tuple[Layer, list[int]]:
    """Fold neurons whose output contribution is constant over the data into the output bias.

    Constant-type (``w ~ 0``) and zero-type (``a ~ 0``) neurons can survive the clustering
    when a few students agree on them; they act as a bias. A neuron goes when the standard
    deviation of ``a sigma(w x + b)`` over ``X`` is at most ``tol`` times the largest
    standard deviation of any neuron's contribution (a teacher neuron's is of that order).

    Returns
    -------
    layer : Layer
        Without those neurons; their mean contribution added to ``c``.
    removed : list of int
        Indices (in the input layer) of the removed neurons.
    """
    act = get_activation(activation)
    H = act.f(np.asarray(X, dtype=np.float64) @ layer.W.T + layer.b)
    contrib_sd = H.std(axis=0) * np.linalg.norm(layer.A, axis=0)
    dead = contrib_sd <= tol * (contrib_sd.max() if len(contrib_sd) else 0.0)
    keep = ~dead
    c = layer.c + H[:, dead].mean(axis=0) @ layer.A[:, dead].T
    pruned = Layer(layer.W[keep], layer.b[keep], layer.A[:, keep], c, layer.Theta)
    return pruned, np.flatnonzero(dead).tolist()


def angles_to(V: Array, v: Array, sign_invariant: bool) -> Array:
    """Angle of every row of ``V`` to ``v``; a zero vector is at ``pi/2`` from everything."""
    norms = np.linalg.norm(V, axis=1) * np.linalg.norm(v)
    cos = np.clip(V @ v / np.where(norms > 0, norms, 1.0), -1.0, 1.0)
    return np.arccos(np.abs(cos) if sign_invariant else cos)


def fit_affine(X: Array, R: Array, linear: bool) -> tuple[Array, Array]:
    """Least-squares ``R ~ X Theta^T + c`` (or ``R ~ c`` when ``linear`` is False).

    Parameters
    ----------
    X : ndarray, shape (n, d)
    R : ndarray, shape (n, d_out)
        The part of the target the reconstructed neurons do not explain.
    linear : bool

    Returns
    -------
    Theta : ndarray, shape (d_out, d)  (zeros when not ``linear``)
    c : ndarray, shape (d_out,)
    """
    R = np.asarray(R, dtype=np.float64).reshape(len(X), -1)
    if not linear:
        return np.zeros((R.shape[1], X.shape[1])), R.mean(axis=0)
    # Centre first: the intercept decouples and the system is better conditioned.
    xm, rm = X.mean(axis=0), R.mean(axis=0)
    coef, *_ = np.linalg.lstsq(X - xm, R - rm, rcond=None)
    Theta = coef.T
    return Theta, rm - Theta @ xm


def best_flips(layer: Layer, activation: str | Activation) -> Array:
    """The set of neurons to mirror so that the layer's linear skip ``Theta`` vanishes.

    Mirroring neuron ``k`` adds ``p a_k w_k^T`` to ``Theta`` (see :func:`ec.cluster.flip`);
    the skip of a correctly reconstructed layer is a sum of such terms (the neurons the
    students learnt with the teacher's opposite sign), so the right subset cancels it.
    Exhaustive search up to 16 neurons; above, a least-squares relaxation rounded to
    {0, 1} and improved by single flips until no flip lowers ``||Theta||``.

    Returns
    -------
    ndarray of bool, shape (m,)
    """
    rule = flip_rule(activation)
    m = len(layer.b)
    if rule is None or rule.p == 0.0 or m == 0:
        return np.zeros(m, dtype=bool)
    C = rule.p * np.einsum("ok,kd->kod", layer.A, layer.W).reshape(m, -1)
    t = layer.Theta.ravel()
    if m <= _EXHAUSTIVE_FLIPS:
        B = np.array(list(itertools.product((0.0, 1.0), repeat=m)))
        cost = np.linalg.norm(t + B @ C, axis=1)
        return B[int(np.argmin(cost))].astype(bool)
    coef, *_ = np.linalg.lstsq(C.T, -t, rcond=None)
    mask = coef > 0.5
    current = np.linalg.norm(t + C[mask].sum(axis=0))
    improved = True
    while improved:
        improved = False
        for k in range(m):
            trial = mask.copy()
            trial[k] = ~trial[k]
            cost = np.linalg.norm(t + C[trial].sum(axis=0))
            if cost < current:
                mask, current, improved = trial, cost, True
    return mask


def correct_affine(layer: Layer, X: Array, y: Array, activation: str | Activation) -> tuple[Layer, dict]:
    """Output bias (and, for even+linear activations, the affine skip) by least squares,
    then the sign pattern that removes the skip.

    Parameters
    ----------
    layer : Layer
        Collapsed hidden layer with winner-take-all output weights; ``c`` and ``Theta`` are
        ignored and re-estimated.
    X : ndarray, shape (n, d)
        Inputs of the layer.
    y : ndarray, shape (n, d_out)
        Targets (teacher outputs, which zero-loss students reproduce).

    Returns
    -------
    layer : Layer
        With ``Theta`` as small as sign flips make it, and the least-squares output bias.
    info : dict
        ``flipped`` (indices mirrored: the flips that cancel the skip best, kept only when
        they lower the loss of the network without skip), ``skip_norm_before`` /
        ``skip_norm_after`` (Frobenius norm of ``Theta`` before and after the flips; the skip
        is then dropped, because the reconstructed network has no input-to-output connection).
    """
    act = get_activation(activation)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    H = act.f(X @ layer.W.T + layer.b)
    Theta, c = fit_affine(X, y - H @ layer.A.T, act.even_linear)
    fitted = Layer(layer.W, layer.b, layer.A, c, Theta)
    mask = best_flips(fitted, act)
    kept, loss = _drop_skip(fitted, X, y, act)
    if mask.any():
        # the flips cancel the fitted skip, but for students far from zero loss the skip
        # is partly noise: keep them only when the network without skip fits better
        mirrored = flip(fitted, mask, act)
        flipped, flipped_loss = _drop_skip(mirrored, X, y, act)
        if flipped_loss < loss:
            kept, fitted = flipped, mirrored
        else:
            mask = np.zeros_like(mask)
    info = {
        "flipped": np.flatnonzero(mask).tolist(),
        "skip_norm_before": float(np.linalg.norm(Theta)),
        "skip_norm_after": float(np.linalg.norm(fitted.Theta)),
    }
    return kept, info


def _drop_skip(layer: Layer, X: Array, y: Array, act: Activation) -> tuple[Layer, float]:
    """The layer without its skip, output bias refit (the mean remaining residual); its MSE."""
    H = act.f(X @ layer.W.T + layer.b)
    _, c = fit_affine(X, y - H @ layer.A.T, False)
    r = H @ layer.A.T + c - y
    return Layer(layer.W, layer.b, layer.A, c, np.zeros_like(layer.Theta)), float(np.mean(r * r))
