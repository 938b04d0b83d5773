"""``ec synth`` / ``ec cluster``: option validation, an end-to-end run that recovers a small
teacher, interruption and resume, re-clustering."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ec.cli import cli
import math
import shlex

from ec.config import ConfigError
from ec.experiments.synth import (DEEP_LOSS_RATIO, DEEP_STUDENTS, DERIVED, SHALLOW_STUDENTS, SYNTH, recluster, run_synth,
                                  synth_command)

# A 2-2-1 teacher, 8 students of width 4 on 300 queries; step budgets (not time budgets), so
# that the result does not depend on the machine's load. A neuron needs 4 students that agree
# on it (gamma N = 0.5 * 8).
SMALL = {
    "din": 2, "r": 2, "rho": 2, "n_students": 8, "gamma": 0.5, "seed": 0, "jobs": 1, "n_train": 300,
    "n_test": 500, "ode_steps": 500, "ode_time": 120.0, "optim_steps": 200, "optim_time": 120.0,
    "finetune_time": 60.0,
}


@pytest.mark.parametrize(
    "args,option",
    [
        (["--rho", "0.5"], "--rho"),
        (["--gamma", "0"], "--gamma"),
        (["--gamma", "1.5"], "--gamma"),
        (["--act", "nope"], "--act"),
        (["--din", "0"], "--din"),
        (["--r", "0"], "--r"),
        (["--beta", "-1"], "--beta"),
        (["--n-students", "2", "--gamma", "0.5"], "--gamma"),
        (["--backend", "nope"], "--backend"),
        (["--reexpand", "2"], "--reexpand=2 applies to deep teachers only"),
        (["--layers", "3-2-2-1", "--reexpand", "-1"], "--reexpand"),
        (["--config", "does-not-exist.toml"], "does-not-exist.toml"),
    ],
)
def test_bad_options_exit_nonzero_with_a_clear_message(args, option, tmp_path):
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_an_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[synth]\ndin = 2\nwidth = 3\n")
    result = CliRunner().invoke(cli, ["synth", "--config", str(cfg)])
    assert result.exit_code == 2 and "width" in result.output


def test_config_file_and_options_merge(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[synth]\ndin = 8\nr = 4\nbeta = '8deg'\n")
    params = SYNTH.resolve({"r": 2}, cfg)
    assert params["din"] == 8 and params["r"] == 2 and params["beta"] == pytest.approx(8 * 3.141592653589793 / 180)


def test_cluster_command_needs_a_run_directory(tmp_path):
    result = CliRunner().invoke(cli, ["cluster", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_end_to_end_interrupt_resume_recover_and_recluster(tmp_path):
    out = tmp_path / "run"

    def crash_after_two(event, **info):
        if event == "student" and info["done"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_synth(SMALL, out, crash_after_two)
    saved = sorted(p.name for p in (out / "students").iterdir())
    assert saved == ["00000.npz", "00001.npz"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir()}

    events = []
    report = run_synth(SMALL, out, lambda event, **info: events.append((event, info.get("resumed"))))
    assert events.count(("student", True)) == 2 and events.count(("student", False)) == 6
    assert {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir() if p.name in stamps} == stamps

    # the small teacher is recovered exactly, with its width
    assert report["status"] == "recovered", json.dumps(report["summary"])
    assert report["summary"]["m_hat"] == 2 and report["summary"]["test_rmse"] <= 1e-10
    assert report["summary"]["max_cos_dist"] < 1e-10
    for name in ("config.json", "teacher.npz", "report.json", "neurons.csv", "clusters.json", "clusters.npz",
                 "reconstruction.npz", "plots/similarity.png", "plots/dendrogram.png", "plots/alignment.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["summary"]["m_hat"] == 2

    # a finished run re-clusters without training anything
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir()}
    result = CliRunner().invoke(cli, ["cluster", str(out), "--gamma", "0.6", "--name", "strict", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "m_hat" in result.output and (out / "recluster" / "strict" / "report.json").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir()} == stamps
    again = recluster(out, {"gamma": 0.5, "plots": False})
    assert again["summary"]["m_hat"] == report["summary"]["m_hat"]

    # the same directory refuses a different teacher
    result = CliRunner().invoke(cli, ["synth", "--out", str(out), "--din", "3", "--n-students", "8"])
    assert result.exit_code == 2 and "holds a different run" in result.output


def test_deep_teacher_from_the_command_line(tmp_path):
    """`ec synth --layers` trains deep students, reconstructs layer by layer with retraining
    and writes a per-layer report (tiny budgets: recovery is not the point here)."""
    out = tmp_path / "deep"
    args = ["synth", "--layers", "3-2-2-1", "--seed", "5", "--rho", "2", "--n-students", "3", "--n-train", "200",
            "--n-test", "200", "--ode-steps", "40", "--optim-steps", "20", "--finetune-time", "2", "--jobs", "1",
            "--gamma", "0.6", "--beta", "pi/3", "--no-plots", "--reexpand", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["r"] == [2, 2] and len(report["summary"]["m_hat"]) == 2
    assert report["reconstruction"]["student_layer_sizes"] == [3, 4, 4, 1]
    rec = report["reconstruction"]
    assert rec["layer_sizes"][0] == 3 and rec["layer_sizes"][-1] == 1 and len(rec["layer_sizes"]) == 4
    assert "bias_filter" in rec["layers"][0] and rec["bias_filter"]["removal_loss_factor"] == 10.0
    # The retrained students are kept in the run directory, so a rerun does not train them again.
    rounds = rec["layers"][0]["bias_filter"]["rounds"]
    assert len(list((out / "retrained").glob("stage1-*/student-*.npz"))) >= 3 * rounds
    grown = rec["layers"][0]["reexpand"]  # --reexpand 2: students with 2 free neurons beside layer 1
    assert len(list((out / "retrained").glob("reexpand1-*/student-*.npz"))) == 3 * grown["rounds"]


def test_deep_teacher_by_r_list_is_the_layers_teacher():
    """One name for the teacher's hidden widths in every command: `--r 2-2` with `--din 3`
    is `--layers 3-2-2-1` (as `ec mnist --r 30-30-30`)."""
    from ec.config import ConfigError
    from ec.experiments.synth import n_students, student_widths, teacher_sizes

    by_r = SYNTH.resolve({"din": "3", "r": "2-2", "rho": "2"})
    by_layers = SYNTH.resolve({"layers": "3-2-2-1", "rho": "2"})
    assert teacher_sizes(by_r) == teacher_sizes(by_layers) == (3, 2, 2, 1)
    assert student_widths(by_r) == (4, 4) and n_students(by_r) == n_students(by_layers) == 20
    assert SYNTH.resolve({"r": "4"})["r"] == 4  # one width stays an int (saved configs compare equal)
    with pytest.raises(ConfigError, match="give one of them"):
        SYNTH.resolve({"layers": "3-2-2-1", "r": "2-2"})
    with pytest.raises(ConfigError, match="--r"):
        SYNTH.resolve({"r": "2-0"})


def test_bias_at_once_is_for_deep_teachers_only():
    from ec.config import ConfigError

    assert SYNTH.resolve({"layers": "3-2-2-1", "bias_at_once": True})["bias_at_once"] is True
    with pytest.raises(ConfigError, match="--bias-at-once applies to deep teachers only"):
        SYNTH.resolve({"din": "4", "r": "4", "bias_at_once": True})


@pytest.mark.parametrize(
    "given, gamma, beta, loss_ratio",
    [
        ({}, 0.8, math.pi / 24, math.inf),
        ({"layers": "3-2-2-1"}, 0.5, (math.pi / 24, math.pi / 24), DEEP_LOSS_RATIO),
        ({"din": "8", "r": "4-2-2"}, 0.5, (math.pi / 24,) * 3, DEEP_LOSS_RATIO),
        ({"layers": "3-2-2-1", "beta": "8deg,pi/4"}, 0.5, (math.radians(8), math.pi / 4), DEEP_LOSS_RATIO),
        ({"layers": "3-2-2-1", "gamma": "0.4", "beta": "8deg", "loss_ratio": "inf"}, 0.4, math.radians(8), math.inf),
        ({"beta": "pi/5", "loss_ratio": "100"}, 0.8, math.pi / 5, 100.0),
    ],
)
def test_clustering_defaults_depend_on_depth_and_given_values_win(given, gamma, beta, loss_ratio):
    params = SYNTH.resolve(given)
    assert params["gamma"] == pytest.approx(gamma) and params["beta"] == pytest.approx(beta)
    assert params["loss_ratio"] == loss_ratio
    # the recorded command line gives the same parameters back
    again = SYNTH.resolve(dict(_options(synth_command(params, "runs/x"))))
    assert all(again[k] == params[k] for k in DERIVED)


@pytest.mark.parametrize("given, expected", [
    ({}, SHALLOW_STUDENTS),
    ({"layers": "3-2-2-1"}, DEEP_STUDENTS),
    ({"layers": "3-2-2-1", "n_train": "500", "ode_time": "1"}, {**DEEP_STUDENTS, "n_train": 500, "ode_time": 1.0}),
    ({"n_train": "500", "optim_time": "2"}, {**SHALLOW_STUDENTS, "n_train": 500, "optim_time": 2.0}),
])
def test_student_defaults_depend_on_depth_and_given_values_win(given, expected):
    params = SYNTH.resolve(given)
    assert {k: params[k] for k in expected} == expected
    again = SYNTH.resolve(dict(_options(synth_command(params, "runs/x"))))
    assert {k: again[k] for k in expected} == expected


@pytest.mark.parametrize("value", ["nan", "0.5", "-inf", "many"])
def test_bad_loss_ratio_is_refused(value):
    with pytest.raises(ConfigError, match=f"--loss-ratio='?{value}'?[: ].*allowed: >= 1 or inf"):
        SYNTH.resolve({"loss_ratio": value})


def _options(command: str):
    words = shlex.split(command)[2:]
    for name, value in zip(words[::2], words[1::2]):
        yield name[2:].replace("-", "_"), value


@pytest.mark.parametrize("given, match", [
    ({"layers": "3-2-2-1", "beta": "pi/24,pi/5,pi/5"}, "3 values for 2 hidden layer"),
    ({"beta": "pi/24,pi/5"}, "2 values for 1 hidden layer"),
    ({"layers": "3-2-2-1", "beta": "pi/24,4"}, "0 < beta <= pi"),
])
def test_bad_per_layer_beta_is_refused(given, match):
    with pytest.raises(ConfigError, match=match):
        SYNTH.resolve(given)
