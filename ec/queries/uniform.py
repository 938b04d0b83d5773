"""Uniform queries: what a synthetic teacher is asked (appendix A.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Array = np.ndarray
INPUT_HALF_WIDTH = np.sqrt(3.0)


@dataclass(frozen=True)
class Dataset:
    """Teacher queries: training and held-out inputs with the teacher's outputs (float64)."""

    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array


def uniform_inputs(n: int, d: int, seed) -> Array:
    """``(n, d)`` float64 inputs uniform on ``[-sqrt 3, sqrt 3]`` (unit variance)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-INPUT_HALF_WIDTH, INPUT_HALF_WIDTH, size=(n, d))


def uniform_dataset(predict: Callable[[Array], Array], d: int, n_train: int, n_test: int, seed: int) -> Dataset:
    """``n_train`` training and ``n_test`` held-out uniform queries and the answers of
    ``predict``; train and test inputs come from the independent streams ``(seed, 1)`` and
    ``(seed, 2)`` (``(seed, 0)`` is the teacher's standardisation sample)."""
    X_train = uniform_inputs(n_train, d, (seed, 1))
    X_test = uniform_inputs(n_test, d, (seed, 2))
    return Dataset(X_train, predict(X_train), X_test, predict(X_test))
