"""The run directory of one Expand-and-Cluster run (``ec synth``, ``ec cluster``).

Layout (every file written atomically through :mod:`ec.io`)::

    RUN/
      config.json            resolved parameters of the last invocation, and under "environment"
                             its commit, library versions, BLAS, machine and date (ec.provenance)
      teacher.npz            the teacher (Teacher.save)
      students/00000.npz     one file per finished student (TrainResult.to_arrays)
      reconstruction.npz     layer sizes, activation and flat parameters of the result
      clusters.npz           per-neuron arrays of the clustering (labels, linkage, features, ...)
      clusters.json          kept / rejected clusters, cut height, merge groups, collapse details
      report.json            the report (summary, per-neuron alignment, clustering, timings)
      neurons.csv            per-neuron alignment table
      plots/*.png            similarity matrix, dendrogram with the cut, alignment
      recluster/<name>/      the same result files for ``ec cluster RUN`` with other gamma, beta

Students are saved as each finishes, so an interrupted run resumes without retraining
them. Parameters that change what a student is (:data:`STUDENT_KEYS` of the caller) must
match the saved configuration; others (N, gamma, beta, ...) may change between
invocations: more students are trained only where missing.

Each student file also records the problem it was trained on (:func:`problem_record`:
hashes of the teacher, the training data and the training settings), so that students are
never reused for another problem, even when ``config.json`` is gone
(:meth:`RunDir.check_students`).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..cluster import LayerClusters
from ..config import ConfigError
from ..io import atomic_save_npz, atomic_write_json, atomic_write_text
from ..mlp import MLPSpec
from ..provenance import environment
from ..teachers import Teacher
from ..train import TrainResult
from ..train.cached import load_students, run_key

Array = np.ndarray


RESULT_FILES = ("reconstruction.npz", "clusters.npz", "clusters.json", "report.json", "neurons.csv",
                "plots/similarity.png", "plots/dendrogram.png", "plots/alignment.png")


class RunDirError(ConfigError):
    """The directory holds a run that is incompatible with the requested one."""


ENVIRONMENT = "environment"  # the config.json entry recording where and with what the run ran

FOLDER_NAME = "one folder name of letters, digits and . , = + - _ (not . or ..)"


def valid_folder_name(name: str) -> bool:
    """A single folder name: no separator, not ``.`` or ``..``, no absolute path."""
    return bool(re.fullmatch(r"[\w.,=+-]+", name)) and name not in (".", "..")


def problem_record(**parts: tuple[str, tuple]) -> dict:
    """What students were trained on, to be stored with each of them.

    Parameters
    ----------
    **parts
        ``name=(description, things)``: ``things`` (arrays, then a dict of settings) are
        hashed with :func:`ec.train.cached.run_key`; the description is for messages.
        E.g. ``teacher=("2-2-1 g, seed 0", (params, {"sizes": ..., "act": ...}))``.

    Returns
    -------
    dict
        ``{name: {"hash": ..., "about": description}}``.
    """
    record = {}
    for name, (about, things) in parts.items():
        arrays = [t for t in things if isinstance(t, np.ndarray)]
        config = {f"c{i}": t for i, t in enumerate(things) if not isinstance(t, np.ndarray)}
        record[name] = {"hash": run_key(*arrays, **config), "about": about}
    return record


_STUDENT_FILE = re.compile(r"\d{5}\.npz")


class RunDir:
    """Read and write one run directory.

    Parameters
    ----------
    path : str or Path

    Attributes
    ----------
    problem : dict or None
        :func:`problem_record` written into every student saved by :meth:`save_student`.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.problem: dict | None = None

    # -- configuration ------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def load_config(self) -> dict:
        """The run's parameters: ``config.json`` without its ``"environment"`` entry (which
        records where it ran, not what it is, so a rerun elsewhere or later still resumes)."""
        if not self.exists():
            raise RunDirError(f"{str(self.path)!r} is not a run directory (no config.json)")
        try:
            config = json.loads(self.config_path.read_bytes().decode("utf-8"))
        except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            config = exc
        if not isinstance(config, dict):
            why = f"{type(config).__name__}: {config}" if isinstance(config, Exception) else "not a JSON object"
            raise RunDirError(
                f"{str(self.config_path)!r} is corrupt ({why}). It only records the run's parameters: delete it "
                "and rerun the command with the run's options (saved students are checked against the teacher "
                "and data they were trained on, and reused), or choose another --out"
            )
        config.pop(ENVIRONMENT, None)
        return config

    def check_place(self) -> None:
        """Refuse a path where no run directory can be made (a file, under a file, not writable)."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out={str(path)!r} is a file, not a directory; choose another --out")
        parent = path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise RunDirError(f"--out={str(path)!r}: {str(parent)!r} is a file, so no directory can be made "
                              "under it; choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"--out={str(path)!r}: {str(parent)!r} is not writable; choose another --out")

    def init(self, config: dict, identity: tuple[str, ...], write: bool = True) -> bool:
        """Create the directory or check that it holds a compatible run.

        Parameters
        ----------
        config : dict
            JSON-friendly resolved parameters; written to ``config.json``.
        identity : tuple of str
            Keys whose values must equal the saved ones for the saved students to be reused.
        write : bool
            Create the directory and write ``config.json`` now (False: only check, and call
            :meth:`write_config` once every other check passed).

        Returns
        -------
        bool
            True when an existing run is resumed.

        Raises
        ------
        RunDirError
            When an identity key differs from the saved run, ``config.json`` is corrupt, or
            the path cannot hold a directory.
        """
        self.check_place()
        resumed = self.exists()
        if resumed:
            old = self.load_config()
            diff = [k for k in identity if _jsonable(old.get(k)) != _jsonable(config.get(k))]
            if diff:
                details = ", ".join(f"{k}: saved {old.get(k)!r}, now {config.get(k)!r}" for k in diff)
                raise RunDirError(
                    f"{str(self.path)!r} holds a different run ({details}); choose another --out or delete it"
                )
        if write:
            self.write_config(config)
        return resumed

    def write_config(self, config: dict) -> None:
        """Write ``config`` to ``config.json`` with this invocation's
        :func:`ec.provenance.environment` under ``"environment"``."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.config_path, {**config, ENVIRONMENT: environment()})
        except OSError as exc:
            raise RunDirError(f"--out={str(self.path)!r}: cannot write the run directory ({exc.strerror or exc}); "
                              "choose another --out") from None

    # -- teacher and students -----------------------------------------------------------

    @property
    def teacher_path(self) -> Path:
        return self.path / "teacher.npz"

    def save_teacher(self, teacher: Teacher) -> None:
        teacher.save(self.teacher_path)

    def load_teacher(self, hint: str = "") -> Teacher:
        """The saved teacher.

        Raises
        ------
        RunDirError
            ``teacher.npz`` is missing or unreadable (``hint``: what to do, added to the message).
        """
        path = self.teacher_path
        if not path.is_file():
            raise RunDirError(f"{str(path)!r} is missing" + (f"; {hint}" if hint else ""))
        try:
            return Teacher.load(path)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise RunDirError(f"{str(path)!r} is unreadable ({unreadable_reason(exc)})"
                              + (f"; {hint}" if hint else "")) from None

    def check_teacher(self, teacher: Teacher) -> bool:
        """Refuse to replace a readable saved teacher by another one.

        Returns
        -------
        bool
            False when there is no readable ``teacher.npz`` (it can be written).
        """
        try:
            old = self.load_teacher()
        except RunDirError:
            return False
        if old.spec != teacher.spec or not np.array_equal(old.params, teacher.params):
            raise RunDirError(
                f"{str(self.teacher_path)!r} holds another teacher ({'-'.join(map(str, old.spec.layer_sizes))} "
                f"{old.spec.activation}, seed {old.seed}) than this run "
                f"({'-'.join(map(str, teacher.spec.layer_sizes))} {teacher.spec.activation}, seed {teacher.seed}); "
                f"choose another --out, or delete {str(self.path)!r} to start over"
            )
        return True

    def student_path(self, index: int) -> Path:
        return self.path / "students" / f"{index:05d}.npz"

    def save_student(self, index: int, result: TrainResult) -> None:
        arrays = result.to_arrays()
        if self.problem is not None:
            arrays["problem"] = np.array(json.dumps(self.problem, sort_keys=True))
        atomic_save_npz(self.student_path(index), **arrays)

    def check_students(self, problem: dict, trusted: bool) -> None:
        """Refuse saved students that were trained on another problem, then record ``problem``
        for the students saved from now on.

        Parameters
        ----------
        problem : dict
            :func:`problem_record` of this run.
        trusted : bool
            Whether students that record no problem (saved by an older version) may be
            reused: True when ``config.json`` was there and matched.

        Raises
        ------
        RunDirError
            Naming the first student file whose teacher, data or training differs, or, when
            not ``trusted``, one that records nothing.
        """
        folder = self.path / "students"
        files = sorted(f for f in folder.glob("*.npz") if _STUDENT_FILE.fullmatch(f.name)) if folder.is_dir() else []
        unrecorded = []
        for path in files:
            try:
                with np.load(path, allow_pickle=False) as f:
                    saved = json.loads(str(f["problem"])) if "problem" in f.files else None
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue  # unreadable: trained again, with a message (load_students)
            if saved is None:
                unrecorded.append(path)
                continue
            diff = [k for k in problem if not isinstance(saved.get(k), dict)
                    or saved[k].get("hash") != problem[k]["hash"]]
            if diff:
                details = "; ".join(
                    f"{k}: saved {saved[k].get('about')!r}, now {problem[k]['about']!r}"
                    if isinstance(saved.get(k), dict) else f"{k}: not recorded" for k in diff
                )
                raise RunDirError(
                    f"{str(path)!r} was trained on another problem than this run ({details}), so the saved students "
                    f"cannot be reused; choose another --out, or delete {str(self.path)!r} to start over"
                )
        if unrecorded and not trusted:
            raise RunDirError(
                f"{str(self.path)!r} has {len(unrecorded)} saved students that do not record what they were trained "
                f"on (e.g. {str(unrecorded[0])!r}, saved by an older version) and no config.json to vouch for "
                f"them; choose another --out, or delete {str(folder)!r} to train them again"
            )
        self.problem = problem

    def load_students(self, n: int, spec: MLPSpec | None = None, seeds=None,
                      on_skip: Callable[[int, Path, str], None] | None = None) -> dict[int, TrainResult]:
        """Saved students ``0..n-1`` that are readable and match ``spec`` and ``seeds``
        (:func:`ec.train.cached.load_students`; ``on_skip(index, path, reason)`` for the
        others that have a file)."""
        return load_students(self.student_path, n, spec, seeds, on_skip=on_skip)

    # -- results ------------------------------------------------------------------------

    def result_dir(self, name: str | None = None) -> Path:
        """Where reconstruction results go: the run itself, or ``recluster/<name>``.

        Raises
        ------
        RunDirError
            A ``name`` that is not one folder name (``..``, ``a/b``, an absolute path).
        """
        if not name:
            return self.path
        if not valid_folder_name(name):
            raise RunDirError(f"--name={name!r} is not allowed; allowed: {FOLDER_NAME}")
        return self.path / "recluster" / name

    @staticmethod
    def save_result(
        target: Path,
        spec: MLPSpec,
        params: Array,
        clusters: LayerClusters,
        report: dict,
        rows: list[dict],
    ) -> None:
        """Write the reconstruction, clustering, report and per-neuron CSV into ``target``."""
        target = Path(target)
        atomic_save_npz(
            target / "reconstruction.npz",
            layer_sizes=np.asarray(spec.layer_sizes, dtype=np.int64),
            activation=np.array(spec.activation),
            params=np.asarray(params, dtype=np.float64),
        )
        atomic_save_npz(
            target / "clusters.npz",
            labels=clusters.labels,
            linkage=clusters.linkage,
            features=clusters.features,
        )
        atomic_write_json(target / "clusters.json", clusters_summary(clusters))
        atomic_write_json(target / "report.json", report)
        atomic_write_text(target / "neurons.csv", pd.DataFrame(rows).to_csv(index=False))

    @staticmethod
    def clear_result(target: Path) -> None:
        """Remove the result files of an earlier reconstruction in ``target`` (when this
        one failed, so that no stale network sits next to its report)."""
        for name in RESULT_FILES:
            (Path(target) / name).unlink(missing_ok=True)

    @staticmethod
    def load_reconstruction(target: Path) -> tuple[MLPSpec, Array]:
        with np.load(Path(target) / "reconstruction.npz", allow_pickle=False) as f:
            spec = MLPSpec(tuple(int(s) for s in f["layer_sizes"]), str(f["activation"]))
            return spec, np.array(f["params"], dtype=np.float64)


def clusters_summary(clusters: LayerClusters) -> dict:
    """JSON-friendly description of a clustering (without the per-neuron arrays)."""
    sizes = np.bincount(clusters.labels)
    return {
        "kept": [int(c) for c in clusters.kept],
        "kept_sizes": [int(sizes[c]) for c in clusters.kept],
        "rejected": {str(c): r for c, r in clusters.rejected.items()},
        "median_angle": {str(c): float(a) for c, a in clusters.median_angle.items()},
        "cut_height": clusters.cut_height,
        "cut_index": clusters.cut_index,
        "min_size": clusters.min_size,
        "metric": clusters.metric,
        "sign_invariant": clusters.sign_invariant,
        "gamma": clusters.gamma,
        "beta": clusters.beta,
        "n_students": clusters.n_students,
        "info": clusters.info,
    }


def unreadable_reason(exc: BaseException) -> str:
    """A short reason why a saved ``.npz`` file could not be read."""
    if isinstance(exc, zipfile.BadZipFile) or "pickled" in str(exc):
        return "not an .npz archive written by ec"
    if isinstance(exc, KeyError):
        return f"an .npz archive without the entry {exc}"
    return f"{type(exc).__name__}: {exc}"


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
