"""The Expand-and-Cluster estimator for one hidden layer (paper section 5, steps 2-4;
appendix A.3): N overparameterised students, their hidden layer clustered and collapsed
(:mod:`._layer`), then the biases and finally the whole network fine-tuned
(:mod:`ec.finetune`). Deep networks: :class:`ec.reconstruct.LayerwiseExpandAndCluster`."""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..activations import HIDDEN_ACTIVATIONS
from ..finetune import BIAS_BUDGET, FINETUNE_BUDGET, bias_mask, drop_dead_neurons, finetune
from ..mlp import MLPSpec, mse, output_variance
from ..progress import Event
from ..train import Budget, TrainResult, backend_names
from ._layer import ReconstructionError, reconstruct_layer
from ._report import Report
from ._stages import ZERO_LOSS_FRACTION, StudentTraining, student_seed, usable, voters

Array = np.ndarray


def per_layer(value, n_layers: int, name: str) -> tuple[float, ...]:
    """One float per hidden layer from a scalar or a sequence of ``n_layers`` values.

    Raises
    ------
    ValueError
        A sequence of the wrong length.
    """
    if np.ndim(value) == 0:
        return (float(value),) * n_layers
    values = tuple(float(v) for v in value)
    if len(values) != n_layers:
        raise ValueError(f"{name}={tuple(value)!r}: give one value or one per hidden layer ({n_layers})")
    return values


