"""Where results live.

- :mod:`ec.runs.rundir`: the run directory of one ``ec synth`` / ``ec cluster`` run
  (config, teacher, students saved as they finish, clusters, report, plots; resumable).
- :mod:`ec.runs.store`: the SQLite result store of many units of work (``ec grid``).
- :mod:`ec.runs.executors`: running those units on a process pool or a Dask cluster.
"""

from .rundir import RunDir, RunDirError

__all__ = ["RunDir", "RunDirError"]
