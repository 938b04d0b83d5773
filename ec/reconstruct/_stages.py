"""What every stage of a reconstruction shares: the students' seeds, the initialisation and
trainable mask of students with reconstructed layers fixed, and training one stage's N
students (:class:`StudentTraining`), saved as they finish when a cache folder is given."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..mlp import MLPSpec, mse
from ..progress import Event
from ..train import Budget, TrainResult, train_students
from ..train.cached import run_key, train_students_cached
from ._layer import ReconstructionError

Array = np.ndarray


def student_seed(seed: int, index: int) -> int:
    """Seed of student ``index``: ``10000 * seed + index`` (so seed 0 gives 0, 1, 2, ...,
    the students of ``ec grid``)."""
    return 10_000 * int(seed) + int(index)


def stage_seeds(seed: int, stage: int, n_students: int) -> list[int]:
    """Seeds of the students of retraining stage ``stage`` (0: the original students).

    Stage ``s`` uses :func:`student_seed` indices ``s N .. s N + N - 1``, so stage 0 gives
    exactly the students of the one-layer estimator.
    """
    return [student_seed(seed, stage * n_students + i) for i in range(n_students)]


def fixed_weights_mask(spec: MLPSpec, n_fixed: int) -> Array:
    """Trainable mask: every parameter except the weight matrices of the first ``n_fixed`` layers."""
    mask = np.ones(spec.n_params, dtype=bool)
    for w0, b0, _ in spec.offsets()[:n_fixed]:
        mask[w0:b0] = False
    return mask


def stage_init(spec: MLPSpec, fixed: Sequence[tuple[Array, Array]], seed: int) -> Array:
    """Glorot-normal initialisation of ``spec`` from ``seed`` with the first layers replaced
    by ``fixed`` ``[(W, b), ...]``."""
    layers = spec.unpack(spec.init_params(seed))
    return spec.pack([*fixed, *layers[len(fixed):]])


def sub_student(student: TrainResult, layer: int, neurons: slice = slice(None)) -> TrainResult:
    """Hidden layer ``layer`` (0-based) of a student with its outgoing weights, as a
    one-hidden-layer :class:`TrainResult` with the student's loss (what
    :class:`ec.cluster.NeuronTable` clusters); only the ``neurons`` of that layer."""
    (W, b), (A, c) = student.spec.unpack(student.params)[layer:layer + 2]
    W, b, A = W[neurons], b[neurons], A[:, neurons]
    sub = MLPSpec((W.shape[1], len(b), len(c)), student.spec.activation)
    return replace(student, spec=sub, params=sub.pack([(W, b), (A, c)]))


def usable(students: Sequence[TrainResult]) -> list[TrainResult]:
    """The students that did not fail and have a finite loss."""
    return [s for s in students if not s.failed and np.isfinite(s.loss)]


# A group of near-best students is at least this large; fewer are no group (see voters).
MIN_VOTERS = 3
# Losses below this fraction of the output variance are zero loss (the paper's threshold,
# Fig. 4): between two such students the ratio of losses is round-off, not a distance.
ZERO_LOSS_FRACTION = 1e-14


def voters(students: Sequence[TrainResult], loss_ratio: float, gamma: float,
           zero_loss: float = 0.0) -> tuple[list[TrainResult], bool]:
    """The usable students whose neurons are clustered, and whether a cluster needs a
    neuron of every one of them (``unanimous``; otherwise of ``gamma`` of them).

    The students within ``loss_ratio`` of the lowest loss, or of ``zero_loss`` when the
    lowest is below it (machine-precision students: 5-4-3-2 students at 2.8e-31 and
    1.2e-29 and two more below 1e-11 are one group), in their given order: unanimous
    when they are at least :data:`MIN_VOTERS` and at most half of the usable students;
    with ``gamma`` when they are more than half and enough for a cluster of two
    (``ceil(gamma n) >= 2``). Otherwise every usable student, with ``gamma``.

    A student at (near) machine-precision loss is an exact expansion of the teacher, one in
    a local minimum is not, and a majority of the latter must not outvote a group of the
    former. One or two students ahead of the rest are no such group: 3-2-2-1 students at
    6e-11 and 5e-9 among eight at ~3e-7 held the wrong first-layer neurons, which all ten
    together did not. A few students that fit this much better than the rest hold every
    teacher neuron of the layer (its neurons' functions are linearly independent), while
    the neurons they do not need agree only by chance: 3-2-2-1 students held the teacher's
    two first-layer neurons in all six (seed 3) and three (seed 0) near-best students, and
    spurious clusters in 3-5 of the six and 2 of the three. Where most students are within
    the ratio (19 of 20 for seed 4), none stands out and no neuron was held by all of
    them (docs/deep.md).
    """
    good = usable(students)
    if not good:
        return good, False
    best = max(min(s.loss for s in good), zero_loss)
    chosen = [s for s in good if s.loss <= loss_ratio * best]
    if len(chosen) < MIN_VOTERS:
        return good, False
    if 2 * len(chosen) <= len(good):
        return chosen, True
    return (chosen if len(chosen) > 1 / gamma else good), False


def _restore_fixed(res: TrainResult, theta0: Array, trainable: Array, X: Array, y: Array) -> TrainResult:
    """Put fixed parameters back bit for bit (should a backend round them) and re-evaluate."""
    if res.failed or np.array_equal(res.params[~trainable], theta0[~trainable]):
        return res
    params = res.params.copy()
    params[~trainable] = theta0[~trainable]
    return replace(res, params=params, loss=mse(res.spec, params, X, y))


@dataclass(frozen=True)
class StudentTraining:
    """How the students of every stage are trained: the estimator's training parameters,
    handed to the stages instead of the estimator itself.

    Attributes
    ----------
    activation : str
    n_students : int
    seed : int
    backend : str
    backend_options : dict
    n_jobs : int or None
    retrain_dir : Path or None
        Folder where each retraining stage's students are saved as they finish.
    progress : callable or None
        ``progress(event, **info)``.
    """

    activation: str
    n_students: int
    seed: int
    backend: str
    backend_options: dict
    n_jobs: int | None
    retrain_dir: Path | None
    progress: Callable | None

    def emit(self, event: str, **info) -> None:
        if self.progress is not None:
            self.progress(event, **info)

    def train(self, spec: MLPSpec, X: Array, y: Array, seeds: Sequence[int], budget: Budget | None,
              theta0s: Sequence[Array] | None = None, trainable: Array | None = None,
              on_result: Callable[[int, TrainResult], None] | None = None) -> list[TrainResult]:
        """One call of :func:`ec.train.train_students` with these settings."""
        return train_students(spec, X, y, list(seeds), backend=self.backend, budget=budget, n_jobs=self.n_jobs,
                              theta0s=theta0s, trainable=trainable, on_result=on_result,
                              **self.backend_options)

    def train_stage(self, X: Array, y: Array, spec: MLPSpec, seeds: Sequence[int], theta0s: Sequence[Array],
                    mask: Array, budget: Budget | None, label: str,
                    folder_prefix: str) -> tuple[list[TrainResult], list[TrainResult]]:
        """Train N students of ``spec`` from ``theta0s`` with the parameters outside ``mask``
        fixed (put back bit for bit), saved in ``retrain_dir / <folder_prefix>-<hash>`` when
        ``retrain_dir`` is set, with progress events named ``label``.

        Returns
        -------
        results : list of TrainResult
            One per seed.
        usable : list of TrainResult
            The ones that did not fail.

        Raises
        ------
        ReconstructionError
            Fewer than two usable students.
        """
        folder = None
        if self.retrain_dir is not None:
            key = run_key(X, y, np.stack(theta0s), mask, sizes=spec.layer_sizes, activation=self.activation,
                          backend=self.backend, budget=budget, options=self.backend_options)
            folder = Path(self.retrain_dir) / f"{folder_prefix}-{key}"
        self.emit(Event.STAGE, name=label)
        self.emit(Event.STAGE, name="students", total=len(seeds), done=0)
        n_done = 0

        def finished(i, res, resumed=False):
            nonlocal n_done
            n_done += 1
            self.emit(Event.STUDENT, index=i, result=res, done=n_done, total=len(seeds), resumed=resumed)

        results, loaded = train_students_cached(
            folder, spec, X, y, seeds, backend=self.backend, budget=budget, n_jobs=self.n_jobs, theta0s=theta0s,
            trainable=mask, on_result=finished, **self.backend_options,
        )
        for i in loaded:
            finished(i, results[i], resumed=True)
        results = [_restore_fixed(r, t, mask, X, y) for r, t in zip(results, theta0s)]
        good = usable(results)
        if len(good) < 2:
            raise ReconstructionError(f"{label}: only {len(good)} of {len(results)} students usable")
        return results, good
