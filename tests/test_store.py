"""The grid's result store and executors: atomic records, resume after a crash, corrupt
entries redone, failing units recorded without stopping the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ec.runs.executors import Unit, UnitOutput, execute, make_executor
from ec.runs.store import STORE_FILE, ResultStore, StoreError, config_hash

HERE = Path(__file__).resolve().parent


def toy(config, inputs):
    """A unit: logs each execution, optionally misbehaves, returns numbers and arrays."""
    if config.get("log"):
        with open(config["log"], "a") as f:
            f.write(f"{config['i']}\n")
    time.sleep(config.get("sleep", 0.0))
    mode = config.get("mode")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "sysexit":
        sys.exit(3)
    if mode == "kill":
        os._exit(3)
    total = config["i"] * 2 + sum(res["x"] for res, _ in inputs.values())
    return UnitOutput({"x": total}, {"params": np.arange(config["i"] + 1.0)})


def toy_units(log, n=6, sleep=0.0, modes=None):
    modes = modes or {}
    units = [Unit("s", toy, {"i": i, "log": str(log), "sleep": sleep, "mode": modes.get(i)}, {"i": i}) for i in range(n)]
    units.append(Unit("r", toy, {"i": 100, "log": str(log)}, {"i": 100}, deps=tuple(u.key for u in units[:3])))
    return units


def executions(log) -> list[int]:
    return [int(x) for x in Path(log).read_text().split()] if Path(log).exists() else []


@pytest.fixture(scope="module")
def pool():
    ex = make_executor("local", 2)
    yield ex
    ex.close()


def test_config_hash_depends_on_content_only():
    a = config_hash("student", {"x": 1, "y": [1, 2]})
    assert a == config_hash("student", {"y": [1, 2], "x": 1})
    assert a != config_hash("student", {"x": 2, "y": [1, 2]})
    assert a != config_hash("reconstruction", {"x": 1, "y": [1, 2]})
    assert config_hash("r", {}, ["a", "b"]) == config_hash("r", {}, ["b", "a"]) != config_hash("r", {}, ["a"])


def test_record_roundtrip_and_atomic_write(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    rec = store.record("k1", "s", status="done", label={"d": 2}, config={"a": 1}, result={"loss": 1e-20},
                       arrays={"params": np.arange(3.0)}, seed=5, seconds=0.5)
    assert rec.done and rec.seed == 5 and rec.result == {"loss": 1e-20} and rec.n_computes == 1
    assert np.array_equal(store.load_arrays(rec)["params"], np.arange(3.0))
    assert store.valid("k1") is not None
    # A crash while writing the arrays (the rename never happens): no row, no file, no temp file.
    import ec.io

    def crash(*a):
        raise OSError("disk died")

    monkeypatch.setattr(ec.io.os, "replace", crash)
    with pytest.raises(OSError):
        store.record("k2", "s", status="done", label={}, config={}, result={}, arrays={"params": np.ones(2)})
    monkeypatch.undo()
    assert store.get("k2") is None
    assert [p.name for p in (tmp_path / "units").rglob("*") if p.is_file()] == ["k1.npz"]
    # Recording the same key again replaces the row and counts the recomputation.
    rec = store.record("k1", "s", status="done", label={}, config={}, result={"loss": 0.0}, arrays={"params": np.ones(1)})
    assert rec.n_computes == 2 and rec.result == {"loss": 0.0}
    store.close()
    with ResultStore(tmp_path) as again:  # persisted
        assert again.get("k1").n_computes == 2
    with pytest.raises(ValueError, match="status"):
        ResultStore(tmp_path).record("k3", "s", status="maybe", label={}, config={}, result={})


def test_garbage_store_file_is_a_clear_error(tmp_path):
    (tmp_path / STORE_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable result store"):
        ResultStore(tmp_path)


@pytest.mark.slow
def test_failing_units_are_recorded_and_the_run_goes_on(tmp_path, pool):
    log = tmp_path / "log"
    units = toy_units(log, n=6, modes={1: "raise", 3: "sysexit", 4: "kill"})
    store = ResultStore(tmp_path / "run")
    s = execute(units, store, pool)
    status = {r.label["i"]: r.status for r in store.records()}
    assert status == {0: "done", 1: "failed", 2: "done", 3: "failed", 4: "failed", 5: "done", 100: "done"}
    assert "ValueError: boom" in store.get(units[1].key).error
    assert "SystemExit" in store.get(units[3].key).error
    assert "worker process died" in store.get(units[4].key).error
    # the reconstruction-like unit got only its successful inputs: 0*2 + 2*2 + 100*2
    assert store.get(units[-1].key).result["x"] == 204
    assert (s.n_computed, s.n_failed, s.n_skipped) == (4, 3, 0)
    # A second run skips everything (failures included) unless asked to retry them.
    s2 = execute(units, store, pool)
    assert (s2.n_computed, s2.n_failed, s2.n_skipped) == (0, 0, 7)
    s3 = execute(units, store, pool, retry_failed=True)
    assert (s3.n_failed, s3.n_skipped) == (3, 4)


@pytest.mark.slow
def test_corrupt_partial_or_missing_entries_are_redone(tmp_path, pool):
    log = tmp_path / "log"
    units = toy_units(log, n=4)
    store = ResultStore(tmp_path / "run")
    execute(units, store, pool)
    assert sorted(executions(log)) == [0, 1, 2, 3, 100]
    recs = {r.label["i"]: r for r in store.records()}
    root = tmp_path / "run"
    data = (root / recs[0].params_path).read_bytes()
    (root / recs[0].params_path).write_bytes(data[: len(data) // 2])  # truncated (partial)
    (root / recs[1].params_path).write_bytes(data[:-8] + b"garbage!")  # garbled, same length
    (root / recs[3].params_path).unlink()  # missing
    for i in (0, 1, 3):
        assert store.valid(recs[i].key) is None
    assert store.valid(recs[2].key) is not None
    events = []
    s = execute(units, store, pool, on_event=lambda e, u, r: events.append((e, u.label["i"])))
    assert sorted(i for e, i in events if e == "redo") == [0, 1, 3]
    # the redone inputs of unit 100 have the same content (same checksum): it stays valid
    assert sorted(executions(log)) == [0, 0, 1, 1, 2, 3, 3, 100]
    assert (s.n_redone, s.n_computed, s.n_skipped) == (3, 3, 2)
    assert all(store.valid(u.key) is not None for u in units)
    assert {r.label["i"]: r.n_computes for r in store.records()} == {0: 2, 1: 2, 2: 1, 3: 2, 100: 1}
    # An input whose content changed makes the unit that used it stale: only that one reruns.
    store.record(units[2].key, "s", status="done", label={"i": 2}, config=units[2].config, result={"x": 7},
                 arrays={"params": np.zeros(1)})
    s = execute(units, store, pool)
    assert (s.n_redone, s.n_computed, s.n_skipped) == (1, 1, 4)
    assert store.get(units[-1].key).result["x"] == 0 + 2 + 7 + 200


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_resume_after_a_crash_recomputes_no_finished_unit(tmp_path, pool):
    """The driver dies (os._exit) in the middle of a run; the rerun recomputes nothing it recorded."""
    log, run = tmp_path / "log", tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os
        from test_store import toy_units
        from ec.runs.executors import execute, make_executor
        from ec.runs.store import ResultStore
        done = []
        def on_event(event, unit, rec):
            done.append(event)
            if len(done) == 3:
                os._exit(9)  # the driver is killed right after recording its third unit
        execute(toy_units({str(log)!r}, n=8, sleep=0.3), ResultStore({str(run)!r}), make_executor("local", 2),
                on_event=on_event)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        assert proc.wait(timeout=60) == 9
        deadline = time.time() + 20  # its pool workers notice and exit by themselves
        while _group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "pool workers outlived their killed driver"
    finally:
        try:  # whatever is left of the process group we created
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    store = ResultStore(run)
    first = {r.key for r in store.records()}
    assert len(first) == 3
    assert store.runs()[0]["status"] == "running"  # never finished: the driver died
    before = executions(log)
    s = execute(toy_units(log, n=8, sleep=0.3), store, pool)
    assert s.n_skipped == 3 and s.n_computed == 9 - 3
    assert all(r.n_computes == 1 for r in store.records())
    rerun = executions(log)[len(before):]
    recorded_first = {store.get(k).label["i"] for k in first}
    assert not recorded_first & set(rerun), "a unit recorded before the crash was computed again"