class ExpandAndCluster:
    """Recover a one-hidden-layer network's width and weights from its input-output pairs.

    Parameters
    ----------
    student_hidden_sizes : tuple of int
        Hidden width of the overparameterised students, ``(rho * r,)``. Several hidden
        layers: :class:`ec.reconstruct.LayerwiseExpandAndCluster`.
    n_students : int
        N, the number of students.
    gamma : float in (0, 1]
        A cluster must hold at least ``ceil(gamma N)`` neurons.
    beta : float
        Maximal median within-cluster angle of the input weight vectors (radians).
    activation : str
        Hidden activation of students and reconstruction.
    backend : str
        Trainer backend for the students and the fine-tuning (``"flow"``, ``"torch"``, ...).
    finetune_backend : str, optional
        Trainer of the fine-tuning when it is not ``backend`` (e.g. torch students, a float64
        ``"gn"`` finish); then ``finetune_options`` are its constructor's options.
    budget : Budget, optional
        Per-student training budget (default: the backend's :class:`Budget` defaults).
    finetune_budget : Budget, optional
        Budget of the final fine-tune of the whole network (default
        :data:`ec.finetune.FINETUNE_BUDGET`).
    loss_ratio : float >= 1
        Cluster only the students whose loss is at most this many times the lowest, when
        they are at least 3 (:func:`~ec.reconstruct.voters`): a cluster needs a neuron of
        every one of them when they are at most half of the students, else of ``gamma`` of
        them. ``inf`` (default): every usable student, as in the paper.
    seed : int
        Student ``i`` is initialised from :func:`student_seed(seed, i) <student_seed>`.
    n_jobs : int, optional
        Worker processes for training students (None or -1: all cores; 1 trains in this
        process). The workers are spawned and import the main script again: a script calls
        ``fit`` under ``if __name__ == "__main__":`` (otherwise a ``RuntimeError`` says so).
    feature_mask : ndarray of bool, shape (d_in,), optional
        Inputs used for clustering (e.g. informative MNIST pixels); all by default.
    progress : callable, optional
        ``progress(event, **info)`` with events ``"stage"`` (``name``) and ``"student"``
        (``index``, ``result``, ``done``, ``total``, ``resumed``).
    backend_options : dict, optional
        Passed to the backend's constructor.
    finetune_options : dict, optional
        Passed to ``finetune_backend``'s constructor (only with ``finetune_backend``).
    cut : {"aligned", "size"}
        Dendrogram cut criterion (:func:`ec.cluster.cluster_neurons`): maximise the number
        of big and aligned clusters (default), or of big clusters as in the paper.
    retrain_dir : str or Path, optional
        Deep networks: folder where the students of every retraining round are saved.

    Attributes
    ----------
    layer_sizes_ : tuple of int
        ``(d_in, m_hat, d_out)``.
    weights_ : list of (ndarray, ndarray)
        ``[(W_1, b_1), (W_2, b_2)]`` of the reconstructed network.
    params_ : ndarray of float64
        The same as one flat vector (:mod:`ec.mlp` layout).
    spec_ : MLPSpec
    students_ : list of TrainResult
        All students, failed ones included.
    clusters_ : list of LayerClusters
        One per hidden layer; ``info`` holds the merge groups and the collapse details.
    report_ : Report
        Summary (sizes, clustering, losses per stage, timings).
    """

    def __init__(
        self,
        student_hidden_sizes: Sequence[int] = (16,),
        n_students: int = 20,
        gamma: float = 0.8,
        beta: float = math.pi / 24,
        activation: str = "g",
        backend: str = "flow",
        budget: Budget | None = None,
        finetune_budget: Budget | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
        feature_mask: Array | None = None,
        progress: Callable | None = None,
        backend_options: dict | None = None,
        cut: str = "aligned",
        retrain_dir: str | Path | None = None,
        finetune_backend: str | None = None,
        finetune_options: dict | None = None,
        loss_ratio: float = math.inf,
    ):
        self.student_hidden_sizes = student_hidden_sizes
        self.n_students = n_students
        self.gamma = gamma
        self.beta = beta
        self.activation = activation
        self.backend = backend
        self.budget = budget
        self.finetune_budget = finetune_budget
        self.seed = seed
        self.n_jobs = n_jobs
        self.feature_mask = feature_mask
        self.progress = progress
        self.backend_options = backend_options
        self.cut = cut
        self.retrain_dir = retrain_dir
        self.finetune_backend = finetune_backend
        self.finetune_options = finetune_options
        self.loss_ratio = loss_ratio

    # -- parameters -------------------------------------------------------------------

    _deep = False  # LayerwiseExpandAndCluster: several hidden layers

    def _check_params(self) -> None:
        try:
            sizes = tuple(self.student_hidden_sizes)
        except TypeError:
            raise ValueError(f"student_hidden_sizes={self.student_hidden_sizes!r}: give a tuple of ints, one width "
                             "per hidden layer, e.g. (16,)") from None
        if not sizes:
            raise ValueError(f"student_hidden_sizes={sizes!r}: give one width per hidden layer")
        if not all(_is_int(s) for s in sizes) or any(int(s) < 1 for s in sizes):
            raise ValueError(f"student_hidden_sizes={sizes!r}: widths must be integers >= 1")
        if len(sizes) > 1 and not self._deep:
            raise ValueError(f"student_hidden_sizes={sizes!r}: ExpandAndCluster reconstructs one hidden layer; "
                             "use LayerwiseExpandAndCluster for several")
        if not _is_int(self.n_students) or self.n_students < 2:
            raise ValueError(f"n_students={self.n_students!r}: need an integer >= 2 (at least 2 students to cluster)")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}; allowed: an integer >= 0")
        if self.n_jobs is not None and (not _is_int(self.n_jobs) or not (self.n_jobs >= 1 or self.n_jobs == -1)):
            raise ValueError(f"n_jobs={self.n_jobs!r}; allowed: None or -1 (all cores), or an integer >= 1")
        for name in ("gamma", "beta"):
            value = getattr(self, name)
            values = np.atleast_1d(np.asarray(value, dtype=object)) if not isinstance(value, str) else [value]
            if not all(_is_number(v) for v in values):
                raise ValueError(f"{name}={value!r}: give a number, or one number per hidden layer")
        if not all(0 < g <= 1 for g in per_layer(self.gamma, len(sizes), "gamma")):
            raise ValueError(f"gamma={self.gamma!r}; allowed: 0 < gamma <= 1 (one value or one per hidden layer)")
        if not all(0 < b <= math.pi for b in per_layer(self.beta, len(sizes), "beta")):
            raise ValueError(f"beta={self.beta!r}; allowed: 0 < beta <= pi (one value or one per hidden layer)")
        if not _is_number(self.loss_ratio) or not self.loss_ratio >= 1:
            raise ValueError(f"loss_ratio={self.loss_ratio!r}; allowed: a number >= 1 (inf: every usable student)")
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; allowed: {', '.join(HIDDEN_ACTIVATIONS)}")
        if self.cut not in ("aligned", "size"):
            raise ValueError(f"cut={self.cut!r}; allowed: aligned, size")
        if self.backend not in backend_names():
            raise ValueError(f"backend={self.backend!r}; allowed: {', '.join(backend_names())}")
        if self.finetune_backend is not None and self.finetune_backend not in backend_names():
            raise ValueError(f"finetune_backend={self.finetune_backend!r}; allowed: None, "
                             f"{', '.join(backend_names())}")
        if self.finetune_options is not None and self.finetune_backend is None:
            raise ValueError("finetune_options without finetune_backend; give both (or put the options in "
                             "backend_options)")
        for name in ("budget", "finetune_budget"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Budget):
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: None or an ec.train.Budget")

    def _check_mask(self, d_in: int) -> Array | None:
        """``feature_mask`` as a boolean array of length ``d_in`` (None: all inputs)."""
        if self.feature_mask is None:
            return None
        mask = np.asarray(self.feature_mask)
        if mask.ndim != 1 or len(mask) != d_in:
            raise ValueError(f"feature_mask has shape {mask.shape}; expected ({d_in},), one entry per input "
                             f"column of X")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError(f"feature_mask has dtype {mask.dtype} with values other than 0/1; give booleans")
            mask = mask.astype(bool)
        if not mask.any():
            raise ValueError("feature_mask selects no input; keep at least one")
        return mask

    def _emit(self, event: str, **info) -> None:
        if self.progress is not None:
            self.progress(event, **info)

    def _training(self) -> StudentTraining:
        return StudentTraining(
            activation=self.activation, n_students=int(self.n_students), seed=int(self.seed), backend=self.backend,
            backend_options=dict(self.backend_options or {}), n_jobs=self.n_jobs,
            retrain_dir=None if self.retrain_dir is None else Path(self.retrain_dir), progress=self.progress,
        )

    def student_spec(self, d_in: int, d_out: int) -> MLPSpec:
        """Architecture of the overparameterised students."""
        return MLPSpec((int(d_in), *(int(s) for s in self.student_hidden_sizes), int(d_out)), self.activation)

    def student_seeds(self) -> list[int]:
        return [student_seed(self.seed, i) for i in range(int(self.n_students))]

    # -- step 2: students ---------------------------------------------------------------

    def train_students(
        self,
        X: Array,
        y: Array,
        done: dict[int, TrainResult] | None = None,
        on_result: Callable[[int, TrainResult], None] | None = None,
    ) -> list[TrainResult]:
        """Train the N students, skipping those already in ``done``.

        Parameters
        ----------
        X : ndarray of float64, shape (n_samples, d_in)
        y : ndarray of float64, shape (n_samples, d_out)
        done : dict index -> TrainResult, optional
            Students finished earlier (a resumed run); they are not retrained.
        on_result : callable(index, TrainResult), optional
            Called as each new student finishes (e.g. to save it).

        Returns
        -------
        list of TrainResult, in student order.
        """
        self._check_params()
        X, y = _as_xy(X, y)
        spec = self.student_spec(X.shape[1], y.shape[1])
        seeds = self.student_seeds()
        results: list[TrainResult | None] = [None] * len(seeds)
        total = len(seeds)
        for i, res in (done or {}).items():
            if 0 <= i < total:
                results[i] = res
        n_done = sum(r is not None for r in results)
        self._emit(Event.STAGE, name="students", total=total, done=n_done)
        for i, res in enumerate(results):
            if res is not None:
                self._emit(Event.STUDENT, index=i, result=res, done=n_done, total=total, resumed=True)
        todo = [i for i, r in enumerate(results) if r is None]

        def finished(j: int, res: TrainResult) -> None:
            nonlocal n_done
            i = todo[j]
            results[i] = res
            n_done += 1
            if on_result is not None:
                on_result(i, res)
            self._emit(Event.STUDENT, index=i, result=res, done=n_done, total=total, resumed=False)

        if todo:
            self._training().train(spec, X, y, [seeds[i] for i in todo], self.budget, on_result=finished)
        return results

    # -- steps 3 and 4 ------------------------------------------------------------------

    def fit(self, X: Array, y: Array, students: Sequence[TrainResult] | None = None) -> "ExpandAndCluster":
        """Train (unless ``students`` are given), cluster, collapse and fine-tune.

        Parameters
        ----------
        X : ndarray of float64, shape (n_samples, d_in)
            Teacher queries (the students' training inputs).
        y : ndarray of float64, shape (n_samples, d_out) or (n_samples,)
            Teacher outputs.
        students : sequence of TrainResult, optional
            Already trained students (re-clustering, other backends); then nothing is
            trained except the fine-tuning.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A parameter or ``X``, ``y`` that is not allowed (shapes, NaN or infinity, dtypes,
            ``feature_mask``), named in the message, before anything is trained.
        ReconstructionError
            Fewer than two usable students, or no cluster survived.
        """
        self._check_params()
        X, y = _as_xy(X, y)
        mask = self._check_mask(X.shape[1])
        (gamma,), (beta,) = per_layer(self.gamma, 1, "gamma"), per_layer(self.beta, 1, "beta")
        t0 = time.perf_counter()
        students = list(students) if students is not None else self.train_students(X, y)
        t_students = time.perf_counter() - t0
        n_usable = len(usable(students))
        if n_usable < 2:
            raise ReconstructionError(f"only {n_usable} of {len(students)} students are usable (not failed)")
        good, unanimous = voters(students, self.loss_ratio, gamma, ZERO_LOSS_FRACTION * output_variance(y))

        t1 = time.perf_counter()
        self._emit(Event.STAGE, name="cluster")
        layer, clusters, info = reconstruct_layer(good, X, y, self.activation, gamma, beta, mask, self.cut, unanimous)
        t_cluster = time.perf_counter() - t1

        spec = MLPSpec((X.shape[1], len(layer.b), y.shape[1]), self.activation)
        theta = spec.pack([(layer.W, layer.b), (layer.A, layer.c)])
        losses = {"collapsed": mse(spec, theta, X, y)}
        t2 = time.perf_counter()
        self._emit(Event.STAGE, name="finetune")
        theta, losses["biases"] = self._finetune(spec, X, y, theta, BIAS_BUDGET, bias_mask(spec))
        theta, losses["finetuned"] = self._finetune(spec, X, y, theta, self.finetune_budget or FINETUNE_BUDGET, None)
        spec, theta = drop_dead_neurons(spec, theta)
        t_finetune = time.perf_counter() - t2

        self._set_network(spec, theta)
        self.students_ = students
        self.clusters_ = [clusters]
        self.report_ = Report(
            layer_sizes=list(spec.layer_sizes),
            student_layer_sizes=list(good[0].spec.layer_sizes),
            m_hat=[spec.hidden_sizes[0]],
            **student_summary(students),
            gamma=[gamma],
            beta=[beta],
            activation=self.activation,
            layers=[{**info, "voter_losses": [float(s.loss) for s in good], "unanimous": unanimous}],
            train_loss=losses,
            train_rmse=math.sqrt(losses["finetuned"]),
            seconds={"students": t_students, "cluster": t_cluster, "finetune": t_finetune},
        )
        return self

    def _set_network(self, spec: MLPSpec, theta: Array) -> None:
        self.spec_ = spec
        self.params_ = theta
        self.layer_sizes_ = spec.layer_sizes
        self.weights_ = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]

    def _finetune(self, spec: MLPSpec, X: Array, y: Array, theta: Array, budget: Budget, trainable):
        if self.finetune_backend is None:
            backend, options = self.backend, self.backend_options
        else:
            backend, options = self.finetune_backend, self.finetune_options
        return finetune(spec, X, y, theta, budget, trainable, backend, self.seed, options)

    # -- use ----------------------------------------------------------------------------

    def predict(self, X: Array) -> Array:
        """Outputs of the reconstructed network, shape (n_samples, d_out)."""
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")
        return self.spec_.forward(self.params_, X)


