"""Run units of work in parallel and record each in a :class:`~ec.runs.store.ResultStore`.

A :class:`Unit` is a module-level function plus the JSON config it is called with; its key
is the hash of that config (and of its input units' keys). :func:`execute` skips the units
the store already holds intact, sends the others to an executor as soon as their inputs are
finished, and records each result in the driver process as it arrives (workers never touch
the store, so a remote Dask worker needs no shared file system).

Executors (:func:`make_executor`):

- ``"local"`` (default): a process pool (spawn) of ``jobs`` workers. A worker process that
  dies takes only its pool down: the pool is rebuilt and the units that were in flight are
  rerun one at a time; the one that kills its worker alone is recorded as failed.
- ``"dask"``: a ``dask.distributed.LocalCluster`` of ``jobs`` single-threaded worker
  processes.
- ``"tcp://host:port"``: an existing Dask scheduler.

Each unit runs with one BLAS / numba thread and receives the same inputs on every executor,
so results do not depend on where it ran.
"""

from __future__ import annotations

import heapq
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Callable

from .store import Record, ResultStore, config_hash

@dataclass(frozen=True)
class UnitOutput:
    """What a unit function returns: JSON numbers and the arrays to save."""

    result: dict
    arrays: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """One unit of work.

    Attributes
    ----------
    kind : str
        ``"student"``, ``"reconstruction"``, ...
    fn : callable
        Module-level (picklable) ``fn(config, inputs) -> UnitOutput``; ``inputs`` maps
        each dependency's key to ``(result dict, arrays dict)`` for the dependencies that
        finished successfully (failed ones are left out).
    config : dict
        JSON-serialisable; everything the result depends on.
    label : dict
        Coordinates for tables (d, r, teacher, rho, ...); not hashed.
    seed : int or None
    deps : tuple of str
        Keys of the units this one consumes.
    """

    kind: str
    fn: Callable[[dict, dict], UnitOutput]
    config: dict
    label: dict
    seed: int | None = None
    deps: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return config_hash(self.kind, self.config, self.deps)


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _limit_threads() -> None:
    """One BLAS / OpenMP / numba thread: processes are the parallelism, and results must not
    depend on the thread count. Libraries loaded later read the environment variables;
    those already loaded are limited directly."""
    from threadpoolctl import threadpool_limits

    for var in _THREAD_VARS:
        os.environ[var] = "1"
    threadpool_limits(1)
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(1)


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def init_worker_process(parent: int) -> None:
    """A pool worker (grid units, ``train_students``): one thread per library, and it exits
    if the driver is killed (SIGKILL leaves no chance to stop it), instead of lingering."""
    _limit_threads()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def run_unit(fn, config: dict, inputs: dict) -> dict:
    """Worker side: call ``fn`` and turn any exception (even ``SystemExit``) into a
    ``failed`` outcome, so that one bad unit never stops the others."""
    _limit_threads()
    t0, c0 = time.perf_counter(), time.process_time()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        out = fn(config, inputs)
        status, result, arrays, error = "done", out.result, out.arrays, None
    except BaseException as exc:  # noqa: BLE001 - a unit must never take the worker down
        if isinstance(exc, KeyboardInterrupt):
            raise
        status, result, arrays, error = "failed", {}, {}, traceback.format_exc()
    return {
        "status": status,
        "result": result,
        "arrays": arrays,
        "error": error,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,  # unlike wall time, not inflated by a loaded machine
        "worker": worker,
    }


