"""Fused numba kernels for networks with one hidden layer (the paper's students).

Data are stored transposed, ``XT`` of shape ``(d, N)`` and ``yT`` of shape ``(K, N)``, so
that every inner loop runs over samples: contiguous and vectorisable whatever the width.

* :func:`loss_grad` makes one pass over the data in tiles of ``_TILE`` samples, one
  accumulator row per tile, summed in a fixed order (the result does not depend on the
  number of threads).
* :func:`hessian` builds the Jacobian ``J^T`` block by block (``(P, K*B)``), accumulates
  ``J^T J`` with BLAS (numpy's ``A @ A.T`` calls ``dsyrk``) and adds the residual-weighted
  second derivatives, which for one hidden layer are block-sparse: a ``(d+1)x(d+1)`` block
  per hidden neuron and the coupling between its input weights and its output weights.

The kernels are serial and release the GIL; :func:`ec.train.flow._threads.split` runs
them on ``numba.get_num_threads()`` threads (1 inside ``train_students`` workers). Plain
threads rather than ``prange``: no OpenMP threads spinning while BLAS works, and a third
of the compile time.

Parameter layout (:class:`ec.mlp.MLPSpec`): ``W1 (m, d)``, ``b1 (m)``, ``W2 (K, m)``, ``b2 (K)``.
"""

from __future__ import annotations

import time

import numba as nb
import numpy as np

from ._activations_nb import CODES, fdd
from ._threads import split

Array = np.ndarray
_TILE = 512  # samples per tile of the gradient kernel
_BLOCK_BYTES = 4 * 2**20  # one Jacobian block of the Hessian: stays in cache for dsyrk ...
_MIN_BLOCK = 512  # ... unless that leaves dsyrk too few samples per update of the P x P result
_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


def prepare(X: Array, y: Array) -> tuple[Array, Array]:
    """``(XT, yT)``: contiguous float64 ``(d, N)`` and ``(K, N)`` copies of the data."""
    return np.ascontiguousarray(X.T, dtype=np.float64), np.ascontiguousarray(y.T, dtype=np.float64)


def _layers(spec, theta):
    (W1, b1), (W2, b2) = spec.unpack(theta)
    return np.ascontiguousarray(W1), b1.copy(), np.ascontiguousarray(W2), b2.copy(), CODES[spec.activation]


@nb.njit(inline="always", **_JIT)
def _hidden(XT, n0, T, W1, b1, j, z):
    """Pre-activation of hidden neuron ``j`` for samples ``n0 .. n0+T`` into ``z[:T]``."""
    for t in range(T):
        z[t] = b1[j]
    for i in range(XT.shape[0]):
        w = W1[j, i]
        x = XT[i, n0 : n0 + T]
        for t in range(T):
            z[t] += w * x[t]


@nb.njit(inline="always", **_JIT)
def _dot(a, b, T):
    s = 0.0
    for t in range(T):
        s += a[t] * b[t]
    return s


@nb.njit(**_JIT)
def _loss_grad_tiles(XT, yT, W1, b1, W2, b2, code, tile0, tile1, acc):
    """Row ``tile`` of ``acc`` (shape ``(n_tiles, P + 1)``) gets the unscaled gradient and,
    in its last entry, the sum of squared residuals of that tile's samples."""
    d, N = XT.shape
    K, m = W2.shape
    oW2, ob2 = m * d + m, m * d + m + K * m
    P = ob2 + K
    F = np.empty((m, _TILE))
    D = np.empty((m, _TILE))
    R = np.empty((K, _TILE))
    z = np.empty(_TILE)  # separate buffers: aliased arguments stop LLVM from vectorising
    unused = np.empty(_TILE)
    delta = np.empty(_TILE)
    for tile in range(tile0, tile1):
        n0 = tile * _TILE
        T = min(N, n0 + _TILE) - n0
        a = acc[tile]
        for j in range(m):
            _hidden(XT, n0, T, W1, b1, j, z)
            fdd(code, z[:T], F[j], D[j], unused, False)
        for k in range(K):
            r = R[k]
            y = yT[k, n0 : n0 + T]
            for t in range(T):
                r[t] = b2[k] - y[t]
            for j in range(m):
                w = W2[k, j]
                f = F[j]
                for t in range(T):
                    r[t] += w * f[t]
            s2 = 0.0
            s1 = 0.0
            for t in range(T):
                s2 += r[t] * r[t]
                s1 += r[t]
            a[P] += s2
            a[ob2 + k] += s1
            for j in range(m):
                a[oW2 + k * m + j] += _dot(r, F[j], T)
        for j in range(m):
            for t in range(T):
                delta[t] = 0.0
            for k in range(K):
                w = W2[k, j]
                r = R[k]
                for t in range(T):
                    delta[t] += w * r[t]
            dj = D[j]
            s = 0.0
            for t in range(T):
                delta[t] *= dj[t]
                s += delta[t]
            a[m * d + j] += s
            for i in range(d):
                a[j * d + i] += _dot(delta, XT[i, n0 : n0 + T], T)


