"""The activations of :mod:`ec.activations` as numba kernels over a buffer.

Each kernel fills ``f``, ``df`` (and ``d2f``) for a 1-d buffer ``z`` in one pass, with the
activation chosen by an integer code (:data:`CODES`) whose branch sits outside the loop.
The formulas are the numerically stable ones of :mod:`ec.activations` (``e = exp(-|x|)``
shared between softplus and the sigmoids, ``s (1 - s) = e / (1 + e)^2`` without
cancellation); tests compare both implementations element by element.

``exp`` and ``log1p`` on the ranges used here (``x <= 0`` and ``[0, 1]``) are written out
(:func:`exp_neg`, :func:`log1p_unit`, both accurate to about 1 ulp) because libm's scalar
calls keep LLVM from vectorising the loops: with them the activations of ``g`` run about 5x
faster. ``error_model="numpy"`` matters for the same reason (no zero-division branch).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ...activations import HIDDEN_ACTIVATIONS, LEAKY_RELU_SLOPE, SELU_ALPHA, SELU_SCALE

CODES = {name: i for i, name in enumerate(HIDDEN_ACTIVATIONS)}
_G, _SOFTPLUS, _SIGMOID, _TANH, _RELU, _LEAKY, _GELU, _SILU, _SELU, _MISH = (
    CODES[n] for n in ("g", "softplus", "sigmoid", "tanh", "relu", "leaky_relu", "gelu", "silu", "selu", "mish")
)
_INV_SQRT_2PI = 0.3989422804014327
_INV_SQRT_2 = 0.7071067811865476
_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact (fdlibm)
_LN2_LO = 1.90821492927058770002e-10


@intrinsic
def _as_float64(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (vectorisable, unlike ``math.ldexp``)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@nb.njit(inline="always", **_JIT)
def exp_neg(x):
    """``exp(x)`` for ``x <= 0``; 0 below ``-708`` (where the result would be subnormal)."""
    x = max(x, -708.0)
    k = math.floor(x * _LOG2E + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO  # |r| <= ln(2) / 2: the Taylor series to r^13 is exact
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _as_float64((np.int64(k) + 1023) << 52) if x > -708.0 else 0.0


@nb.njit(inline="always", **_JIT)
def log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` as ``2 atanh(s)``, ``s = e / (2 + e) <= 1/3``."""
    s = e / (2.0 + e)
    s2 = s * s
    p = 1.0 / 33.0
    p = p * s2 + 1.0 / 31.0
    p = p * s2 + 1.0 / 29.0
    p = p * s2 + 1.0 / 27.0
    p = p * s2 + 1.0 / 25.0
    p = p * s2 + 1.0 / 23.0
    p = p * s2 + 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return 2.0 * s * p


@nb.njit(inline="always", **_JIT)
def _sig(x, e):
    """sigmoid(x), sigmoid'(x) and 1 - 2 sigmoid(x) from ``e = exp(-|x|)``."""
    q = 1.0 / (1.0 + e)
    s = q if x >= 0.0 else e * q
    one_m_2s = (e - 1.0) * q if x >= 0.0 else (1.0 - e) * q
    return s, e * q * q, one_m_2s


@nb.njit(**_JIT)
def fdd(code, z, f, df, d2f, second):
    """sigma, sigma' and (if ``second``) sigma'' of ``z`` into ``f``, ``df``, ``d2f``.

    Parameters
    ----------
    code : int
        :data:`CODES` value of the activation.
    z : ndarray of float64, shape (n,)
    f, df, d2f : ndarray of float64, shape (n,)
        Outputs (``d2f`` untouched unless ``second``).
    second : bool
    """
    n = z.shape[0]
    if code == _G:
        for i in range(n):
            x = z[i]
            e = exp_neg(-abs(x))
            s, ds, a = _sig(x, e)
            e2 = e * e
            s4, ds4, a4 = _sig(x, e2 * e2)
            f[i] = max(x, 0.0) + log1p_unit(e) + s4
            df[i] = s + 4.0 * ds4
            if second:
                d2f[i] = ds + 16.0 * ds4 * a4
    elif code == _SOFTPLUS:
        for i in range(n):
            x = z[i]
            e = exp_neg(-abs(x))
            s, ds, a = _sig(x, e)
            f[i] = max(x, 0.0) + log1p_unit(e)
            df[i] = s
            if second:
                d2f[i] = ds
    elif code == _SIGMOID:
        for i in range(n):
            x = z[i]
            s, ds, a = _sig(x, exp_neg(-abs(x)))
            f[i] = s
            df[i] = ds
            if second:
                d2f[i] = ds * a
    elif code == _TANH:
        for i in range(n):
            x = z[i]
            e2 = exp_neg(-2.0 * abs(x))
            t = math.tanh(x)
            q = 1.0 / (1.0 + e2)
            f[i] = t
            df[i] = 4.0 * e2 * q * q
            if second:
                d2f[i] = -2.0 * t * df[i]
    elif code == _RELU or code == _LEAKY:
        neg = 0.0 if code == _RELU else LEAKY_RELU_SLOPE
        for i in range(n):
            x = z[i]
            f[i] = x if x > 0.0 else neg * x
            df[i] = 1.0 if x > 0.0 else neg
            if second:
                d2f[i] = 0.0
    elif code == _GELU:
        for i in range(n):
            x = z[i]
            cdf = 0.5 * math.erfc(-x * _INV_SQRT_2)
            pdf = _INV_SQRT_2PI * exp_neg(-0.5 * x * x)
            f[i] = x * cdf
            df[i] = cdf + x * pdf
            if second:
                d2f[i] = pdf * (2.0 - x * x)
    elif code == _SILU:
        for i in range(n):
            x = z[i]
            s, ds, a = _sig(x, exp_neg(-abs(x)))
            f[i] = x * s
            df[i] = s + x * ds
            if second:
                d2f[i] = ds * (2.0 + x * a)
    elif code == _SELU:
        for i in range(n):
            x = z[i]
            if x > 0.0:
                f[i] = SELU_SCALE * x
                df[i] = SELU_SCALE
                if second:
                    d2f[i] = 0.0
            else:
                f[i] = SELU_SCALE * SELU_ALPHA * math.expm1(x)
                df[i] = SELU_SCALE * SELU_ALPHA * exp_neg(x)
                if second:
                    d2f[i] = df[i]
    elif code == _MISH:
        for i in range(n):
            x = z[i]
            e = exp_neg(-abs(x))
            s, ds, a = _sig(x, e)
            sp = max(x, 0.0) + log1p_unit(e)
            t = math.tanh(sp)
            q = 1.0 / (1.0 + e)
            sm = e * q if x >= 0.0 else q  # sigmoid(-x) without cancellation
            e2 = sm * sm  # exp(-2 softplus(x))
            q = 1.0 / (1.0 + e2)
            sech2 = 4.0 * e2 * q * q  # 1 - tanh(softplus(x))^2
            f[i] = x * t
            df[i] = t + x * sech2 * s
            if second:
                d2f[i] = sech2 * s * (2.0 + x * (1.0 - s - 2.0 * t * s))
    else:
        raise ValueError("unknown activation code")
