"""The optional julia backend: the pure-Python bridge (layout, budget, results), finding Julia
without importing juliacall, fast clear errors without Julia, ``ec backends``, and a
julia-vs-flow comparison that runs only where Julia is installed."""

import stat
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import ec.train.julia as jmod
from ec.cli import cli
from ec.mlp import MLPSpec, mse
from ec.teachers import make_teacher
from ec.train import Budget, backend_availability, train_students
from ec.train.julia import (
    JuliaTrainer,
    JuliaUnavailableError,
    from_mgf,
    from_mgf_layers,
    julia_activation,
    locate_julia,
    result_from_mgf,
    stop_reason,
    to_mgf,
    to_mgf_layers,
    train_kwargs,
)

# (2, 2, 1): W1 = [[1, 2], [3, 4]], b1 = [5, 6], W2 = [[7, 8]], b2 = [9].
TINY = MLPSpec((2, 2, 1), "g")
TINY_THETA = np.arange(1.0, 10.0)
# MLPGradientFlow: w1 = [[1, 2, 5], [3, 4, 6]] column-major, then w2 = [[7, 8, 9]].
TINY_MGF = np.array([1.0, 3.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])


def test_layout_hand_example():
    np.testing.assert_array_equal(to_mgf(TINY, TINY_THETA), TINY_MGF)
    np.testing.assert_array_equal(from_mgf(TINY, TINY_MGF), TINY_THETA)
    w1, w2 = to_mgf_layers(TINY, TINY_THETA)
    np.testing.assert_array_equal(w1, [[1, 2, 5], [3, 4, 6]])
    np.testing.assert_array_equal(w2, [[7, 8, 9]])


def test_layout_round_trip_and_semantics():
    spec = MLPSpec((3, 5, 4, 2), "tanh")
    theta = spec.init_params(0) + np.random.default_rng(1).normal(size=spec.n_params)
    flat = to_mgf(spec, theta)
    assert flat.shape == theta.shape and not np.array_equal(flat, theta)
    np.testing.assert_array_equal(np.sort(flat), np.sort(theta))  # a permutation
    np.testing.assert_array_equal(from_mgf(spec, flat), theta)
    np.testing.assert_array_equal(from_mgf_layers(spec, to_mgf_layers(spec, theta)), theta)
    # MLPGradientFlow's forward pass: a = f([W b] @ [x; 1]) on (d, n_samples) columns.
    X = np.random.default_rng(2).normal(size=(7, 3))
    h = X.T
    mats = to_mgf_layers(spec, theta)
    for i, M in enumerate(mats):
        z = M @ np.vstack([h, np.ones(h.shape[1])])
        h = np.tanh(z) if i < len(mats) - 1 else z
    np.testing.assert_allclose(h.T, spec.forward(theta, X), rtol=1e-13, atol=1e-13)


def test_layout_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected"):
        from_mgf(TINY, np.zeros(8))
    with pytest.raises(ValueError, match="layer shapes"):
        from_mgf_layers(TINY, [np.zeros((2, 2)), np.zeros((1, 3))])


def test_activation_names():
    assert julia_activation("g") == "g" and julia_activation("tanh") == "tanh"
    for name in ("selu", "mish", "leaky_relu"):
        with pytest.raises(ValueError, match=f"{name}.*supported: g, softplus"):
            julia_activation(name)


def test_budget_mapping_rescales_thresholds_by_d_out():
    spec = MLPSpec((2, 3, 2), "g")
    b = Budget(ode_steps=7, ode_time=1.5, optim_steps=3, optim_time=2.5, min_loss=1e-20, min_grad=1e-10)
    assert train_kwargs(b, spec) == {
        "maxiterations_ode": 7,
        "maxtime_ode": 1.5,
        "maxiterations_optim": 3,
        "maxtime_optim": 2.5,
        "minloss": 2e-20,
        "min_gnorm": 2e-10,
    }


@pytest.mark.parametrize(
    "text, reason",
    [
        ("minloss ≤ 2.0e-32", "min_loss"),
        ("min_gnorm ≤ 1.0e-15", "min_grad"),
        ("maxtime > 60.0s", "budget"),
        ("maxiterations ≥ 5000", "budget"),
        ("maxtime_ode", "budget"),
        ("maxeval", "budget"),
        ("patience (1000000)", "converged"),
        ("", "converged"),
        (None, "converged"),
        ("ROUNDOFF_LIMITED", "converged"),
    ],
)
def test_stop_reasons(text, reason):
    assert stop_reason(text) == reason


def _fake_result(spec, theta, **extra):
    res = {
        "x": {f"w{i + 1}": M for i, M in enumerate(to_mgf_layers(spec, theta))},
        "gnorm": 4e-12,
        "total_time": 3.0,
        "loss": 123.0,  # MLPGradientFlow's own number; ours is recomputed
    }
    res.update(extra)
    return res