def loss_grad(spec, theta: Array, data: tuple[Array, Array]) -> tuple[float, Array]:
    """Loss and gradient (shape ``(n_params,)``) of a one-hidden-layer ``spec``."""
    XT, yT = data
    layers = _layers(spec, theta)
    n_tiles = -(-XT.shape[1] // _TILE)
    acc = np.zeros((n_tiles, spec.n_params + 1))
    split(lambda a, b: _loss_grad_tiles(XT, yT, *layers, a, b, acc), n_tiles)
    out = acc.sum(axis=0)  # fixed order: the same result for any thread count
    scale = 1.0 / yT.size
    return float(out[-1] * scale), out[:-1] * (2.0 * scale)


@nb.njit(**_JIT)
def _activate(XT, W1, b1, code, n0, T, j0, j1, F, D, S):
    """sigma, sigma', sigma'' of hidden neurons ``j0 .. j1`` for samples ``n0 .. n0+T``."""
    z = np.empty(T)
    for j in range(j0, j1):
        _hidden(XT, n0, T, W1, b1, j, z)
        fdd(code, z, F[j], D[j], S[j], True)


@nb.njit(**_JIT)
def _residuals(yT, W2, b2, n0, T, F, R, Jt):
    """Residuals ``R (K, T)`` and the output-bias rows of ``Jt``."""
    K, m = W2.shape
    ob2 = Jt.shape[0] - K
    for k in range(K):
        r = R[k]
        for t in range(T):
            r[t] = b2[k] - yT[k, n0 + t]
        for j in range(m):
            w = W2[k, j]
            f = F[j]
            for t in range(T):
                r[t] += w * f[t]
        for kk in range(K):
            row = Jt[ob2 + kk]
            val = 1.0 if kk == k else 0.0
            for t in range(T):
                row[k * T + t] = val


@nb.njit(**_JIT)
def _fill(XT, W2, n0, T, F, D, S, R, j0, j1, Jt, Rs):
    """Rows of ``Jt`` of hidden neurons ``j0 .. j1`` (input weights, bias, output weights)
    and their residual-weighted second derivatives, added to ``Rs`` (upper triangle).

    Per neuron ``j`` with ``x~ = (x, 1)``: the block ``sum_t w_t x~ x~^T`` on its input
    weights and bias (``w`` = adjoint of its pre-activation times sigma''), and
    ``sum_t r_kt sigma'_jt x~`` coupling them to its output weight ``W2[k, j]``.
    """
    d = XT.shape[0]
    K, m = W2.shape
    ob1, oW2 = m * d, m * d + m
    w = np.empty(T)
    v = np.empty(T)
    for j in range(j0, j1):
        w[:] = 0.0
        dj = D[j]
        for k in range(K):
            c = k * T
            a = W2[k, j]
            rk = R[k]
            for t in range(T):
                w[t] += rk[t] * a
                v[t] = a * dj[t]
            row = Jt[ob1 + j]
            for t in range(T):
                row[c + t] = v[t]
            for i in range(d):
                row = Jt[j * d + i]
                x = XT[i, n0 : n0 + T]
                for t in range(T):
                    row[c + t] = v[t] * x[t]
            for kk in range(K):
                row = Jt[oW2 + kk * m + j]
                if kk == k:
                    f = F[j]
                    for t in range(T):
                        row[c + t] = f[t]
                else:
                    for t in range(T):
                        row[c + t] = 0.0
            col = oW2 + k * m + j
            for t in range(T):
                v[t] = rk[t] * dj[t]
            for i in range(d):
                Rs[j * d + i, col] += _dot(v, XT[i, n0 : n0 + T], T)
            s = 0.0
            for t in range(T):
                s += v[t]
            Rs[ob1 + j, col] += s
        sj = S[j]
        for t in range(T):
            w[t] *= sj[t]
        for i1 in range(d + 1):
            if i1 < d:
                x = XT[i1, n0 : n0 + T]
                for t in range(T):
                    v[t] = w[t] * x[t]
            else:
                v[:] = w
            r1 = j * d + i1 if i1 < d else ob1 + j
            for i2 in range(i1, d):
                Rs[r1, j * d + i2] += _dot(v, XT[i2, n0 : n0 + T], T)
            s = 0.0
            for t in range(T):
                s += v[t]
            Rs[r1, ob1 + j] += s


def hessian(spec, theta: Array, data: tuple[Array, Array], timings: dict | None = None) -> Array:
    """Exact Hessian ``(n_params, n_params)`` of a one-hidden-layer ``spec``.

    ``timings``, if given, gets the seconds spent in the ``J^T J`` products added under
    ``"syrk"``, measured with ``timings["clock"]`` (default ``time.perf_counter``; for the
    benchmark).
    """
    XT, yT = data
    K, N = yT.shape
    m = spec.hidden_sizes[0]
    P = spec.n_params
    W1, b1, W2, b2, code = _layers(spec, theta)
    clock = (timings or {}).get("clock", time.perf_counter)
    B = min(N, max(_MIN_BLOCK, _BLOCK_BYTES // (8 * P * K)))
    G = np.zeros((P, P))  # J^T J
    GB = np.empty((P, P))  # one block's J^T J
    Rs = np.zeros((P, P))  # residual part, upper triangle
    F, D, S, R = np.empty((m, B)), np.empty((m, B)), np.empty((m, B)), np.empty((K, B))
    Jt = np.empty((P, K * B))
    for n0 in range(0, N, B):
        T = min(B, N - n0)
        if T != B:
            Jt = np.empty((P, K * T))
        split(lambda a, b: _activate(XT, W1, b1, code, n0, T, a, b, F, D, S), m)
        _residuals(yT, W2, b2, n0, T, F, R, Jt)
        split(lambda a, b: _fill(XT, W2, n0, T, F, D, S, R, a, b, Jt, Rs), m)
        t0 = clock()
        np.matmul(Jt, Jt.T, out=GB)  # scipy's dsyrk(beta=1) was 5-20x slower here
        G += GB
        if timings is not None:
            timings["syrk"] = timings.get("syrk", 0.0) + clock() - t0
    Rs += np.triu(Rs, 1).T
    H = G + Rs
    H *= 2.0 / (N * K)
    return H
