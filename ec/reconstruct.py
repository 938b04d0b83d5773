"""The Expand-and-Cluster estimator: N overparameterised students -> the teacher's network.

Paper section 5 (steps 2-4) and appendix A.3. For each hidden layer, from the first:
cluster the layer's neurons over the N students (:mod:`ec.cluster`), collapse each kept
cluster winner-take-all, fix the output bias and (even+linear activations) the affine
correction by least squares; then fine-tune the biases with the weight vectors fixed, and
finally the whole reconstructed network, with the trainer backend.

:meth:`ExpandAndCluster.fit` reconstructs one hidden layer; students with several hidden
layers (or per-layer ``gamma`` / ``beta``) go to :func:`ec.layerwise.fit_layerwise`, which
calls :meth:`_reconstruct_layer` (the layer's inputs and targets) layer by layer and
retrains the remaining layers in between.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, get_activation
from .cluster import Layer, LayerClusters, NeuronTable, cluster_layer, collapse, correct_affine, prune_inactive
from .mlp import MLPSpec, mse
from .train import Budget, TrainResult, backend_names, train_students

Array = np.ndarray

# Biases only (m_hat + d_out parameters): a Newton trust-region solve, no gradient flow.
BIAS_BUDGET = Budget(ode_steps=0, ode_time=0.0, optim_steps=200, optim_time=30.0)
# Whole reconstructed network: it starts next to a minimum, so the second-order phase
# does the work; a short gradient flow first helps when the collapse is less accurate.
FINETUNE_BUDGET = Budget(ode_steps=500, ode_time=30.0, optim_steps=2000, optim_time=120.0)


class ReconstructionError(RuntimeError):
    """Nothing could be reconstructed (no usable student, or no cluster survived)."""


def student_seed(seed: int, index: int) -> int:
    """Seed of student ``index``: ``10000 * seed + index`` (so seed 0 gives 0, 1, 2, ...,
    the students of ``ec grid``)."""
    return 10_000 * int(seed) + int(index)


class ExpandAndCluster:
    """Recover a network's layer sizes and weights from its input-output pairs.

    Parameters
    ----------
    student_hidden_sizes : tuple of int
        Hidden widths of the overparameterised students, e.g. ``(rho * r,)``; several
        widths reconstruct a deep network layer by layer (:mod:`ec.layerwise`).
    n_students : int
        N, the number of students.
    gamma : float in (0, 1], or one per hidden layer
        A cluster must hold at least ``ceil(gamma N)`` neurons.
    beta : float, or one per hidden layer
        Maximal median within-cluster angle of the input weight vectors (radians).
    activation : str
        Hidden activation of students and reconstruction.
    backend : str
        Trainer backend for the students and the fine-tuning (``"flow"``, ``"torch"``, ...).
    budget : Budget, optional
        Per-student training budget (default: the backend's :class:`Budget` defaults).
    finetune_budget : Budget, optional
        Budget of the final fine-tune of the whole network (default :data:`FINETUNE_BUDGET`).
    seed : int
        Student ``i`` is initialised from :func:`student_seed(seed, i) <student_seed>`.
    n_jobs : int, optional
        Worker processes for training students (default: all cores).
    feature_mask : ndarray of bool, shape (d_in,), optional
        Inputs used for clustering (e.g. informative MNIST pixels); all by default.
    progress : callable, optional
        ``progress(event, **info)`` with events ``"stage"`` (``name``) and ``"student"``
        (``index``, ``result``, ``done``, ``total``, ``resumed``).
    backend_options : dict, optional
        Passed to the backend's constructor.
    cut : {"aligned", "size"}
        Dendrogram cut criterion (:func:`ec.cluster.cluster_neurons`): maximise the number
        of big and aligned clusters (default), or of big clusters as in the paper.
    retrain_dir : str or Path, optional
        Deep networks: folder where the students of every retraining round are saved as
        they finish (one subfolder per round, named by a hash of its inputs); a rerun loads
        them instead of training them again (:func:`ec.train.cached.train_students_cached`).

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
    report_ : dict
        JSON-friendly summary (sizes, clustering, losses per stage, timings).
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

    # -- parameters -------------------------------------------------------------------

    def _check_params(self) -> None:
        from .layerwise import per_layer  # ec.layerwise imports this module

        sizes = tuple(self.student_hidden_sizes)
        if not sizes:
            raise ValueError(f"student_hidden_sizes={sizes!r}: give one width per hidden layer")
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"student_hidden_sizes={sizes!r}: widths must be >= 1")
        if int(self.n_students) < 2:
            raise ValueError(f"n_students={self.n_students!r}: need at least 2 students to cluster")
        if not all(0 < g <= 1 for g in per_layer(self.gamma, len(sizes), "gamma")):
            raise ValueError(f"gamma={self.gamma!r}; allowed: 0 < gamma <= 1 (one value or one per hidden layer)")
        if not all(0 < b <= math.pi for b in per_layer(self.beta, len(sizes), "beta")):
            raise ValueError(f"beta={self.beta!r}; allowed: 0 < beta <= pi (one value or one per hidden layer)")
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; allowed: {', '.join(HIDDEN_ACTIVATIONS)}")
        if self.cut not in ("aligned", "size"):
            raise ValueError(f"cut={self.cut!r}; allowed: aligned, size")
        if self.backend not in backend_names():
            raise ValueError(f"backend={self.backend!r}; allowed: {', '.join(backend_names())}")

    def _emit(self, event: str, **info) -> None:
        if self.progress is not None:
            self.progress(event, **info)

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
        self._emit("stage", name="students", total=total, done=n_done)
        for i, res in enumerate(results):
            if res is not None:
                self._emit("student", index=i, result=res, done=n_done, total=total, resumed=True)
        todo = [i for i, r in enumerate(results) if r is None]

        def finished(j: int, res: TrainResult) -> None:
            nonlocal n_done
            i = todo[j]
            results[i] = res
            n_done += 1
            if on_result is not None:
                on_result(i, res)
            self._emit("student", index=i, result=res, done=n_done, total=total, resumed=False)

        if todo:
            train_students(
                spec, X, y, [seeds[i] for i in todo], backend=self.backend, budget=self.budget,
                n_jobs=self.n_jobs, on_result=finished, **(self.backend_options or {}),
            )
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

        Raises
        ------
        ReconstructionError
            Fewer than two usable students, or no cluster survived.
        """
        self._check_params()
        if len(self.student_hidden_sizes) > 1 or np.ndim(self.gamma) or np.ndim(self.beta):
            from .layerwise import fit_layerwise

            return fit_layerwise(self, X, y, students)
        X, y = _as_xy(X, y)
        t0 = time.perf_counter()
        students = list(students) if students is not None else self.train_students(X, y)
        t_students = time.perf_counter() - t0
        usable = [s for s in students if not s.failed and np.isfinite(s.loss)]
        if len(usable) < 2:
            raise ReconstructionError(f"only {len(usable)} of {len(students)} students are usable (not failed)")

        t1 = time.perf_counter()
        self._emit("stage", name="cluster")
        layer, clusters, info = self._reconstruct_layer(usable, X, y)
        t_cluster = time.perf_counter() - t1

        spec = MLPSpec((X.shape[1], len(layer.b), y.shape[1]), self.activation)
        theta = spec.pack([(layer.W, layer.b), (layer.A, layer.c)])
        losses = {"collapsed": mse(spec, theta, X, y)}
        t2 = time.perf_counter()
        self._emit("stage", name="finetune")
        theta, losses["biases"] = self._finetune(spec, X, y, theta, BIAS_BUDGET, _bias_mask(spec))
        theta, losses["finetuned"] = self._finetune(spec, X, y, theta, self.finetune_budget or FINETUNE_BUDGET, None)
        spec, theta = _drop_dead_neurons(spec, theta)
        t_finetune = time.perf_counter() - t2

        self.spec_ = spec
        self.params_ = theta
        self.layer_sizes_ = spec.layer_sizes
        self.weights_ = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]
        self.students_ = students
        self.clusters_ = [clusters]
        self.report_ = {
            "layer_sizes": list(spec.layer_sizes),
            "student_layer_sizes": list(usable[0].spec.layer_sizes),
            "m_hat": [spec.hidden_sizes[0]],
            "n_students": len(students),
            "n_usable_students": len(usable),
            "failed_students": [i for i, s in enumerate(students) if s.failed or not np.isfinite(s.loss)],
            "student_losses": [float(s.loss) for s in students],
            "gamma": float(self.gamma),
            "beta": float(self.beta),
            "activation": self.activation,
            "layers": [info],
            "train_loss": losses,
            "train_rmse": math.sqrt(losses["finetuned"]),
            "seconds": {"students": t_students, "cluster": t_cluster, "finetune": t_finetune},
        }
        return self

    def _reconstruct_layer(self, students: list[TrainResult], X: Array, y: Array) -> tuple[Layer, LayerClusters, dict]:
        """Cluster, collapse and correct one hidden layer.

        ``X`` are the layer's inputs and ``y`` the targets its outgoing weights must
        reproduce (for one hidden layer: the network inputs and outputs).
        """
        table = NeuronTable.from_students(students)
        clusters = cluster_layer(table, self.activation, self.gamma, self.beta, self.feature_mask, self.cut)
        if clusters.n_kept == 0:
            raise ReconstructionError(
                f"no cluster of aligned neurons from >= {clusters.min_size} students (gamma={self.gamma}, "
                f"beta={self.beta:.4g}): the students do not agree on any neuron"
            )
        layer, winners = collapse(table, clusters, self.activation, self.feature_mask)
        layer, pruned = prune_inactive(layer, X, self.activation)
        if len(layer.b) == 0:
            raise ReconstructionError("every kept cluster is a constant- or zero-type neuron")
        layer, affine = correct_affine(layer, X, y, self.activation)
        clusters = replace(clusters, info={**clusters.info, "collapse": winners, "pruned": pruned, "affine": affine})
        labels, reasons = clusters.labels, list(clusters.rejected.values())
        info = {
            "n_neurons": int(len(labels)),
            "n_clusters": int(len(np.unique(labels))),
            "n_big": clusters.info["n_big"],
            "kept": len(clusters.kept),
            "rejected_small": reasons.count("small"),
            "rejected_unaligned": reasons.count("unaligned"),
            "merged": clusters.info["merged"],
            "min_size": clusters.min_size,
            "cut": self.cut,
            "cut_height": clusters.cut_height,
            "metric": clusters.metric,
            "sign_invariant": clusters.sign_invariant,
            "collapse": winners,
            "pruned": pruned,
            "affine": affine,
        }
        return layer, clusters, info

    def _finetune(
        self, spec: MLPSpec, X: Array, y: Array, theta: Array, budget: Budget, trainable
    ) -> tuple[Array, float]:
        """One training run from ``theta``; keeps ``theta`` if training fails or does worse."""
        before = mse(spec, theta, X, y)
        res = train_students(
            spec, X, y, [int(self.seed)], backend=self.backend, budget=budget, n_jobs=1,
            theta0s=[theta], trainable=trainable, **(self.backend_options or {}),
        )[0]
        if res.failed or not res.loss < before:
            return theta, before
        return res.params, mse(spec, res.params, X, y)

    # -- use ----------------------------------------------------------------------------

    def predict(self, X: Array) -> Array:
        """Outputs of the reconstructed network, shape (n_samples, d_out)."""
        if not hasattr(self, "params_"):
            raise RuntimeError("ExpandAndCluster is not fitted yet: call fit(X, y) first")
        return self.spec_.forward(self.params_, X)


def _drop_dead_neurons(spec: MLPSpec, theta: Array) -> tuple[MLPSpec, Array]:
    """Remove hidden neurons whose outgoing weights are exactly zero (the flow trainer's
    symmetry reduction leaves such neurons when it finds the network smaller than it is):
    the network function is unchanged, bit for bit."""
    (W, b), (A, c) = spec.unpack(theta)
    alive = np.any(A != 0, axis=0)
    if alive.all() or not alive.any():
        return spec, theta
    small = spec.with_hidden_sizes((int(alive.sum()),))
    return small, small.pack([(W[alive], b[alive]), (A[:, alive], c)])


def _as_xy(X, y) -> tuple[Array, Array]:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X has shape {X.shape}; expected (n_samples, d_in)")
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).reshape(len(X), -1))
    return X, y


def _bias_mask(spec: MLPSpec) -> Array:
    """Trainable mask of every bias (weights fixed), appendix A.3."""
    mask = np.zeros(spec.n_params, dtype=bool)
    for _, b0, end in spec.offsets():
        mask[b0:end] = True
    return mask
