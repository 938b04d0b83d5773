"""Baseline: ART's FunctionallyEquivalentExtraction (Jagielski et al. 2020) on a one-hidden-layer
ReLU teacher ``f(x) = W2 @ relu(W1 @ x + b1) + b2``.

ART (``adversarial-robustness-toolbox``, import name ``art``) implements the attack of
"High Accuracy and High Fidelity Extraction of Neural Networks" (arXiv:1909.01838) as
:class:`art.attacks.extraction.FunctionallyEquivalentExtraction`. :func:`art_extract` runs it
against a numpy teacher and returns ART's parameters in this package's layout together with
the number of teacher queries (``benchmarks/recover_vs_art.py`` compares them with the teacher
through :func:`ec.metrics.parameter_error`).

How ART's attack works (``extract(x, ...)``), and what the wrapper has to provide:

* The estimator must derive from ``NeuralNetworkMixin``: the plain ``BlackBoxClassifier`` is
  refused, ``BlackBoxClassifierNeuralNetwork`` (a numpy ``predict_fn``) is accepted.
* The teacher output must be the raw second-layer values ("logits"): every step fits the
  piecewise-linear model to the outputs (no softmax).
* ``BlackBoxClassifierNeuralNetwork.predict`` casts the outputs to ``art.config.ART_NUMPY_DTYPE``
  (float32). The attack relies on finite differences with relative tolerances of 1e-5 / 1e-6,
  so the wrapper overrides ``predict`` to return float64 (and to count the queried rows).
* Critical points are searched on the line ``u + t v`` for ``t`` in ``[-h**2, h**2]``
  (``h = num_neurons``; ``u, v ~ N(0, I)`` drawn from ``np.random`` when the attack object is
  built); the attack raises unless it finds exactly ``h`` of them. Then the first-layer rows
  are estimated from second differences along the coordinate axes at each critical point
  (``delta_*``, ``d2_min``, ``d_step``), their signs by two least-squares problems
  (``unit_vector_scale``), and finally the second layer by least squares of the teacher's
  outputs on ``x`` (``x`` is used only there; its rows are teacher queries too).
* The search loop has no iteration cap: where every output has slope zero (all neurons
  inactive along the line) it halves its step forever. The wrapper therefore stops the attack
  with :class:`QueryBudgetExceeded` after ``max_queries`` rows or ``max_seconds`` seconds.
* ART's classifiers require ``nb_classes >= 2``; a scalar teacher is duplicated (see below).

Known limitations of ART's implementation (seen on random teachers): a kink closer than
``delta/10`` to an end of a search interval yields a slightly wrong critical point (at that
end); two kinks in one interval yield one spurious point and lose a neuron; a kink outside
``|t| <= h**2`` is never found. First-layer rows are scaled by their first input weight,
so a neuron with a small first weight amplifies these errors.
"""

from __future__ import annotations

import time

import numpy as np
from art.attacks.extraction import FunctionallyEquivalentExtraction
from art.estimators.classification import BlackBoxClassifierNeuralNetwork


class QueryBudgetExceeded(RuntimeError):
    """Raised by the teacher wrapper when ART exceeds its query or time budget."""


class _CountingTeacher(BlackBoxClassifierNeuralNetwork):
    """ART black-box classifier around a numpy function: float64 outputs, counted queries.

    Parameters
    ----------
    fn : callable
        Maps an ``(n, d)`` float64 array to the ``(n, k)`` raw outputs.
    d, k : int
        Input and output dimensions.
    max_queries : int
        Rows after which :meth:`predict` raises :class:`QueryBudgetExceeded`.
    deadline : float
        ``time.perf_counter()`` value after which :meth:`predict` raises.
    """

    def __init__(self, fn, d: int, k: int, max_queries: int, deadline: float):
        super().__init__(fn, input_shape=(d,), nb_classes=k)
        self.queries = 0
        self.max_queries = max_queries
        self.deadline = deadline

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        """Evaluate the teacher on the rows of ``x`` in float64 (no float32 cast, no batching).

        Parameters
        ----------
        x : numpy.ndarray
            Inputs of shape ``(n, d)``.
        batch_size : int
            Ignored (kept for ART's signature).
        **kwargs
            Ignored.

        Returns
        -------
        numpy.ndarray
            Outputs of shape ``(n, k)``.
        """
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.queries += x.shape[0]
        if self.queries > self.max_queries:
            raise QueryBudgetExceeded(f"more than {self.max_queries} queries")
        if time.perf_counter() > self.deadline:
            raise QueryBudgetExceeded(f"time budget exceeded after {self.queries} queries")
        return self._predict_fn(x)


