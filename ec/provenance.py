"""Where and with what a result was computed: commit, library versions, BLAS, machine, date.

Every results file the project writes records :func:`environment` (run directories in
``config.json``, the grid report in ``report/environment.json``, benchmarks in a
``<name>.env.json`` sidecar written by :func:`write_sidecar`), so that a result that
changes can be traced to the code or the libraries that changed it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .io import atomic_write_json, atomic_write_text

#: Distributions whose version is recorded (read from their metadata: nothing is imported).
PACKAGES = ("numpy", "scipy", "numba", "llvmlite", "torch", "pandas", "scikit-learn", "threadpoolctl")

#: The folder above the ``ec`` package: a git checkout when ``ec`` is installed editable.
SOURCE = Path(__file__).resolve().parents[1]


def environment() -> dict:
    """The provenance of a result computed now, in this process.

    Returns
    -------
    dict
        ``date`` (UTC, ISO 8601), ``commit`` (:func:`git_commit`), ``python``, ``packages``
        (``{name: version or None}`` for :data:`PACKAGES`), ``blas`` (:func:`blas_info`) and
        ``machine`` (platform, processor, ``cpu_count``, ``cpus_usable``, ``load_avg`` over
        1, 5 and 15 minutes at the call). Never raises for a missing git, package or BLAS.
    """
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "blas": blas_info(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": usable,
            "load_avg": load,
        },
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(source: str | Path | None = None) -> dict | None:
    """The git commit of the checkout that holds the ``ec`` package.

    Parameters
    ----------
    source : path, optional
        Folder whose git checkout is asked (default :data:`SOURCE`); the answer counts only
        if its top level is ``source`` itself (an installed copy inside some other
        repository is not that repository's commit).

    Returns
    -------
    dict or None
        ``{"sha": HEAD, "dirty": files differ from HEAD or are new (ignored ones aside)}``,
        or None when ``source`` is not the top of a git checkout or git is unavailable.
        Reads only: the index is not refreshed (``--no-optional-locks``).
    """
    source = Path(SOURCE if source is None else source)

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(source), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        top, sha = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != source.resolve():
            return None
        dirty = bool(git("status", "--porcelain"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": dirty}


def blas_info() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process (``threadpoolctl``), after
    importing numpy so that its BLAS is among them: ``internal_api``, ``version``,
    ``num_threads``, ``architecture`` and ``library`` (file, with the folder that tells
    whose copy it is, e.g. ``numpy.libs/...``) of each; empty without threadpoolctl."""
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "num_threads", "architecture")
    return [{**{k: lib.get(k) for k in keys}, "library": "/".join(Path(lib.get("filepath", "")).parts[-2:])}
            for lib in threadpool_info()]


def sidecar_path(results: str | Path) -> Path:
    """``results.csv`` -> ``results.env.json`` in the same folder."""
    results = Path(results)
    return results.with_name(results.stem + ".env.json")


def write_sidecar(results: str | Path, env: dict | None = None, **extra) -> Path:
    """Write the environment of a results file atomically beside it (:func:`sidecar_path`).

    Parameters
    ----------
    results : path
        The results file (CSV, text) described.
    env : dict, optional
        :func:`environment` taken earlier (e.g. at the start of a benchmark, so that the load
        is the one it started under); default: taken now.
    **extra
        More entries, e.g. ``command`` (the command line that wrote the file).

    Returns
    -------
    Path
        The sidecar written.
    """
    return atomic_write_json(sidecar_path(results), {**(env or environment()), **extra})


def command_line(script: str | Path, argv: list[str] | None = None) -> str:
    """The command that ran ``script`` (a path), with ``argv`` as given to its ``main``
    (default: this process's arguments), as recorded in a sidecar."""
    script = Path(script)
    where = f"{script.parent.name}/{script.name}" if script.parent.name else script.name
    return " ".join(["python3", where, *(sys.argv[1:] if argv is None else argv)])


def write_table(path: str | Path, table, env: dict | None = None, command: str | None = None,
                **to_csv) -> Path:
    """Write a pandas table as CSV atomically, its environment beside it (:func:`write_sidecar`,
    with ``command`` when given); ``to_csv`` options as pandas takes them."""
    atomic_write_text(path, table.to_csv(index=False, **to_csv))
    extra = {} if command is None else {"command": command}
    write_sidecar(path, env, **extra)
    return Path(path)
