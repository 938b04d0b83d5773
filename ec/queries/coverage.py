"""Which teacher neurons the queries can identify at all.

A first-layer neuron ``(w, b)`` is seen through the queries on each side of its hyperplane
``w . x + b = 0``: a relu neuron active on every query is linear on them (it can be merged
with others), one active on a handful is pinned down by those few. :func:`neuron_coverage`
reports, per neuron, the fraction of queries on the active side and the count on the
smaller side, against the number of dimensions the queries span, so that a missing neuron
is explained rather than just counted. A neuron is ``covered`` when its smaller side holds
at least as many queries as the queries span dimensions: a guide measured on MNIST teachers
(docs/results.md), not a guarantee either way.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray
RANK_ROWS = 1000  # rows sampled to compute a rank (above the 785 of a 28x28 image with bias)


def neuron_coverage(W: Array, b: Array, X: Array, seed: int = 0) -> tuple[list[dict], int]:
    """Per first-layer neuron: ``active_fraction``, ``minority`` (queries on the smaller side
    of its hyperplane) and ``covered`` (``minority >= rank``); and ``rank``, the rank of
    ``[x, 1]`` over the queries (at most :data:`RANK_ROWS` of them, sampled with ``seed``).

    Parameters
    ----------
    W : ndarray, shape (r, d)
    b : ndarray, shape (r,)
    X : ndarray, shape (n, d)
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(X), RANK_ROWS, replace=False)) if len(X) > RANK_ROWS else np.arange(len(X))
    rank = int(np.linalg.matrix_rank(np.hstack([X[rows], np.ones((len(rows), 1))])))
    active = (X @ np.asarray(W).T + np.asarray(b)) > 0
    out = []
    for j in range(active.shape[1]):
        n_active = int(active[:, j].sum())
        minority = min(n_active, len(X) - n_active)
        out.append({"neuron": j, "active_fraction": n_active / len(X), "minority": minority,
                    "covered": bool(minority >= rank)})
    return out, rank