class LocalExecutor:
    """A process pool that rebuilds itself when a worker process dies."""

    def __init__(self, jobs: int):
        self.n_workers = jobs
        self._pool = self._new_pool()

    def _new_pool(self):
        return ProcessPoolExecutor(
            self.n_workers, mp_context=get_context("spawn"), initializer=init_worker_process, initargs=(os.getpid(),)
        )

    def submit(self, unit: Unit, inputs: dict):
        try:
            return self._pool.submit(run_unit, unit.fn, unit.config, inputs)
        except BrokenProcessPool as exc:  # broke before its failed futures were seen
            fut = Future()
            fut.set_exception(exc)
            return fut

    def wait(self, futures):
        done, _ = futures_wait(futures, return_when=FIRST_COMPLETED)
        return done

    @staticmethod
    def worker_died(exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            # an interrupted run must not leave workers computing units nobody will record
            # (ProcessPoolExecutor has no public way to stop a running task before 3.14)
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor:
    """Units as ``dask.distributed`` tasks on a LocalCluster or an existing scheduler."""

    def __init__(self, jobs: int, address: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("--scheduler dask needs dask.distributed: pip install 'ec[dask]'") from None
        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(
                n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
            )
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(address, timeout="20s")
            except OSError as exc:
                raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.n_workers = max(1, sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values()))

    def submit(self, unit: Unit, inputs: dict):
        return self._client.submit(run_unit, unit.fn, unit.config, inputs, pure=False, key=f"{unit.kind}-{unit.key}")

    def wait(self, futures):
        from distributed import wait

        return wait(list(futures), return_when="FIRST_COMPLETED").done

    @staticmethod
    def worker_died(exc: BaseException) -> bool:
        return False  # the scheduler already retried on other workers (KilledWorker)

    def restart(self) -> None:  # pragma: no cover - worker_died is always False
        raise RuntimeError("not applicable")

    def close(self, cancel: bool = False) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(scheduler: str, jobs: int):
    """``"local"``, ``"dask"`` (LocalCluster) or ``"tcp://host:port"``."""
    if scheduler == "local":
        return LocalExecutor(jobs)
    if scheduler == "dask":
        return DaskExecutor(jobs)
    if scheduler.startswith(("tcp://", "tls://", "inproc://")):
        return DaskExecutor(jobs, address=scheduler)
    raise ValueError(f"scheduler={scheduler!r}; allowed: local, dask, tcp://host:port")


def check_scheduler(value: str) -> str:
    """Validate a ``--scheduler`` value without starting anything."""
    value = str(value)
    if value in ("local", "dask") or value.startswith(("tcp://", "tls://", "inproc://")):
        return value
    raise ValueError(f"unknown scheduler {value!r}; allowed: local, dask, tcp://host:port")


@dataclass
class RunSummary:
    """Counts of one :func:`execute` call."""

    run_id: str
    n_units: int
    n_skipped: int = 0
    n_computed: int = 0
    n_failed: int = 0
    n_redone: int = 0


def _inputs_state(unit: Unit, finished: dict[str, Record]) -> dict | None:
    """``{dep key: checksum or 'failed'}`` once every input is finished, else None."""
    if not all(d in finished for d in unit.deps):
        return None
    return {d: (finished[d].checksum if finished[d].done else "failed") for d in unit.deps}


def execute(
    units: list[Unit],
    store: ResultStore,
    executor,
    *,
    retry_failed: bool = False,
    on_event: Callable[[str, Unit, Record | None], Any] | None = None,
    note: str = "",
) -> RunSummary:
    """Compute every unit that the store does not hold intact; record each as it finishes.

    Parameters
    ----------
    units : list of Unit
        In priority order; every dependency must be in the list.
    store : ResultStore
    executor : LocalExecutor or DaskExecutor
    retry_failed : bool
        Compute again the units recorded as failed (default: keep the failure).
    on_event : callable(event, unit, record), optional
        Events: ``"skip"`` (already done), ``"redo"`` (a stored entry was corrupt or its
        inputs changed), ``"done"``, ``"failed"``.
    note : str
        Saved with the run's counters.

    Returns
    -------
    RunSummary
    """
    emit = on_event or (lambda *a: None)
    by_key = {u.key: u for u in units}
    if len(by_key) != len(units):
        raise ValueError("two units have the same key (identical configs)")
    missing = {d for u in units for d in u.deps if d not in by_key}
    if missing:
        raise ValueError(f"{len(missing)} dependencies are not in the unit list")
    order = {k: i for i, k in enumerate(by_key)}
    dependents: dict[str, list[str]] = {}
    for u in units:
        for d in u.deps:
            dependents.setdefault(d, []).append(u.key)

    summary = RunSummary(store.begin_run(len(units), note), len(units))
    finished: dict[str, Record] = {}
    ready: list[tuple[int, int, str]] = []  # (has no deps, position, key): inputs' consumers first

    def push(key):
        heapq.heappush(ready, (0 if by_key[key].deps else 1, order[key], key))

    def settle(key):
        """Decide, once its inputs are finished, whether a unit is stored or must run."""
        unit = by_key[key]
        inputs = _inputs_state(unit, finished)
        if inputs is None:
            return
        rec = store.valid(key, inputs if unit.deps else None)
        if rec is not None and (rec.done or not retry_failed):
            summary.n_skipped += 1
            emit("skip", unit, rec)
            finish(key, rec)
            return
        stored = store.get(key)
        if rec is None and stored is not None:
            summary.n_redone += 1  # a stored entry that is corrupt, partial or stale
            emit("redo", unit, stored)
        push(key)

    def finish(key, rec):
        finished[key] = rec
        for k in dependents.get(key, ()):
            settle(k)

    for key in by_key:
        if not by_key[key].deps:
            settle(key)

    in_flight: dict[Any, str] = {}
    suspects: set[str] = set()  # in flight when a worker process died: rerun one at a time
    capacity = max(2, 2 * executor.n_workers)  # keeps every worker busy without queueing all

    def submit(key):
        unit = by_key[key]
        inputs = {d: (finished[d].result, store.load_arrays(finished[d])) for d in unit.deps if finished[d].done}
        in_flight[executor.submit(unit, inputs)] = key

    def submit_ready():
        if suspects:
            if not in_flight:
                key = min(suspects, key=order.__getitem__)
                suspects.discard(key)
                submit(key)
            return
        while ready and len(in_flight) < capacity:
            submit(heapq.heappop(ready)[2])

    def save(key, out):
        unit = by_key[key]
        rec = store.record(
            key,
            unit.kind,
            status=out["status"],
            label=unit.label,
            config=unit.config,
            result={**out["result"], "cpu_seconds": out.get("cpu_seconds")},
            arrays=out["arrays"],
            inputs=_inputs_state(unit, finished),
            seed=unit.seed,
            seconds=out["seconds"],
            error=out["error"],
            worker=out["worker"],
            run_id=summary.run_id,
        )
        if rec.done:
            summary.n_computed += 1
        else:
            summary.n_failed += 1
        store.update_run(
            summary.run_id,
            n_computed=summary.n_computed,
            n_failed=summary.n_failed,
            n_skipped=summary.n_skipped,
            n_redone=summary.n_redone,
        )
        emit(rec.status, unit, rec)
        finish(key, rec)

    def lost(exc):
        return {"status": "failed", "result": {}, "arrays": {}, "seconds": None, "worker": None, "error": exc}

    store.update_run(summary.run_id, n_skipped=summary.n_skipped, n_redone=summary.n_redone)
    try:
        submit_ready()
        while in_flight:
            for fut in executor.wait(in_flight):
                key = in_flight.pop(fut)
                try:
                    out = fut.result()
                except BaseException as exc:  # noqa: BLE001 - the worker died, not the unit
                    if not executor.worker_died(exc):
                        out = lost(f"worker lost: {type(exc).__name__}: {exc}")
                    elif in_flight:  # several units died with the pool: find the culprit alone
                        suspects.update([key, *in_flight.values()])
                        in_flight.clear()
                        executor.restart()
                        break
                    else:  # it was running alone, so it is the one that kills its worker
                        executor.restart()
                        out = lost(f"the worker process died while running this unit: {exc}")
                save(key, out)
            submit_ready()
    except BaseException:
        store.update_run(summary.run_id, status="interrupted")
        executor.close(cancel=True)
        raise
    store.update_run(summary.run_id, status="finished")
    return summary
