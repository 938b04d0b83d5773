"""A result store that survives interruption: SQLite (standard library) plus one ``.npz``
file per finished unit of work.

A *unit* (one trained student, one reconstruction) is identified by its key, the hash of
everything its result depends on (:func:`config_hash`). Recording a finished unit is two
atomic steps in a fixed order:

1. its arrays are written to ``units/<kind>/<key[:2]>/<key>.npz`` (temp file + rename,
   :mod:`ec.io`) and their SHA-256 is computed;
2. one SQLite transaction inserts the row: key, kind, status, seed, label, config, result
   numbers, the file's relative path and checksum, and the checksums of the inputs it used.

A crash between the two leaves an orphan file that the next attempt overwrites; a crash
before step 1 leaves nothing. On resume, :meth:`ResultStore.valid` accepts a row only if
its file exists and still has the recorded checksum (and, for units with inputs, only if
those inputs are unchanged), so a missing, truncated or garbled file makes the unit count
as not done and it is computed again.

Every execution is also counted (``n_computes`` per unit, and a ``runs`` table with
computed / skipped / failed / redone counts per invocation), so that a resumed run can
prove it recomputed nothing that had finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io import atomic_write_bytes
from ..provenance import environment

STORE_FILE = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    seed        INTEGER,
    label       TEXT NOT NULL,
    config      TEXT NOT NULL,
    result      TEXT NOT NULL,
    params_path TEXT,
    checksum    TEXT,
    inputs      TEXT NOT NULL,
    seconds     REAL,
    error       TEXT,
    worker      TEXT,
    run_id      TEXT,
    finished_at REAL NOT NULL,
    n_computes  INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS units_kind ON units (kind);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    ended_at   REAL,
    status     TEXT NOT NULL,
    n_units    INTEGER NOT NULL,
    n_skipped  INTEGER NOT NULL DEFAULT 0,
    n_computed INTEGER NOT NULL DEFAULT 0,
    n_failed   INTEGER NOT NULL DEFAULT 0,
    n_redone   INTEGER NOT NULL DEFAULT 0,
    note       TEXT,
    environment TEXT
);
"""


def _canonical(obj) -> str:
    """Deterministic JSON: sorted keys, floats as repr (so 0.1 and 0.10 hash alike)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def config_hash(kind: str, config: dict, deps: Iterable[str] = ()) -> str:
    """The key of a unit: SHA-256 (hex, 24 chars) of its kind, config and input keys.

    Parameters
    ----------
    kind : str
    config : dict
        JSON-serialisable; every parameter the unit's result depends on, nothing else
        (worker counts and schedulers must stay out, so they never invalidate results).
    deps : iterable of str
        Keys of the units whose results this unit consumes.
    """
    text = _canonical({"kind": kind, "config": config, "deps": sorted(deps)})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _npz_bytes(arrays: dict) -> bytes:
    """``np.savez`` bytes with fixed timestamps: the same arrays give the same checksum, so
    an input recomputed to identical content does not invalidate the units that used it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


@dataclass(frozen=True)
class Record:
    """One row of the store."""

    key: str
    kind: str
    status: str
    seed: int | None
    label: dict
    config: dict
    result: dict
    params_path: str | None
    checksum: str | None
    inputs: dict
    seconds: float | None
    error: str | None
    worker: str | None
    run_id: str | None
    finished_at: float
    n_computes: int

    @property
    def done(self) -> bool:
        return self.status == "done"


class StoreError(RuntimeError):
    """The store file cannot be opened or read (not a store, or damaged beyond repair)."""


