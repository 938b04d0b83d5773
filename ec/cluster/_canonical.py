"""Symmetries of one hidden layer: flipping a neuron's sign, normalising its scale.

For a sign-symmetric activation (odd or even+linear classes of :mod:`ec.activations`)
there are constants ``s``, ``p``, ``q`` with

    sigma(z) = s * sigma(-z) + p * z + q        for every real z,

(odd: s=-1, p=q=0; sigmoid: s=-1, q=1; even+linear: s=+1, p = slope of the linear part).
So a neuron ``a * sigma(w.x + b)`` equals the mirrored neuron ``(s a) * sigma(-w.x - b)``
plus the affine function ``a p (w.x + b) + a q`` of the layer's input. Flipping neurons
therefore keeps the network function exactly when that affine term is carried by an
input-to-output *skip* ``Theta x`` and the output bias (``Theta = 0`` for odd classes).
For positive-scaling activations (relu, leaky relu) ``a sigma(v) = (c a) sigma(v / c)`` for
``c > 0``: a neuron can be normalised to ``||[w; b]|| = 1`` with its norm pushed into ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..activations import Activation, get_activation

Array = np.ndarray

# Points where the flip relation is fitted and then checked (covers both tails and 0).
_PROBE = np.linspace(-6.0, 6.0, 49)


@dataclass(frozen=True)
class FlipRule:
    """``sigma(z) = s * sigma(-z) + p * z + q``."""

    s: float
    p: float
    q: float


@lru_cache(maxsize=None)
def _flip_rule_by_name(name: str) -> FlipRule | None:
    act = get_activation(name)
    if not act.sign_symmetric:
        return None
    s = 1.0 if act.even_linear else -1.0
    # sigma(z) - s sigma(-z) is affine in z for these classes: read p and q off two points
    # and verify on a grid, so a mis-registered symmetry class fails loudly here.
    d = act.f(_PROBE) - s * act.f(-_PROBE)
    q = float(act.f(np.zeros(1))[0] * (1.0 - s))
    # odd (+const) classes have no linear part by definition: keep p exactly 0 there
    p = float((d[-1] - q) / _PROBE[-1]) if act.even_linear else 0.0
    err = np.max(np.abs(d - (p * _PROBE + q)))
    if err > 1e-12 * max(1.0, np.max(np.abs(d))):
        raise ValueError(f"activation {name!r} is registered as {act.symmetry!r} but sigma(z) - "
                         f"{s:+g} sigma(-z) is not affine (max deviation {err:.2e})")
    return FlipRule(s, p, q)


def flip_rule(activation: str | Activation) -> FlipRule | None:
    """The flip relation of a sign-symmetric activation, ``None`` for the ``none`` class."""
    return _flip_rule_by_name(get_activation(activation).name)


@dataclass(frozen=True)
class Layer:
    """One hidden layer with its outgoing weights, plus the affine skip that flips create.

    The function represented is ``A @ sigma(W x + b) + c + Theta x``.

    Attributes
    ----------
    W : ndarray, shape (m, d)
    b : ndarray, shape (m,)
    A : ndarray, shape (d_out, m)
    c : ndarray, shape (d_out,)
    Theta : ndarray, shape (d_out, d)
    """

    W: Array
    b: Array
    A: Array
    c: Array
    Theta: Array

    @classmethod
    def from_params(cls, spec, theta: Array) -> "Layer":
        """First hidden layer and output layer of a one-hidden-layer network."""
        if spec.n_layers != 2:
            raise ValueError(f"expected one hidden layer, got layer sizes {spec.layer_sizes}")
        (W, b), (A, c) = spec.unpack(theta)
        return cls(W.copy(), b.copy(), A.copy(), c.copy(), np.zeros((spec.d_out, spec.d_in)))

    def __call__(self, X: Array, activation: str | Activation) -> Array:
        act = get_activation(activation)
        return act.f(X @ self.W.T + self.b) @ self.A.T + self.c + X @ self.Theta.T


def flip(layer: Layer, mask: Array, activation: str | Activation) -> Layer:
    """Mirror the neurons in ``mask`` and compensate so the layer's function is unchanged.

    Parameters
    ----------
    layer : Layer
    mask : ndarray of bool, shape (m,)
    activation : str or Activation
        Must be sign-symmetric.

    Returns
    -------
    Layer
        Neurons ``(w, b, a) -> (-w, -b, s a)``; the output bias gains ``sum a (p b + q)`` and the
        skip ``Theta`` gains ``p * sum a w^T`` over the flipped neurons.
    """
    rule = flip_rule(activation)
    if rule is None:
        raise ValueError(f"activation {get_activation(activation).name!r} has no sign symmetry")
    mask = np.asarray(mask, dtype=bool)
    sign = np.where(mask, -1.0, 1.0)
    Af = layer.A[:, mask]
    return Layer(
        W=layer.W * sign[:, None],
        b=layer.b * sign,
        A=layer.A * np.where(mask, rule.s, 1.0),
        c=layer.c + Af @ (rule.p * layer.b[mask] + rule.q),
        Theta=layer.Theta + rule.p * Af @ layer.W[mask],
    )


def normalise_scale(layer: Layer) -> Layer:
    """Positive scaling: ``||[w; b]|| = 1`` per neuron, the norm moved into ``A``.

    Only valid for positive-scaling activations (relu, leaky relu); neurons with a zero
    vector are left as they are.
    """
    norm = np.sqrt(np.einsum("ij,ij->i", layer.W, layer.W) + layer.b**2)
    scale = np.where(norm > 0, norm, 1.0)
    return Layer(layer.W / scale[:, None], layer.b / scale, layer.A * scale, layer.c, layer.Theta)


def reference_direction(dim: int) -> Array:
    """A fixed direction that no A.4 teacher vector is orthogonal to (irrational ratios)."""
    return np.sqrt(np.arange(2, dim + 2, dtype=np.float64)) % 1.0 + 0.5


def canonicalise(layer: Layer, activation: str | Activation, reference: Array | None = None) -> Layer:
    """The canonical representative of a layer under its activation's symmetries.

    Sign-symmetric classes: each neuron is flipped so that ``[w; b] . reference > 0``
    (default :func:`reference_direction`); positive-scaling classes are also normalised to
    unit ``||[w; b]||``. The returned layer computes the same function (skip included).
    """
    act = get_activation(activation)
    if act.sign_symmetric:
        V = np.hstack([layer.W, layer.b[:, None]])
        ref = reference_direction(V.shape[1]) if reference is None else np.asarray(reference)
        layer = flip(layer, V @ ref < 0, act)
    if act.positive_scaling:
        layer = normalise_scale(layer)
    return layer


@dataclass(frozen=True)
class NeuronTable:
    """The first hidden layer of N students, neurons stacked student by student.

    Attributes
    ----------
    W : ndarray, shape (n, d)
        Input weights of every neuron (n = sum of the students' widths).
    b : ndarray, shape (n,)
    A : ndarray, shape (d_out, n)
        Outgoing weights.
    student : ndarray of int, shape (n,)
        Index (into the list of students) of the student each neuron belongs to.
    neuron : ndarray of int, shape (n,)
        Index of the neuron inside its student.
    losses : ndarray, shape (n_students,)
        Training loss of each student.
    """

    W: Array
    b: Array
    A: Array
    student: Array
    neuron: Array
    losses: Array

    @classmethod
    def from_students(cls, students) -> "NeuronTable":
        """Stack the first hidden layer of trained students (``TrainResult`` objects)."""
        if not students:
            raise ValueError("no students to cluster")
        Ws, bs, As, who, idx = [], [], [], [], []
        for i, s in enumerate(students):
            (W, b), (A, _) = s.spec.unpack(s.params)[:2]
            Ws.append(W)
            bs.append(b)
            As.append(A)
            who.append(np.full(len(b), i))
            idx.append(np.arange(len(b)))
        d_in = {W.shape[1] for W in Ws}
        if len(d_in) != 1 or len({A.shape[0] for A in As}) != 1:
            raise ValueError("students disagree on input or next-layer sizes")
        return cls(
            np.vstack(Ws), np.concatenate(bs), np.hstack(As), np.concatenate(who), np.concatenate(idx),
            np.array([s.loss for s in students], dtype=np.float64),
        )

    def features(self, activation: str | Activation, feature_mask: Array | None = None) -> tuple[Array, Array]:
        """Clustering features ``[w[mask]; b]`` and alignment vectors ``w[mask]``.

        For positive-scaling activations both are scaled by ``1 / ||[w; b]||`` (directions;
        the clustering then uses the cosine distance, which ignores the scale anyway).
        """
        Wm = self.W if feature_mask is None else self.W[:, np.asarray(feature_mask, dtype=bool)]
        F = np.hstack([Wm, self.b[:, None]])
        if get_activation(activation).positive_scaling:
            norm = np.linalg.norm(np.hstack([self.W, self.b[:, None]]), axis=1)
            scale = np.where(norm > 0, norm, 1.0)[:, None]
            F, Wm = F / scale, Wm / scale
        return F, Wm

    def layer(self, rows: Array) -> Layer:
        """The given neurons as a :class:`Layer` (zero output bias and skip)."""
        rows = np.asarray(rows)
        d_out, d = self.A.shape[0], self.W.shape[1]
        return Layer(self.W[rows], self.b[rows], self.A[:, rows], np.zeros(d_out), np.zeros((d_out, d)))