def art_extract(
    W1,
    b1,
    W2,
    b2,
    seed: int,
    delta_0: float = 0.05,
    fraction_true: float = 0.3,
    rel_diff_slope: float = 1e-5,
    rel_diff_value: float = 1e-6,
    delta_init_value: float = 0.1,
    delta_value_max: float = 50,
    d2_min: float = 0.0004,
    d_step: float = 0.01,
    delta_sign: float = 0.02,
    unit_vector_scale: float = 10000,
    ftol: float = 1e-8,
    x=None,
    n_x: int = 100,
    max_queries: int = 2_000_000,
    max_seconds: float = 300.0,
) -> dict:
    """Run ART's FunctionallyEquivalentExtraction against ``W2 @ relu(W1 @ x + b1) + b2``.

    Parameters
    ----------
    W1, b1, W2, b2 : array_like
        Teacher parameters of shapes ``(r, d)``, ``(r,)``, ``(k, r)``, ``(k,)``.
    seed : int
        Seeds numpy's global RNG (ART draws its search line and least-squares starts from
        ``np.random``) and the default ``x``.
    delta_0, fraction_true, rel_diff_slope, rel_diff_value : float
        Critical-point search: initial step along the line, fraction of outputs that must
        satisfy a test, relative slope and value tolerances (ART's defaults).
    delta_init_value, delta_value_max, d2_min, d_step, delta_sign : float
        First-layer recovery: initial, maximal and increment of the second-difference step,
        minimal summed second difference, step of the sign test (ART's defaults).
    unit_vector_scale : float
        Scale of the target vector in ART's sign recovery (ART's default).
    ftol : float
        ``scipy.optimize.least_squares`` tolerance (ART's default).
    x : array_like, optional
        Inputs ``(n, d)`` on which ART fits the second layer; default ``n_x`` standard-normal rows.
    n_x : int
        Number of rows of the default ``x``.
    max_queries : int
        Teacher rows after which the attack is stopped (``ok=False``).
    max_seconds : float
        Wall time after which the attack is stopped (``ok=False``).

    Returns
    -------
    dict
        ``ok`` (ART finished without raising), ``error`` (``"Type: message"`` or ``""``),
        ``W1, b1, W2, b2`` (extracted parameters in the input layout, float64, or None),
        ``queries`` (teacher rows evaluated, ``x`` included) and ``seconds`` (wall time).
    """
    W1, b1, W2, b2 = (np.asarray(a, dtype=np.float64) for a in (W1, b1, W2, b2))
    (r, d), k = W1.shape, W2.shape[0]
    if x is None:
        x = np.random.default_rng(seed).standard_normal((n_x, d))
    x = np.asarray(x, dtype=np.float64)

    # ART's classifiers require nb_classes >= 2: a scalar teacher (k = 1) is queried once per
    # row and its output duplicated into two identical columns; ART's two rows are averaged.
    n_out = max(k, 2)

    def teacher(z):
        y = np.maximum(z @ W1.T + b1, 0.0) @ W2.T + b2
        return np.repeat(y, 2, axis=1) if k == 1 else y

    np.random.seed(seed)
    t0 = time.perf_counter()
    clf = _CountingTeacher(teacher, d, n_out, max_queries, t0 + max_seconds)
    out = dict(ok=False, error="", W1=None, b1=None, W2=None, b2=None)
    try:
        with np.errstate(all="ignore"):
            fee = FunctionallyEquivalentExtraction(classifier=clf, num_neurons=r)
            fee.extract(
                x,
                delta_0=delta_0,
                fraction_true=fraction_true,
                rel_diff_slope=rel_diff_slope,
                rel_diff_value=rel_diff_value,
                delta_init_value=delta_init_value,
                delta_value_max=delta_value_max,
                d2_min=d2_min,
                d_step=d_step,
                delta_sign=delta_sign,
                unit_vector_scale=unit_vector_scale,
                ftol=ftol,
            )
        # ART's layout: w_0 (d, r), b_0 (r, 1), w_1 (r, n_out), b_1 (n_out, 1).
        V2, c2 = np.array(fee.w_1, dtype=np.float64).T, np.array(fee.b_1, dtype=np.float64).ravel()
        if k == 1:
            V2, c2 = V2.mean(axis=0, keepdims=True), c2.mean(keepdims=True)
        out.update(
            ok=True,
            W1=np.array(fee.w_0, dtype=np.float64).T,
            b1=np.array(fee.b_0, dtype=np.float64).ravel(),
            W2=V2,
            b2=c2,
        )
    except Exception as exc:  # ART raises AssertionError, ValueError, numpy/scipy errors, ...
        out["error"] = f"{type(exc).__name__}: {exc}"
    out.update(queries=int(clf.queries), seconds=time.perf_counter() - t0)
    return out
