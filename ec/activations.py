"""Activation registry: sigma, its first two derivatives and its symmetry class.

Every function maps a float64 array to a float64 array of the same shape and is
numerically stable over the whole real line (no overflow warnings for |x| up to 1e300).

Symmetry classes follow the paper's appendix A.2.3; they decide how student neurons
are canonicalised before clustering (see ``ec.cluster``):

========================  ==========================================  ==================
class                     meaning                                     activations
========================  ==========================================  ==================
``none``                  no symmetry                                 g, selu, mish
``odd``                   sigma(-x) = -sigma(x)                       tanh
``odd+const``             sigma(x) - c is odd                         sigma
``even+linear``           sigma(x) - c1 x is even                     gelu, silu
``even+linear+const``     sigma(x) - c1 x - c0 is even                softplus
``even+linear+scaling``   even+linear and sigma(c x) = c sigma(x)     relu, leaky_relu
``linear``                the identity (output layers)                identity
========================  ==========================================  ==================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, ndtr

Array = np.ndarray

SYMMETRY_CLASSES = (
    "none",
    "odd",
    "odd+const",
    "even+linear",
    "even+linear+const",
    "even+linear+scaling",
    "linear",
)

LEAKY_RELU_SLOPE = 0.01
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_INV_SQRT_2PI = 0.3989422804014327


@dataclass(frozen=True)
class Activation:
    """One activation function with its derivatives.

    Attributes
    ----------
    name : str
        Registry key.
    f, df, d2f : callable
        sigma, sigma' and sigma'' on float64 arrays of any shape.
    symmetry : str
        One of :data:`SYMMETRY_CLASSES`.
    """

    name: str
    f: Callable[[Array], Array]
    df: Callable[[Array], Array]
    d2f: Callable[[Array], Array]
    symmetry: str

    @property
    def sign_symmetric(self) -> bool:
        """True when a neuron (w, b) and its mirror (-w, -b) are interchangeable up to a
        compensation elsewhere in the network (odd or even+linear classes)."""
        return self.symmetry.startswith(("odd", "even"))

    @property
    def positive_scaling(self) -> bool:
        """True when sigma(c x) = c sigma(x) for c > 0 (relu, leaky_relu)."""
        return self.symmetry.endswith("scaling")

    @property
    def even_linear(self) -> bool:
        """True when sigma is an even function plus a linear one (affine correction needed)."""
        return self.symmetry.startswith("even+linear")

    def __call__(self, x: Array) -> Array:
        return self.f(x)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid_d(x):
    s = expit(x)
    return s * (1.0 - s)


def _sigmoid_d2(x):
    s = expit(x)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _g(x):
    return _softplus(x) + expit(4.0 * x)


def _g_d(x):
    return expit(x) + 4.0 * _sigmoid_d(4.0 * x)


def _g_d2(x):
    return _sigmoid_d(x) + 16.0 * _sigmoid_d2(4.0 * x)


def _tanh_d(x):
    t = np.tanh(x)
    return 1.0 - t * t


def _tanh_d2(x):
    t = np.tanh(x)
    return -2.0 * t * (1.0 - t * t)


def _relu(x):
    return np.maximum(x, 0.0)


def _relu_d(x):
    return (x > 0).astype(np.float64)


def _zero(x):
    return np.zeros_like(x, dtype=np.float64)


def _leaky(x):
    return np.where(x > 0, x, LEAKY_RELU_SLOPE * x)


def _leaky_d(x):
    return np.where(x > 0, 1.0, LEAKY_RELU_SLOPE)


def _normal_pdf(x):
    x = np.clip(x, -40.0, 40.0)  # exp(-800) is already 0; avoids x*x overflow
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _gelu(x):
    return x * ndtr(x)


def _gelu_d(x):
    return ndtr(x) + np.clip(x, -40.0, 40.0) * _normal_pdf(x)


def _gelu_d2(x):
    xc = np.clip(x, -40.0, 40.0)
    return _normal_pdf(xc) * (2.0 - xc * xc)


def _silu(x):
    return x * expit(x)


def _silu_d(x):
    s = expit(x)
    return s + x * s * (1.0 - s)


def _silu_d2(x):
    s = expit(x)
    return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))


def _selu(x):
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def _selu_d(x):
    return SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))


def _selu_d2(x):
    return SELU_SCALE * np.where(x > 0, 0.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))


def _mish(x):
    return x * np.tanh(_softplus(x))


def _mish_d(x):
    t = np.tanh(_softplus(x))
    return t + x * (1.0 - t * t) * expit(x)


def _mish_d2(x):
    t = np.tanh(_softplus(x))
    s = expit(x)
    return (1.0 - t * t) * s * (2.0 + x * (1.0 - s - 2.0 * t * s))


def _identity(x):
    return np.asarray(x, dtype=np.float64)


def _one(x):
    return np.ones_like(x, dtype=np.float64)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("g", _g, _g_d, _g_d2, "none"),
        Activation("softplus", _softplus, expit, _sigmoid_d, "even+linear+const"),
        Activation("sigmoid", expit, _sigmoid_d, _sigmoid_d2, "odd+const"),
        Activation("tanh", np.tanh, _tanh_d, _tanh_d2, "odd"),
        Activation("relu", _relu, _relu_d, _zero, "even+linear+scaling"),
        Activation("leaky_relu", _leaky, _leaky_d, _zero, "even+linear+scaling"),
        Activation("gelu", _gelu, _gelu_d, _gelu_d2, "even+linear"),
        Activation("silu", _silu, _silu_d, _silu_d2, "even+linear"),
        Activation("selu", _selu, _selu_d, _selu_d2, "none"),
        Activation("mish", _mish, _mish_d, _mish_d2, "none"),
        Activation("identity", _identity, _one, _zero, "linear"),
    )
}

HIDDEN_ACTIVATIONS = tuple(name for name in ACTIVATIONS if name != "identity")


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the allowed names.
    """
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; allowed: {allowed}") from None