class ResultStore:
    """The SQLite store of a run directory.

    Parameters
    ----------
    root : path
        Run directory; the database is ``root/store.sqlite`` and unit files live under
        ``root/units``. Created if missing.

    Only one process writes (the driver); workers return their results to it. SQLite's
    transactions make each :meth:`record` all-or-nothing.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / STORE_FILE
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
            if "environment" not in columns:  # a store made before runs recorded their environment
                self._conn.execute("ALTER TABLE runs ADD COLUMN environment TEXT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable result store ({exc}); move it away to start afresh") from None
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing -------------------------------------------------------------------------
    def record(
        self,
        key: str,
        kind: str,
        *,
        status: str,
        label: dict,
        config: dict,
        result: dict,
        arrays: dict | None = None,
        inputs: dict | None = None,
        seed: int | None = None,
        seconds: float | None = None,
        error: str | None = None,
        worker: str | None = None,
        run_id: str | None = None,
    ) -> Record:
        """Save a finished unit: its arrays file first, then its row in one transaction.

        ``inputs`` maps each input unit's key to the checksum it had when used.
        ``n_computes`` counts how many times this key was ever recorded.
        """
        if status not in ("done", "failed"):
            raise ValueError(f"status={status!r}; allowed: done, failed")
        rel = checksum = None
        if arrays:
            rel = f"units/{kind}/{key[:2]}/{key}.npz"
            data = _npz_bytes(arrays)
            atomic_write_bytes(self.root / rel, data)
            checksum = hashlib.sha256(data).hexdigest()
        row = (
            key,
            kind,
            status,
            seed,
            _canonical(label),
            _canonical(config),
            _canonical(result),
            rel,
            checksum,
            _canonical(inputs or {}),
            seconds,
            error,
            worker,
            run_id,
            time.time(),
        )
        with self._transaction() as c:
            c.execute(
                """INSERT INTO units (key, kind, status, seed, label, config, result, params_path,
                       checksum, inputs, seconds, error, worker, run_id, finished_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(key) DO UPDATE SET
                       kind=excluded.kind, status=excluded.status, seed=excluded.seed,
                       label=excluded.label, config=excluded.config, result=excluded.result,
                       params_path=excluded.params_path, checksum=excluded.checksum,
                       inputs=excluded.inputs, seconds=excluded.seconds, error=excluded.error,
                       worker=excluded.worker, run_id=excluded.run_id,
                       finished_at=excluded.finished_at, n_computes=units.n_computes + 1""",
                row,
            )
        return self.get(key)

    @contextmanager
    def _transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------
    @staticmethod
    def _to_record(row) -> Record:
        return Record(
            key=row["key"],
            kind=row["kind"],
            status=row["status"],
            seed=row["seed"],
            label=json.loads(row["label"]),
            config=json.loads(row["config"]),
            result=json.loads(row["result"]),
            params_path=row["params_path"],
            checksum=row["checksum"],
            inputs=json.loads(row["inputs"]),
            seconds=row["seconds"],
            error=row["error"],
            worker=row["worker"],
            run_id=row["run_id"],
            finished_at=row["finished_at"],
            n_computes=row["n_computes"],
        )

    def get(self, key: str) -> Record | None:
        row = self._conn.execute("SELECT * FROM units WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._to_record(row)

    def records(self, kind: str | None = None, keys: Iterable[str] | None = None) -> list[Record]:
        """All rows (of one kind), or the rows of the given keys that exist."""
        if keys is not None:
            found = (self.get(k) for k in keys)
            return [r for r in found if r is not None and (kind is None or r.kind == kind)]
        if kind is None:
            rows = self._conn.execute("SELECT * FROM units ORDER BY finished_at").fetchall()
        else:
            rows = self._conn.execute("SELECT * FROM units WHERE kind = ? ORDER BY finished_at", (kind,)).fetchall()
        return [self._to_record(r) for r in rows]

    def file_ok(self, rec: Record) -> bool:
        """True when the unit's arrays file is present and has the recorded checksum."""
        if rec.params_path is None:
            return rec.checksum is None
        path = self.root / rec.params_path
        try:
            data = path.read_bytes()
        except OSError:
            return False
        return rec.checksum is not None and hashlib.sha256(data).hexdigest() == rec.checksum

    def valid(self, key: str, inputs: dict | None = None) -> Record | None:
        """The record of ``key`` if it is finished and intact, else None.

        Parameters
        ----------
        key : str
        inputs : dict, optional
            The current ``{input key: checksum}`` of this unit's inputs; a record made from
            other inputs is stale (an input was recomputed since) and counts as not done.
        """
        rec = self.get(key)
        if rec is None or not self.file_ok(rec):
            return None
        if inputs is not None and rec.inputs != inputs:
            return None
        return rec

    def load_arrays(self, rec: Record | str) -> dict[str, np.ndarray]:
        """The arrays saved with a record (a dict; strings come back as 0-d arrays)."""
        rec = self.get(rec) if isinstance(rec, str) else rec
        if rec is None or rec.params_path is None:
            raise KeyError("no arrays for this unit")
        with np.load(self.root / rec.params_path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    # -- invocations ---------------------------------------------------------------------
    def begin_run(self, n_units: int, note: str = "") -> str:
        """Record the start of an invocation, with the driver's :func:`ec.provenance.environment`
        (column ``environment``, JSON); returns its ``run_id``."""
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self._transaction() as c:
            c.execute(
                "INSERT INTO runs (run_id, started_at, status, n_units, note, environment) VALUES (?,?,?,?,?,?)",
                (run_id, time.time(), "running", n_units, note, json.dumps(environment())),
            )
        return run_id

    def update_run(self, run_id: str, status: str | None = None, **counts: int) -> None:
        """Set counters (``n_skipped``, ``n_computed``, ``n_failed``, ``n_redone``) and status."""
        allowed = {"n_skipped", "n_computed", "n_failed", "n_redone"}
        bad = set(counts) - allowed
        if bad:
            raise ValueError(f"unknown run counters {sorted(bad)}; allowed: {sorted(allowed)}")
        sets = [f"{k} = ?" for k in counts] + (["status = ?", "ended_at = ?"] if status else [])
        vals = list(counts.values()) + ([status, time.time()] if status else [])
        if sets:
            with self._transaction() as c:
                c.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*vals, run_id))

    def runs(self) -> list[dict]:
        rows = self._conn.execute("SELECT * FROM runs ORDER BY started_at").fetchall()
        return [dict(r) for r in rows]

