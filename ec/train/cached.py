"""Students saved one file each as they finish, so that a rerun trains only the missing ones.

The folder stands for everything the students depend on: name it with :func:`run_key`
over the data, the initial points and the options, and a changed input gets a new folder
instead of stale students.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..io import atomic_save_npz
from ..mlp import MLPSpec
from .base import Budget, TrainResult, _backend_class, train_students

Array = np.ndarray


def run_key(*arrays: Array, **config) -> str:
    """16 hex digits of SHA-1 over the arrays (dtype, shape, bytes) and the config as JSON;
    callables (progress callbacks) are left out, other objects enter by their ``repr``."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    h.update(json.dumps(config, sort_keys=True, default=lambda v: None if callable(v) else repr(v)).encode())
    return h.hexdigest()[:16]


def load_students(path_of: Callable[[int], Path], n: int, spec: MLPSpec | None = None,
                  seeds: Sequence[int] | None = None,
                  on_skip: Callable[[int, Path, str], None] | None = None) -> dict[int, TrainResult]:
    """Saved students ``0..n-1`` (``path_of(i)``) that are readable and match ``spec`` and
    ``seeds``; a missing, unreadable or mismatched file is left out (that student is trained
    again and its file overwritten). ``on_skip(index, path, reason)`` is called for every
    file that exists but is left out, so that the caller can say why it is retrained."""
    found = {}
    for i in range(n):
        path = path_of(i)
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as f:
                res = TrainResult.from_arrays(f)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            if on_skip is not None:
                why = ("not an .npz archive" if isinstance(exc, zipfile.BadZipFile) or "pickled" in str(exc)
                       else f"{type(exc).__name__}: {exc}")
                on_skip(i, path, f"unreadable ({why})")
            continue
        if spec is not None and res.spec != spec:
            if on_skip is not None:
                on_skip(i, path, f"a student of {'-'.join(map(str, res.spec.layer_sizes))} {res.spec.activation}, "
                                 f"not {'-'.join(map(str, spec.layer_sizes))} {spec.activation}")
            continue
        if seeds is not None and res.seed != seeds[i]:
            if on_skip is not None:
                on_skip(i, path, f"trained from seed {res.seed}, not {seeds[i]}")
            continue
        found[i] = res
    return found


def train_students_cached(
    folder: str | Path | None,
    spec: MLPSpec,
    X: Array,
    y: Array,
    seeds: Sequence[int],
    backend: str = "flow",
    budget: Budget | None = None,
    *,
    theta0s: Sequence[Array] | None = None,
    on_result: Callable[[int, TrainResult], None] | None = None,
    name: str = "student",
    **kwargs,
) -> tuple[list[TrainResult], list[int]]:
    """:func:`ec.train.train_students` that keeps its students in ``folder``.

    Each student is written to ``folder/<name>-NNN.npz`` (atomically) as it finishes; a
    file already there with the same architecture and seed, and not failed, is loaded
    instead of training that student again. A backend that trains its students as one
    batch and takes a ``checkpoint`` option (torch) checkpoints that batch in
    ``folder/<name>-batch.ckpt.npz``, so an interrupted batch resumes too, unless the caller
    names another checkpoint. ``folder=None`` saves nothing.

    Parameters
    ----------
    folder : str or Path or None
    spec, X, y, seeds, backend, budget, theta0s, on_result, **kwargs
        As for :func:`ec.train.train_students`; ``on_result`` is called for the students
        trained here, with their index in ``seeds``.
    name : str
        File name prefix (several groups of students can share a folder).

    Returns
    -------
    results : list of TrainResult
        One per seed, in order.
    loaded : list of int
        Indices of the students read from ``folder``.
    """
    path = (lambda i: Path(folder) / f"{name}-{i:03d}.npz") if folder is not None else None
    saved = load_students(path, len(seeds), spec, seeds) if path is not None else {}
    done = {i: res for i, res in saved.items() if not res.failed}  # a failed one is retried
    loaded = sorted(done)
    todo = [i for i in range(len(seeds)) if i not in done]

    def finished(j: int, res: TrainResult) -> None:
        if path is not None:
            atomic_save_npz(path(todo[j]), **res.to_arrays())
        if on_result is not None:
            on_result(todo[j], res)

    if todo:
        cls = _backend_class(backend)
        if path is not None and cls.batched and "checkpoint" in inspect.signature(cls).parameters:
            kwargs.setdefault("checkpoint", Path(folder) / f"{name}-batch.ckpt.npz")
        picked = None if theta0s is None else [theta0s[i] for i in todo]
        new = train_students(spec, X, y, [seeds[i] for i in todo], backend, budget, theta0s=picked,
                             on_result=finished, **kwargs)
        done.update(zip(todo, new))
    return [done[i] for i in range(len(seeds))], loaded