def student_summary(students: Sequence[TrainResult]) -> dict:
    """The :class:`Report` fields about the original students."""
    return {
        "n_students": len(students),
        "n_usable_students": len(usable(students)),
        "failed_students": [i for i, s in enumerate(students) if s.failed or not np.isfinite(s.loss)],
        "student_losses": [float(s.loss) for s in students],
    }


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _as_xy(X, y) -> tuple[Array, Array]:
    """``X`` (n, d_in) and ``y`` (n, d_out) as float64, after the checks of scikit-learn's
    ``check_X_y``.

    Raises
    ------
    ValueError
        Naming the problem: not numeric, X not 2-D or without columns, y not 1-D or 2-D,
        different numbers of rows, no rows, NaN or infinity.
    """
    X, y = _numeric(X, "X"), _numeric(y, "y")
    if X.ndim != 2:
        raise ValueError(f"X has shape {X.shape}; expected a 2-D array (n_samples, d_in)")
    if y.ndim not in (1, 2):
        raise ValueError(f"y has shape {y.shape}; expected (n_samples,) or (n_samples, d_out)")
    if len(X) != len(y):
        hint = (" (is X transposed? X.T has the rows of y)" if X.ndim == 2 and X.shape[1] == len(y) else "")
        raise ValueError(f"X has {len(X)} samples (shape {X.shape}) but y has {len(y)} (shape {y.shape}); "
                         f"give one row of y per row of X{hint}")
    if len(X) == 0:
        raise ValueError(f"X and y are empty (shapes {X.shape}, {y.shape}); give at least one sample")
    if X.shape[1] == 0 or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"X has shape {X.shape} and y {y.shape}: each needs at least one column")
    for name, a in (("X", X), ("y", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite values (first {a[where]} at "
                             f"index {where}); remove or replace them")
    return np.ascontiguousarray(X), np.ascontiguousarray(y.reshape(len(y), -1))


def _numeric(a, name: str) -> Array:
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} cannot be made an array ({exc}); give a 2-D array of numbers") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        what = "booleans" if arr.dtype == bool else "complex numbers" if arr.dtype.kind == "c" else "strings or objects"
        raise ValueError(f"{name} has dtype {arr.dtype}; give real numbers (float or int), not {what}")
    return arr.astype(np.float64, copy=False)
