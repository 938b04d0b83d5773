"""Loss, gradient and exact Hessian of an MLP of any depth, with the Hessian in Kronecker form.

Layer ``l`` maps its input ``h_l`` (``n_l`` wide, ``h_0 = X``) to ``z_l = W_l h_l + b_l``
(``m_l`` wide); ``h_{l+1} = sigma(z_l)``; the last ``z`` is the output. With
``x_l = [h_l, 1]`` every parameter derivative of a pre-activation factorises,
``dz_k / dW_l[j, a] = G_kl[:, j] x_l[a]`` with ``G_kl = dz_k / dz_l``, so every block of the
Hessian of ``psi = 1/2 sum_n |f(x_n) - y_n|^2`` is a sum over samples of Kronecker products:

* Gauss-Newton and activation terms, block ``(l, l')``, ``l' <= l``:
  ``sum_n (S_l G_ll')_n (x) x_l x_l'^T`` where ``S_l`` is the curvature of ``psi`` seen from
  ``z_l`` along the network, ``S_out = I`` and
  ``S_l = G_{l+1,l}^T S_{l+1} G_{l+1,l} + diag(a_{l+1} sigma''(z_l))``
  (``a_{l+1}`` the adjoint of ``h_{l+1}``): the second-order backward pass.
* The products ``W_l h_l``, block ``(l, l')``, ``l' < l``:
  ``sum_n g_l (x) (dh_l / dz_l') (x) x_l'`` with ``g_l`` the adjoint of ``z_l``.

Each is one matrix product over the samples (BLAS), ``N P_l P_l'`` flops, the cost of
``J^T J`` itself; no forward Jacobian of shape ``(N, m, P)`` is ever built.
:func:`gauss_newton` gives the Gauss-Newton part alone, ``J^T J``, from the Jacobian built
in blocks of samples (Levenberg-Marquardt needs it, not the indefinite rest). Blocks live in
an "augmented" order (``(j, a)`` with ``a = n_l`` the bias) and are permuted to
:class:`ec.mlp.MLPSpec`'s layout (weights, then biases) once.
"""

from __future__ import annotations

import numpy as np

from ._activations_nb import CODES, fdd

Array = np.ndarray
_BLOCK_BYTES = 64 * 2**20  # bounds each per-block temporary of the Hessian


def _activate(code: int, z: Array, second: bool):
    """``sigma(z), sigma'(z)`` and (if ``second``) ``sigma''(z)``, each shaped like ``z``."""
    flat = np.ascontiguousarray(z).ravel()
    f, df = np.empty_like(flat), np.empty_like(flat)
    d2f = np.empty_like(flat) if second else df
    fdd(code, flat, f, df, d2f, second)
    return f.reshape(z.shape), df.reshape(z.shape), (d2f.reshape(z.shape) if second else None)


def _forward(spec, layers, X, second=False):
    """``zs`` (pre-activations of every layer), ``hs`` (inputs of every layer), ``dfs`` and
    ``d2fs`` (``sigma'``, ``sigma''`` of every hidden pre-activation)."""
    code = CODES[spec.activation]
    zs, hs, dfs, d2fs = [], [X], [], []
    for l, (W, b) in enumerate(layers):
        zs.append(hs[-1] @ W.T + b)
        if l < len(layers) - 1:
            f, df, d2f = _activate(code, zs[-1], second)
            hs.append(f)
            dfs.append(df)
            d2fs.append(d2f)
    return zs, hs, dfs, d2fs


def loss_grad(spec, theta: Array, X: Array, y: Array) -> tuple[float, Array]:
    """Mean squared error over all ``N * K`` outputs and its gradient, shape ``(n_params,)``."""
    layers = spec.unpack(theta)
    zs, hs, dfs, _ = _forward(spec, layers, X)
    r = zs[-1] - y
    g = r * (2.0 / r.size)  # adjoint of the output
    grad = np.empty(spec.n_params)
    for l in range(len(layers) - 1, -1, -1):
        w0, b0, end = spec.offsets()[l]
        grad[w0:b0] = (g.T @ hs[l]).ravel()
        grad[b0:end] = g.sum(axis=0)
        if l > 0:
            g = (g @ layers[l][0]) * dfs[l - 1]
    return float(np.einsum("ij,ij->", r, r) / r.size), grad