def test_result_mapping_both_phases():
    spec = MLPSpec((2, 3, 2), "g")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    theta0, theta = spec.init_params(0), spec.init_params(1)
    res = _fake_result(
        spec, theta, ode_loss=0.5, ode_iterations=40, ode_time_run=1.25, ode_stopped_by="maxtime > 1.0s",
        optim_iterations=9, optim_time_run=1.5, optim_stopped_by="minloss ≤ 2.0e-32",
    )
    r = result_from_mgf(spec, res, X, y, theta0)
    np.testing.assert_array_equal(r.params, theta)
    assert r.loss == mse(spec, theta, X, y) and r.grad_norm == 2e-12
    assert r.stop_reason == "min_loss" and r.backend == "julia"
    assert [(p.name, p.steps, p.seconds) for p in r.phases] == [("ode", 40, 1.25), ("optim", 9, 1.5)]
    assert r.phases[0].loss == 0.25 and r.phases[1].loss == r.loss
    np.testing.assert_array_equal(r.loss_curve, [[0.0, mse(spec, theta0, X, y)], [1.25, 0.25], [2.75, r.loss]])


def test_result_mapping_ode_only_with_frozen_entries():
    spec = MLPSpec((2, 3, 1), "g")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 1))
    theta0 = spec.init_params(0)
    mask = np.ones(spec.n_params, dtype=bool)
    mask[:3] = False
    res = _fake_result(spec, theta0 + 1.0, ode_loss=0.5, ode_iterations=4, ode_time_run=9e9,
                       ode_stopped_by="maxiterations ≥ 4")
    r = result_from_mgf(spec, res, X, y, theta0, mask)
    np.testing.assert_array_equal(r.params[:3], theta0[:3])
    np.testing.assert_array_equal(r.params[3:], theta0[3:] + 1.0)
    assert r.stop_reason == "budget" and [p.name for p in r.phases] == ["ode"]
    assert r.phases[0].seconds == 3.0  # clamped to total_time


class FakeGlue:
    """Stands in for julia/ec_glue.jl: records the call, returns the initial point."""

    def __init__(self):
        self.calls = []

    def fit(self, layer_sizes, activation, input, target, flat, **kwargs):
        self.calls.append((layer_sizes, activation, input, target, flat, kwargs))
        spec = MLPSpec(tuple(int(s) for s in layer_sizes))
        return _fake_result(spec, from_mgf(spec, flat), ode_loss=1.0, ode_iterations=1, ode_time_run=0.1,
                            ode_stopped_by="minloss ≤ 0")


def test_fit_hands_julia_the_converted_problem(monkeypatch):
    glue = FakeGlue()
    monkeypatch.setattr(jmod, "load_julia", lambda: glue)
    spec = MLPSpec((2, 3, 2), "softplus")
    X = np.random.default_rng(0).normal(size=(5, 2))
    y = np.zeros((5, 2))
    theta0 = spec.init_params(3)
    budget = Budget(optim_steps=0)
    mask = np.arange(spec.n_params) % 2 == 0
    r = JuliaTrainer(patience=7).fit(spec, X, y, theta0, budget, trainable=mask)
    sizes, act, inp, tgt, flat, kw = glue.calls[0]
    assert list(sizes) == [2, 3, 2] and act == "softplus"
    assert inp.shape == (2, 5) and tgt.shape == (2, 5)
    np.testing.assert_array_equal(flat, to_mgf(spec, theta0))
    np.testing.assert_array_equal(kw["tauinv"], to_mgf(spec, mask.astype(float)))
    assert kw["patience"] == 7 and kw["maxiterations_optim"] == 0 and kw["minloss"] == 2 * budget.min_loss
    np.testing.assert_array_equal(r.params, theta0)
    assert r.stop_reason == "min_loss"
    # All-true masks need no time constants; a partial mask cannot survive the optim phase.
    JuliaTrainer().fit(spec, X, y, theta0, Budget(), trainable=np.ones(spec.n_params, bool))
    assert glue.calls[1][5]["tauinv"] is None
    with pytest.raises(ValueError, match="optim_steps=0"):
        JuliaTrainer().fit(spec, X, y, theta0, Budget(), trainable=mask)


def _no_julia_env(monkeypatch, tmp_path):
    for var in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_PROJECT", "PYTHON_JULIAPKG_EXE", "JULIA_EXE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(jmod, "_GLUE", None)


