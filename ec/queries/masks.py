"""Input masks: which input features (pixels) take part in clustering the first layer.

Weights from pixels that hardly vary over the data (image corners) never move far from
their random initialisation, so they carry no information about the teacher and only add
noise to the angles between neurons (paper, appendix A.6.4). A mask is a boolean array of
shape ``(d_in,)``, True for the informative features.

Methods
-------
``variance``   (default) keep features whose standard deviation over the inputs is at least
               ``rel_threshold`` times the largest one. No labels needed, milliseconds.
``importance`` one Boruta round: extremely randomised trees on the features plus a shuffled
               "shadow" copy of each; keep the features more important than every shadow.
``boruta``     the paper's method (BorutaPy with a random forest); needs the optional
               ``boruta`` package (``pip install 'ec[boruta]'``).
``none``       keep everything.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray

MASK_METHODS = ("variance", "importance", "boruta", "none")


def variance_mask(X: Array, rel_threshold: float = 0.1) -> Array:
    """Features whose std over ``X`` ``(n, d)`` is >= ``rel_threshold`` * the largest std."""
    if not 0 <= rel_threshold < 1:
        raise ValueError(f"rel_threshold={rel_threshold!r}; allowed: 0 <= rel_threshold < 1")
    std = np.asarray(X, dtype=np.float64).std(axis=0)
    return std >= rel_threshold * std.max()


def importance_mask(X: Array, y: Array, seed: int = 0, n_estimators: int = 100) -> Array:
    """Features more important than the best shuffled copy of any feature (one Boruta round).

    Parameters
    ----------
    X : ndarray, shape (n, d)
    y : ndarray of int, shape (n,)
        Class labels (for a teacher: the argmax of its outputs).
    """
    from sklearn.ensemble import ExtraTreesClassifier

    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    shadow = rng.permuted(X, axis=0)  # each column shuffled on its own
    forest = ExtraTreesClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    forest.fit(np.hstack([X, shadow]), y)
    imp = forest.feature_importances_
    d = X.shape[1]
    return imp[:d] > imp[d:].max()


def boruta_mask(X: Array, y: Array, seed: int = 0, max_iter: int = 100) -> Array:
    """The paper's Boruta mask (features confirmed at the 5% level), as its code computes it."""
    try:
        from boruta import BorutaPy
    except ImportError:
        raise ImportError("mask 'boruta' needs the optional boruta package: pip install 'ec[boruta]'") from None
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(max_depth=5, n_jobs=1, random_state=seed)
    sel = BorutaPy(forest, n_estimators="auto", max_iter=max_iter, random_state=seed)
    sel.fit(np.asarray(X, dtype=np.float64), np.asarray(y))
    return np.asarray(sel.support_, dtype=bool)


def pixel_mask(X: Array, y: Array | None = None, method: str = "variance", seed: int = 0) -> Array:
    """Boolean mask ``(d,)`` of informative features by ``method`` (see the module docstring)."""
    if method not in MASK_METHODS:
        raise ValueError(f"mask method {method!r}; allowed: {', '.join(MASK_METHODS)}")
    if method == "none":
        return np.ones(np.shape(X)[1], dtype=bool)
    if method == "variance":
        return variance_mask(X)
    if y is None:
        raise ValueError(f"mask method {method!r} needs class labels y")
    return importance_mask(X, y, seed) if method == "importance" else boruta_mask(X, y, seed)