def hessian(spec, theta: Array, X: Array, y: Array) -> Array:
    """Exact Hessian of :func:`loss_grad`'s loss, shape ``(n_params, n_params)``, symmetric."""
    P = spec.n_params
    H = np.zeros((P, P))
    widest = max(max((n + 1) ** 2, m * m, m * n) for m, n in spec.layer_shapes)
    rows = max(64, _BLOCK_BYTES // (8 * widest))
    layers = spec.unpack(theta)
    for start in range(0, len(X), rows):
        _add_block(spec, layers, X[start : start + rows], y[start : start + rows], H)
    order = _spec_to_augmented(spec)
    H = H[np.ix_(order, order)]
    return (H + H.T) * (1.0 / y.size)  # H + H.T = 2 H, exactly symmetric; the loss is 2 psi / (N K)


def gauss_newton(spec, theta: Array, X: Array, y: Array) -> tuple[float, Array, Array]:
    """Loss, gradient and Gauss-Newton matrix ``2 / (N K) J^T J`` (``J`` the Jacobian of the
    ``N K`` outputs), the positive semi-definite part of :func:`hessian`.

    Returns
    -------
    loss : float
    grad : ndarray of float64, shape (n_params,)
    G : ndarray of float64, shape (n_params, n_params)
    """
    P, layers = spec.n_params, spec.unpack(theta)
    K = spec.d_out
    G, grad, sse = np.zeros((P, P)), np.zeros(P), 0.0
    rows = max(16, _BLOCK_BYTES // (8 * P * K))
    offsets = spec.offsets()
    for start in range(0, len(X), rows):
        Xb, yb = X[start : start + rows], y[start : start + rows]
        zs, hs, dfs, _ = _forward(spec, layers, Xb)
        B = len(Xb)
        r = (zs[-1] - yb).ravel()  # (B K,), sample-major like J's rows
        J = np.empty((B, K, P))
        g = np.broadcast_to(np.eye(K), (B, K, K))  # adjoint of z_L for each output k
        for l in range(len(layers) - 1, -1, -1):
            w0, b0, end = offsets[l]
            J[:, :, w0:b0] = (g[:, :, :, None] * hs[l][:, None, None, :]).reshape(B, K, -1)
            J[:, :, b0:end] = g
            if l > 0:
                g = (g.reshape(B * K, -1) @ layers[l][0]).reshape(B, K, -1) * dfs[l - 1][:, None, :]
        J = J.reshape(B * K, P)
        G += J.T @ J
        grad += J.T @ r
        sse += float(r @ r)
    scale = 2.0 / (len(X) * K)
    G *= scale
    return sse / (len(X) * K), grad * scale, (G + G.T) * 0.5


def _spec_to_augmented(spec) -> Array:
    """Index into the augmented order of every parameter in :class:`MLPSpec` order."""
    order = []
    for (w0, b0, end), (m, n) in zip(spec.offsets(), spec.layer_shapes):
        aug = w0 + np.arange(m * (n + 1)).reshape(m, n + 1)
        order += [aug[:, :n].ravel(), aug[:, n]]
    return np.concatenate(order)


def _add_block(spec, layers, X, y, H):
    """Add the unscaled Hessian of ``psi`` over the samples ``X`` to ``H`` (augmented order)."""
    L, B = len(layers), len(X)
    zs, hs, dfs, d2fs = _forward(spec, layers, X, second=True)
    xs = [np.hstack([h, np.ones((B, 1))]) for h in hs]
    starts = np.cumsum([0] + [m * (n + 1) for m, n in spec.layer_shapes])
    # adjoints g_l of z_l for phi = sum r . f, and curvature weights c_l = a_{l+1} sigma''(z_l)
    gs, cs = [None] * L, [None] * (L - 1)
    gs[-1] = zs[-1] - y
    for l in range(L - 1, 0, -1):
        a = gs[l] @ layers[l][0]
        cs[l - 1] = a * d2fs[l - 1]
        gs[l - 1] = a * dfs[l - 1]
    # G[k][l] = dz_k / dz_l per sample, (B, m_k, m_l), for l < k
    step = [None] + [layers[k][0][None, :, :] * dfs[k - 1][:, None, :] for k in range(1, L)]
    G = [[None] * L for _ in range(L)]
    for k in range(1, L):
        G[k][k - 1] = step[k]
        for l in range(k - 2, -1, -1):
            G[k][l] = step[k] @ G[k - 1][l]
    S = [None] * L
    K = zs[-1].shape[1]
    S[-1] = np.broadcast_to(np.eye(K), (B, K, K))
    for l in range(L - 2, -1, -1):
        S[l] = np.swapaxes(step[l + 1], 1, 2) @ S[l + 1] @ step[l + 1]
        S[l][:, np.arange(S[l].shape[1]), np.arange(S[l].shape[1])] += cs[l]

    def block(l, k):
        return H[starts[l] : starts[l + 1], starts[k] : starts[k + 1]]

    for l in range(L):
        (m, n) = spec.layer_shapes[l]
        for k in range(l + 1):
            mk, nk = spec.layer_shapes[k]
            A = S[l] if k == l else S[l] @ G[l][k]  # (B, m, mk)
            xx = (xs[l][:, :, None] * xs[k][:, None, :]).reshape(B, -1)
            E = (A.reshape(B, -1).T @ xx).reshape(m, mk, n + 1, nk + 1).transpose(0, 2, 1, 3)
            E = E.reshape(m * (n + 1), mk * (nk + 1))
            if k < l:  # the product W_l h_l: only weight rows, a < n
                D = dfs[l - 1][:, :, None] * (G[l - 1][k] if k < l - 1 else np.eye(n)[None])
                gx = (gs[l][:, :, None] * xs[k][:, None, :]).reshape(B, -1)
                C = (gx.T @ D.reshape(B, -1)).reshape(m, nk + 1, n, mk).transpose(0, 2, 3, 1)
                E.reshape(m, n + 1, -1)[:, :n, :] += C.reshape(m, n, -1)
            block(l, k)[...] += E
            if k < l:
                block(k, l)[...] += E.T
