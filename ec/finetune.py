"""Fine-tuning a reconstructed network (appendix A.3): the biases first with every weight
vector fixed, then every parameter; and the two ways a reconstruction sheds neurons that do
nothing: folding neurons whose contribution is constant over the data into the next bias,
and dropping neurons whose outgoing weights are exactly zero."""

from __future__ import annotations

import numpy as np

from .activations import get_activation
from .cluster import Layer, prune_inactive
from .mlp import MLPSpec, mse
from .train import Budget, train_students

Array = np.ndarray

# Biases only (m_hat + d_out parameters): a Newton trust-region solve, no gradient flow.
BIAS_BUDGET = Budget(ode_steps=0, ode_time=0.0, optim_steps=200, optim_time=30.0)
# Whole reconstructed network: it starts next to a minimum, so the second-order phase
# does the work; a short gradient flow first helps when the collapse is less accurate.
FINETUNE_BUDGET = Budget(ode_steps=500, ode_time=30.0, optim_steps=2000, optim_time=120.0)
# A neuron whose contribution to the next layer varies less than this fraction of the
# layer's largest contribution is a bias (the tolerance of ec.cluster.prune_inactive).
FOLD_TOL = 1e-4
# Conjugate-gradient iterations per gn step when it finishes a reconstruction (the trainer's
# default, 20, is for students far from a minimum): near one, truncated steps converge only
# linearly on smooth activations (g on MNIST: MSE 1e-8 after 200 steps with 20, round-off
# after 50 with 150; relu reaches round-off with either, docs/trainer.md).
GN_FINISH_CG_ITER = 150


def bias_mask(spec: MLPSpec) -> Array:
    """Trainable mask of every bias (weights fixed), appendix A.3."""
    mask = np.zeros(spec.n_params, dtype=bool)
    for _, b0, end in spec.offsets():
        mask[b0:end] = True
    return mask


def finetune(spec: MLPSpec, X: Array, y: Array, theta: Array, budget: Budget, trainable: Array | None,
             backend: str, seed: int, backend_options: dict | None = None) -> tuple[Array, float]:
    """One training run from ``theta`` (only the ``trainable`` parameters move).

    Returns
    -------
    theta : ndarray of float64
        The trained parameters, or ``theta`` itself when training failed or did worse.
    loss : float
        The training MSE of the returned parameters.
    """
    before = mse(spec, theta, X, y)
    options = dict(backend_options or {})
    if backend == "gn":
        options.setdefault("cg_max_iter", GN_FINISH_CG_ITER)
    res = train_students(
        spec, X, y, [int(seed)], backend=backend, budget=budget, n_jobs=1,
        theta0s=[theta], trainable=trainable, **options,
    )[0]
    if res.failed or not res.loss < before:
        return theta, before
    return res.params, mse(spec, res.params, X, y)


def drop_dead_neurons(spec: MLPSpec, theta: Array) -> tuple[MLPSpec, Array]:
    """Remove hidden neurons of a one-hidden-layer network whose outgoing weights are exactly
    zero (the flow trainer's symmetry reduction leaves such neurons when it finds the network
    smaller than it is): the network function is unchanged, bit for bit."""
    (W, b), (A, c) = spec.unpack(theta)
    alive = np.any(A != 0, axis=0)
    if alive.all() or not alive.any():
        return spec, theta
    small = spec.with_hidden_sizes((int(alive.sum()),))
    return small, small.pack([(W[alive], b[alive]), (A[:, alive], c)])


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