def _fake_exe(path):
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("juliacall_present", [False, True])
def test_missing_julia_fails_fast_and_clearly(monkeypatch, tmp_path, juliacall_present):
    _no_julia_env(monkeypatch, tmp_path)
    monkeypatch.setattr(jmod, "juliacall_installed", lambda: juliacall_present)
    usable, reason = JuliaTrainer.availability()
    assert not usable and "no Julia executable" in reason and "JULIA_EXE" in reason
    assert ("juliacall is not installed" in reason) is not juliacall_present
    spec = MLPSpec((2, 3, 1), "g")
    X = np.zeros((4, 2))
    t = time.perf_counter()
    with pytest.raises(JuliaUnavailableError) as err:
        JuliaTrainer().fit(spec, X, np.zeros(4), spec.init_params(0), Budget())
    assert time.perf_counter() - t < 1.0
    msg = str(err.value)
    assert "no Julia executable" in msg and "https://julialang.org/downloads" in msg and "pip install" in msg
    assert "juliacall" not in sys.modules  # never imported, so never tried to download Julia
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="backend 'julia' cannot run here: .*no Julia executable"):
        train_students(spec, X, np.zeros(4), seeds=[0, 1], backend="julia", n_jobs=1)
    assert time.perf_counter() - t < 1.0


def test_locate_julia_sources(monkeypatch, tmp_path):
    _no_julia_env(monkeypatch, tmp_path)
    assert locate_julia().exe is None
    monkeypatch.setenv("JULIA_EXE", str(tmp_path / "nope"))
    where = locate_julia()
    assert where.exe is None and "JULIA_EXE=" in where.problem and "not an executable" in where.problem
    exe = _fake_exe(tmp_path / "julia-1.11")
    monkeypatch.setenv("JULIA_EXE", exe)
    assert locate_julia() == jmod.JuliaLocation(exe, "JULIA_EXE")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", exe)
    assert locate_julia().source == "PYTHON_JULIAPKG_EXE"  # juliapkg's own override wins
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", exe)
    assert "set together" in locate_julia().problem  # juliacall's rule
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", str(tmp_path))
    assert locate_julia().source == "PYTHON_JULIACALL_EXE"
    for var in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_PROJECT", "PYTHON_JULIAPKG_EXE", "JULIA_EXE"):
        monkeypatch.delenv(var)
    on_path = _fake_exe(tmp_path / "julia")
    assert locate_julia() == jmod.JuliaLocation(on_path, "julia on PATH")


def test_julia_start_failure_is_one_clear_error(monkeypatch, tmp_path):
    """A juliacall that raises the network error it raises without Julia (an OSError)."""
    from urllib.error import URLError

    _no_julia_env(monkeypatch, tmp_path)
    exe = _fake_exe(tmp_path / "julia")
    monkeypatch.setattr(jmod, "juliacall_installed", lambda: True)
    assert JuliaTrainer.availability()[0]

    class BrokenJuliacall:
        @staticmethod
        def newmodule(name):
            raise URLError("no network")

    monkeypatch.setitem(sys.modules, "juliacall", BrokenJuliacall)
    with pytest.raises(JuliaUnavailableError, match=f"starting Julia \\({exe}.*URLError"):
        jmod.load_julia()


def test_ec_backends_lists_every_backend():
    result = CliRunner().invoke(cli, ["backends"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["BACKEND", "USABLE", "DEVICE", "DETAILS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert {"flow", "torch", "julia"} <= set(rows)
    for name, row in rows.items():
        usable, reason = backend_availability(name)
        assert row[1] == ("yes" if usable else "no")
        assert row[2] in (("cpu", "cuda") if usable else ("-",))
        assert reason.split()[0] in row[3:]


def test_ec_backends_setup_julia_without_julia(monkeypatch, tmp_path):
    _no_julia_env(monkeypatch, tmp_path)
    result = CliRunner().invoke(cli, ["backends", "--setup-julia"])
    assert result.exit_code == 1
    assert "cannot run here" in result.output and "no Julia executable" in result.output


JULIA_USABLE, JULIA_WHY = JuliaTrainer.availability()


@pytest.mark.slow
@pytest.mark.skipif(not JULIA_USABLE, reason=f"Julia backend unavailable here: {JULIA_WHY}")
def test_julia_and_flow_agree_on_a_tiny_teacher():
    flow_ok, flow_why = backend_availability("flow")
    if not flow_ok:
        pytest.skip(f"flow backend unavailable: {flow_why}")
    teacher = make_teacher((2, 3, 1), seed=0)
    data = teacher.dataset(n_train=500, n_test=200, seed=1)
    theta0 = teacher.params + 0.05 * np.random.default_rng(2).normal(size=teacher.params.shape)
    budget = Budget(ode_time=60.0, optim_time=60.0, min_loss=1e-28)
    res = {
        b: train_students(teacher.spec, data.X_train, data.y_train, [0], b, budget, n_jobs=1, theta0s=[theta0])[0]
        for b in ("julia", "flow")
    }
    for b, r in res.items():
        assert not r.failed, r.error
        assert r.loss < 1e-20, (b, r.loss, r.stop_reason)
        np.testing.assert_allclose(r.params, teacher.params, atol=1e-6, err_msg=b)
    np.testing.assert_allclose(
        teacher.spec.forward(res["julia"].params, data.X_test),
        teacher.spec.forward(res["flow"].params, data.X_test),
        atol=1e-8,
    )
