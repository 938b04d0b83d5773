"""The run directory of one Expand-and-Cluster run (``ec synth``, ``ec cluster``).

Layout (every file written atomically through :mod:`ec.io`)::

    RUN/
      config.json            resolved parameters of the last invocation
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
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..cluster import LayerClusters
from ..config import ConfigError
from ..io import atomic_save_npz, atomic_write_json, atomic_write_text
from ..mlp import MLPSpec
from ..teachers import Teacher
from ..train import TrainResult
from ..train.cached import load_students

Array = np.ndarray


RESULT_FILES = ("reconstruction.npz", "clusters.npz", "clusters.json", "report.json", "neurons.csv",
                "plots/similarity.png", "plots/dendrogram.png", "plots/alignment.png")


class RunDirError(ConfigError):
    """The directory holds a run that is incompatible with the requested one."""


class RunDir:
    """Read and write one run directory.

    Parameters
    ----------
    path : str or Path
    """

    def __init__(self, path):
        self.path = Path(path)

    # -- configuration ------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def load_config(self) -> dict:
        if not self.exists():
            raise RunDirError(f"{str(self.path)!r} is not a run directory (no config.json)")
        return json.loads(self.config_path.read_text())

    def init(self, config: dict, identity: tuple[str, ...]) -> bool:
        """Create the directory or check that it holds a compatible run.

        Parameters
        ----------
        config : dict
            JSON-friendly resolved parameters; written to ``config.json``.
        identity : tuple of str
            Keys whose values must equal the saved ones for the saved students to be reused.

        Returns
        -------
        bool
            True when an existing run is resumed.

        Raises
        ------
        RunDirError
            When an identity key differs from the saved run.
        """
        resumed = self.exists()
        if resumed:
            old = self.load_config()
            diff = [k for k in identity if _jsonable(old.get(k)) != _jsonable(config.get(k))]
            if diff:
                details = ", ".join(f"{k}: saved {old.get(k)!r}, now {config.get(k)!r}" for k in diff)
                raise RunDirError(
                    f"{str(self.path)!r} holds a different run ({details}); choose another --out or delete it"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config)
        return resumed

    # -- teacher and students -----------------------------------------------------------

    def save_teacher(self, teacher: Teacher) -> None:
        teacher.save(self.path / "teacher.npz")

    def load_teacher(self) -> Teacher:
        return Teacher.load(self.path / "teacher.npz")

    def student_path(self, index: int) -> Path:
        return self.path / "students" / f"{index:05d}.npz"

    def save_student(self, index: int, result: TrainResult) -> None:
        atomic_save_npz(self.student_path(index), **result.to_arrays())

    def load_students(self, n: int, spec: MLPSpec | None = None, seeds=None) -> dict[int, TrainResult]:
        """Saved students ``0..n-1`` that are readable and match ``spec`` and ``seeds``
        (:func:`ec.train.cached.load_students`)."""
        return load_students(self.student_path, n, spec, seeds)

    # -- results ------------------------------------------------------------------------

    def result_dir(self, name: str | None = None) -> Path:
        """Where reconstruction results go: the run itself, or ``recluster/<name>``."""
        return self.path if not name else self.path / "recluster" / name

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


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
