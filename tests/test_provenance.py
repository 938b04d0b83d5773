"""Every result records where and with what it was computed (issue 20): ec.provenance, the
run directory's config.json, the grid store's invocations and the benchmarks' sidecars."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from ec import provenance
from ec.provenance import environment, git_commit, sidecar_path, write_sidecar
from ec.runs import RunDir
from ec.runs.store import STORE_FILE, ResultStore


def test_environment_has_every_key_and_is_json():
    env = environment()
    assert set(env) == {"date", "commit", "python", "packages", "blas", "machine"}
    assert set(env["packages"]) >= {"numpy", "scipy", "numba", "torch", "pandas", "scikit-learn"}
    assert env["packages"]["numpy"] == metadata.version("numpy")
    assert env["packages"]["torch"] == metadata.version("torch")
    assert set(env["machine"]) >= {"platform", "cpu_count", "load_avg"}
    assert env["date"].endswith("+00:00")
    for lib in env["blas"]:
        assert set(lib) >= {"internal_api", "version", "num_threads", "architecture"}
    assert any(lib["internal_api"] in ("openblas", "mkl", "blis") for lib in env["blas"])
    assert json.loads(json.dumps(env)) == env


def test_outside_a_git_checkout_the_commit_is_none(tmp_path, monkeypatch):
    assert git_commit(tmp_path) is None
    monkeypatch.setattr(provenance, "SOURCE", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert environment()["commit"] is None


def test_without_git_the_commit_is_none(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert git_commit() is None


def _git(path, *args):
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_commit_and_dirty_of_a_checkout_and_not_of_a_folder_inside_one(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_commit(tmp_path) == {"sha": sha.strip(), "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path)["dirty"] is True
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") is None  # e.g. an installed copy inside another repository


def test_sidecar_beside_the_results_file(tmp_path):
    results = tmp_path / "kernels.csv"
    assert sidecar_path(results) == tmp_path / "kernels.env.json"
    env = environment()
    path = write_sidecar(results, env, command="python x.py")
    saved = json.loads(path.read_text())
    assert saved == {**env, "command": "python x.py"}
    assert [p.name for p in tmp_path.iterdir()] == ["kernels.env.json"]  # no temp file left


def test_run_directory_records_the_environment_and_resumes_elsewhere(tmp_path):
    run = RunDir(tmp_path / "run")
    config = {"din": 2, "r": 2, "gamma": 0.8}
    assert run.init(config, ("din", "r")) is False
    saved = json.loads(run.config_path.read_text())
    assert saved["environment"]["packages"]["numpy"] == metadata.version("numpy")
    assert run.load_config() == config  # the parameters only
    # another day, machine and library: the run still resumes
    saved["environment"] = {"date": "2001-01-01T00:00:00+00:00", "packages": {"numpy": "0.1"}}
    run.config_path.write_text(json.dumps(saved))
    assert run.init({**config, "gamma": 0.5}, ("din", "r")) is True
    assert json.loads(run.config_path.read_text())["environment"]["date"] != "2001-01-01T00:00:00+00:00"


def test_store_invocations_record_the_environment_and_old_stores_gain_the_column(tmp_path):
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:  # a store made before the column existed
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, ended_at REAL, "
                     "status TEXT NOT NULL, n_units INTEGER NOT NULL, n_skipped INTEGER NOT NULL DEFAULT 0, "
                     "n_computed INTEGER NOT NULL DEFAULT 0, n_failed INTEGER NOT NULL DEFAULT 0, "
                     "n_redone INTEGER NOT NULL DEFAULT 0, note TEXT)")
        conn.execute("INSERT INTO runs (run_id, started_at, status, n_units) VALUES ('old', 0, 'done', 1)")
    conn.close()
    with ResultStore(tmp_path) as store:
        store.begin_run(3, "quick")
        old, new = store.runs()
    assert old["environment"] is None
    assert json.loads(new["environment"])["packages"]["numpy"] == metadata.version("numpy")


# benchmarks/_*.py are helpers that benchmarks import (e.g. _art.py), not scripts that write results
BENCHMARKS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
                    if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_writes_the_environment(name):
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py").read_text()
    # beside a CSV (write_sidecar, or write_table that calls it), or inside a JSON report
    assert any(w in text for w in ("write_sidecar(", "write_table(", '"environment": environment()'))
    assert "to_csv(RESULTS" not in text and ".write_text(" not in text  # every results file written atomically


def test_write_table_writes_the_csv_and_its_environment_with_the_command(tmp_path):
    import pandas as pd

    from ec.provenance import command_line, write_table

    path = write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1.23456]}), {"date": "d"},
                       command_line("benchmarks/x.py", ["--n", "3"]), float_format="%.2g")
    assert path.read_text() == "a\n1.2\n"
    saved = json.loads((tmp_path / "t.env.json").read_text())
    assert saved == {"date": "d", "command": "python3 benchmarks/x.py --n 3"}
