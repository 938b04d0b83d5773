"""Synthetic teachers of the paper's appendix A.4, their data, and saving/loading them.

A hidden neuron draws ``w`` from ``{-1, 0, 1}^fan_in \\ {0}``, ``b`` from
``{-2, -1, 0, 1, 2} * sqrt(3)/3`` and its output weight from ``{-1, +1}``; a layer is
redrawn while two of its neurons share the same ``(w, b)``. Then ``w`` is normalised to
unit length and ``w`` and ``b`` are multiplied by 3. Deep teachers stack this
construction, rescaling each layer's incoming weights so that it sees standardised inputs
(zero mean, unit variance per unit over the standardisation sample). The output weights
are scaled so that each output has zero mean and unit variance: ``a <- a / std(y)``,
``b_out = -mean(y) / std(y)``. The teacher is queried on inputs uniform on
``[-sqrt(3), sqrt(3)]^d`` (:mod:`ec.queries.uniform`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..activations import get_activation
from ..io import atomic_save_npz
from ..mlp import MLPSpec
from ..queries.uniform import Dataset, uniform_dataset, uniform_inputs

Array = np.ndarray
_BIAS_LEVELS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) * np.sqrt(3.0) / 3.0
_MAX_REDRAWS = 10_000
N_STANDARDISE = 100_000  # inputs drawn to standardise each layer of a teacher (make_teacher)


@dataclass(frozen=True)
class Teacher:
    """A teacher network: spec, flat float64 parameters and the seed that made it."""

    spec: MLPSpec
    params: Array
    seed: int | None = None

    def predict(self, X: Array) -> Array:
        return self.spec.forward(self.params, X)

    def dataset(self, n_train: int = 30_000, n_test: int = 10_000, seed: int | None = None) -> Dataset:
        """The teacher's answers on uniform queries (:func:`ec.queries.uniform_dataset`);
        ``seed`` defaults to the teacher's own seed, so the same seed always gives the same data."""
        seed = self.seed if seed is None else seed
        if seed is None:
            raise ValueError("seed is required for a teacher that was not made from a seed")
        return uniform_dataset(self.predict, self.spec.d_in, n_train, n_test, seed)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file atomically."""
        meta = {"layer_sizes": list(self.spec.layer_sizes), "activation": self.spec.activation, "seed": self.seed}
        atomic_save_npz(path, params=self.params, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "Teacher":
        with np.load(Path(path), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = np.array(f["params"], dtype=np.float64)
        return cls(MLPSpec(tuple(meta["layer_sizes"]), meta["activation"]), params, meta["seed"])


def _draw_layer(rng: np.random.Generator, fan_in: int, width: int) -> tuple[Array, Array]:
    """``width`` distinct A.4 neurons, already normalised and scaled by 3."""
    for _ in range(_MAX_REDRAWS):
        W = rng.integers(-1, 2, size=(width, fan_in)).astype(np.float64)
        while (zero := ~W.any(axis=1)).any():
            W[zero] = rng.integers(-1, 2, size=(int(zero.sum()), fan_in))
        b = rng.choice(_BIAS_LEVELS, size=width)
        if len({(tuple(w), bi) for w, bi in zip(W, b)}) == width:
            W /= np.linalg.norm(W, axis=1, keepdims=True)
            return 3.0 * W, 3.0 * b
    raise ValueError(f"cannot draw {width} distinct neurons with fan-in {fan_in}")


def make_teacher(
    layer_sizes,
    seed: int,
    activation: str = "g",
    n_standardise: int = N_STANDARDISE,
) -> Teacher:
    """Draw an A.4 teacher.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``(d_in, r_1, ..., r_L, d_out)``, e.g. ``(4, 4, 1)`` or ``(8, 4, 2, 1)``.
    seed : int
        Seeds the weights and the standardisation sample; same seed, same teacher.
    activation : str
        Hidden activation (the paper uses ``"g"``).
    n_standardise : int
        Inputs drawn (from the seed) to standardise each layer's input and the outputs.

    Returns
    -------
    Teacher
    """
    spec = MLPSpec(tuple(layer_sizes), activation)
    if spec.n_layers < 2:
        raise ValueError(f"layer_sizes={tuple(layer_sizes)}: a teacher needs at least one hidden layer")
    act = get_activation(activation)
    rng = np.random.default_rng(seed)
    h = uniform_inputs(n_standardise, spec.d_in, (seed, 0))
    layers = []
    for li, width in enumerate(spec.hidden_sizes):
        W, b = _draw_layer(rng, h.shape[1], width)
        if li > 0:  # fold the standardisation of h into this layer
            mu, sd = h.mean(axis=0), h.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            W = W / sd
            b = b - W @ mu
        layers.append((W, b))
        h = act.f(h @ W.T + b)
    A = rng.choice([-1.0, 1.0], size=(spec.d_out, h.shape[1]))
    y = h @ A.T
    mean, sd = y.mean(axis=0), y.std(axis=0)
    layers.append((A / sd[:, None], -mean / sd))
    return Teacher(spec, spec.pack(layers), int(seed))
