"""Multilayer perceptrons as a spec plus one flat float64 parameter vector.

This is the one module that knows the parameter layout: for each layer ``l`` in order,
the weight matrix ``W_l`` of shape ``(n_out, n_in)`` flattened row-major, then the bias
``b_l`` of shape ``(n_out,)``. Hidden layers use ``spec.activation``; the output layer
is the identity. Inputs are ``X`` of shape ``(n_samples, d_in)``, outputs
``(n_samples, d_out)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, get_activation

Array = np.ndarray


@dataclass(frozen=True)
class MLPSpec:
    """Shape and activation of a fully connected network.

    Parameters
    ----------
    layer_sizes : tuple of int
        ``(d_in, h_1, ..., h_L, d_out)``; at least an input and an output size.
    activation : str
        Hidden-layer activation, a key of :data:`ec.activations.ACTIVATIONS`.
    """

    layer_sizes: tuple[int, ...]
    activation: str = "g"

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.layer_sizes)
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes={self.layer_sizes!r}: need at least (d_in, d_out)")
        bad = [s for s in sizes if s < 1]
        if bad:
            raise ValueError(f"layer_sizes={self.layer_sizes!r}: every size must be >= 1")
        if self.activation not in HIDDEN_ACTIVATIONS:
            get_activation(self.activation)  # raises with the list of names
            raise ValueError(
                f"activation {self.activation!r} is not a hidden activation; "
                f"allowed: {', '.join(HIDDEN_ACTIVATIONS)}"
            )
        object.__setattr__(self, "layer_sizes", sizes)

    @property
    def d_in(self) -> int:
        return self.layer_sizes[0]

    @property
    def d_out(self) -> int:
        return self.layer_sizes[-1]

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return self.layer_sizes[1:-1]

    @property
    def n_layers(self) -> int:
        """Number of weight layers (hidden layers + 1)."""
        return len(self.layer_sizes) - 1

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(n_out, n_in)`` of each weight matrix."""
        s = self.layer_sizes
        return [(s[i + 1], s[i]) for i in range(len(s) - 1)]

    @property
    def n_params(self) -> int:
        return sum(o * i + o for o, i in self.layer_shapes)

    def offsets(self) -> list[tuple[int, int, int]]:
        """``(weight_start, bias_start, layer_end)`` offsets into the flat vector per layer."""
        out, pos = [], 0
        for o, i in self.layer_shapes:
            out.append((pos, pos + o * i, pos + o * i + o))
            pos += o * i + o
        return out

    def unpack(self, theta: Array) -> list[tuple[Array, Array]]:
        """Views ``[(W_1, b_1), ..., (W_L+1, b_L+1)]`` into ``theta`` (no copy)."""
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta has shape {theta.shape}, expected ({self.n_params},)")
        return [
            (theta[w0:b0].reshape(o, i), theta[b0:end])
            for (o, i), (w0, b0, end) in zip(self.layer_shapes, self.offsets())
        ]

    def pack(self, layers) -> Array:
        """Flatten ``[(W, b), ...]`` into a new float64 vector."""
        layers = list(layers)
        if len(layers) != self.n_layers:
            raise ValueError(f"got {len(layers)} layers, expected {self.n_layers}")
        parts = []
        for (o, i), (W, b) in zip(self.layer_shapes, layers):
            W = np.asarray(W, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if W.shape != (o, i) or b.shape != (o,):
                raise ValueError(f"layer shapes {W.shape}, {b.shape}; expected {(o, i)}, {(o,)}")
            parts += [W.ravel(), b]
        return np.concatenate(parts)

    def init_params(self, seed: int, distribution: str = "normal") -> Array:
        """Glorot initialisation (biases zero) from an explicit seed.

        ``distribution="normal"``: N(0, 2/(fan_in+fan_out)) as in the paper's A.6.1;
        ``"uniform"``: U(-a, a), a = sqrt(6/(fan_in+fan_out)) as in A.6.3.
        """
        rng = np.random.default_rng(seed)
        layers = []
        for o, i in self.layer_shapes:
            if distribution == "normal":
                W = rng.normal(0.0, np.sqrt(2.0 / (i + o)), size=(o, i))
            elif distribution == "uniform":
                a = np.sqrt(6.0 / (i + o))
                W = rng.uniform(-a, a, size=(o, i))
            else:
                raise ValueError(f"distribution={distribution!r}; allowed: normal, uniform")
            layers.append((W, np.zeros(o)))
        return self.pack(layers)

    def hidden(self, theta: Array, X: Array) -> list[Array]:
        """Post-activations of every hidden layer, each ``(n_samples, h_l)``."""
        act = get_activation(self.activation)
        h, outs = np.asarray(X, dtype=np.float64), []
        for W, b in self.unpack(theta)[:-1]:
            h = act.f(h @ W.T + b)
            outs.append(h)
        return outs

    def forward(self, theta: Array, X: Array) -> Array:
        """Network output ``(n_samples, d_out)`` in float64."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.d_in:
            raise ValueError(f"X has shape {X.shape}, expected (n_samples, {self.d_in})")
        hs = self.hidden(theta, X)
        W, b = self.unpack(theta)[-1]
        return (hs[-1] if hs else X) @ W.T + b

    def with_hidden_sizes(self, hidden_sizes) -> "MLPSpec":
        return MLPSpec((self.d_in, *hidden_sizes, self.d_out), self.activation)


def output_variance(y: Array) -> float:
    """Mean over the output columns of their variance over the samples (``y``: one output
    per row, or a vector for one output); the scale that relative loss thresholds use."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean(np.var(y.reshape(len(y), -1), axis=0)))


def mse(spec: MLPSpec, theta: Array, X: Array, y: Array) -> float:
    """Mean squared error over all samples and outputs (torch's ``MSELoss`` convention)."""
    r = spec.forward(theta, X) - np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    return float(np.einsum("ij,ij->", r, r) / r.size)
