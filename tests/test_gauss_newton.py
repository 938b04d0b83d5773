"""The gn backend (float64 Gauss-Newton / Levenberg-Marquardt): its products against finite
differences, exactness of its reparametrisations, convergence to machine precision on
problems with a zero-loss solution, frozen parameters, memory refusal, determinism."""

import numpy as np
import pytest

from ec import MLPSpec
from ec.train import Budget, train_students
from ec.train.gauss_newton import GaussNewtonTrainer, _Problem, check_memory, memory_needed


def _problem(act="tanh", d=5, r=3, k=2, n=200, seed=0, constant_cols=()):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.5, 1.5, (n, d))
    for j in constant_cols:
        X[:, j] = 0.7
    teacher = MLPSpec((d, r, k), act)
    theta_t = teacher.init_params(seed + 1) * 2
    return teacher, theta_t, X, teacher.forward(theta_t, X)


def _residuals(prob, u):
    V, B = prob.split(u)
    H = prob.act.f(prob.X1 @ V.T)
    return (H @ B[:, :-1].T + B[:, -1] - prob.y).ravel()


@pytest.mark.parametrize("act", ["tanh", "g", "softplus"])
def test_gradient_and_gauss_newton_product_match_finite_differences(act):
    spec, _, X, y = _problem(act)
    theta0 = spec.init_params(7)
    prob = _Problem(spec, X, y, theta0, None, chunk_size=64)  # several chunks
    u = prob.u0
    f, H, D, R = prob.evaluate(u)
    g = prob.gradient(u, H, D, R)
    rng = np.random.default_rng(3)
    v = rng.normal(size=u.size)
    eps = 1e-6
    Jv = (_residuals(prob, u + eps * v) - _residuals(prob, u - eps * v)) / (2 * eps)
    assert g @ v == pytest.approx(Jv @ _residuals(prob, u), rel=1e-6)
    # v^T (J^T J) v = |J v|^2, and J^T J is symmetric
    w = rng.normal(size=u.size)
    Gv, Gw = prob.gauss_newton_product(u, H, D, v), prob.gauss_newton_product(u, H, D, w)
    assert v @ Gv == pytest.approx(Jv @ Jv, rel=1e-6)
    assert w @ Gv == pytest.approx(v @ Gw, rel=1e-10)


def test_reparametrisation_keeps_the_function_and_zeroes_constant_inputs():
    spec, _, X, y = _problem("relu", d=6, constant_cols=(1, 4))
    theta0 = spec.init_params(2)
    prob = _Problem(spec, X, y, theta0, None, chunk_size=4096)
    theta = prob.theta(prob.u0)
    np.testing.assert_allclose(spec.forward(theta, X), spec.forward(theta0, X), rtol=0, atol=1e-12)
    (W, _), _ = spec.unpack(theta)
    assert np.all(W[:, [1, 4]] == 0) and np.all(W[:, [0, 2, 3, 5]] == spec.unpack(theta0)[0][0][:, [0, 2, 3, 5]])


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_students_reach_machine_precision_from_near_the_teacher(act):
    spec, theta_t, X, y = _problem(act, d=4, r=3, k=2, n=400)
    theta0 = theta_t + 0.05 * np.random.default_rng(5).normal(size=theta_t.size)
    res = train_students(spec, X, y, [0], backend="gn", theta0s=[theta0],
                         budget=Budget(optim_steps=200, optim_time=60, min_loss=1e-28))[0]
    assert not res.failed and res.stop_reason in ("min_loss", "min_grad") and res.loss < 1e-24


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_a_run_at_round_off_stops_instead_of_spending_its_budget(act):
    # min_loss 0 cannot be reached: the stop must come from the loss no longer falling.
    spec, theta_t, X, y = _problem(act, d=4, r=3, k=2, n=400, seed=2)
    theta0 = theta_t + 0.05 * np.random.default_rng(6).normal(size=theta_t.size)
    res = train_students(spec, X, y, [0], backend="gn", theta0s=[theta0],
                         budget=Budget(optim_steps=1000, optim_time=120, min_loss=0.0, min_grad=0.0))[0]
    assert res.stop_reason == "converged" and res.phases[0].steps < 40  # damping alone: 50-60
    assert res.loss <= 1e-26 * np.mean(y**2)


def test_overparameterised_student_from_scratch_fits_and_agrees_with_flow():
    teacher, theta_t, X, y = _problem("tanh", d=3, r=2, k=1, n=300)
    student = MLPSpec((3, 4, 1), "tanh")
    budget = Budget(optim_steps=400, optim_time=60, min_loss=1e-26)
    gn = train_students(student, X, y, [0], backend="gn", theta0s=[student.init_params(0)], budget=budget)[0]
    flow = train_students(student, X, y, [0], backend="flow", theta0s=[student.init_params(0)],
                          budget=Budget(ode_steps=2000, ode_time=30, optim_steps=400, optim_time=30))[0]
    # Both reach (near) zero loss on the same problem: the teacher's function.
    assert gn.loss < 1e-12 and flow.loss < 1e-12
    X_new = np.random.default_rng(9).uniform(-1.5, 1.5, (500, 3))
    y_new = teacher.forward(theta_t, X_new)
    for res in (gn, flow):
        assert np.sqrt(np.mean((student.forward(res.params, X_new) - y_new) ** 2)) < 1e-4


def test_frozen_parameters_keep_their_bits():
    spec, theta_t, X, y = _problem("g", d=4, r=3, k=2)
    theta0 = spec.init_params(1)
    trainable = np.zeros(spec.n_params, dtype=bool)
    (_, b0, end), _ = spec.offsets()
    trainable[b0:end] = True  # first-layer biases only
    trainable[-2:] = True  # output biases
    res = GaussNewtonTrainer().fit(spec, X, y, theta0, Budget(optim_steps=20, optim_time=30), trainable)
    assert np.array_equal(res.params[~trainable], theta0[~trainable])
    assert res.loss < np.mean((spec.forward(theta0, X) - y) ** 2)


def test_same_seed_same_bits_and_deep_networks_refused():
    spec, _, X, y = _problem("tanh")
    budget = Budget(optim_steps=15, optim_time=60)
    a, b = (train_students(spec, X, y, [3], backend="gn", budget=budget)[0] for _ in range(2))
    assert np.array_equal(a.params, b.params) and a.phases[0].steps == 15
    deep = MLPSpec((5, 3, 3, 2), "tanh")
    with pytest.raises(ValueError, match="one hidden layer"):
        GaussNewtonTrainer().fit(deep, X, y, deep.init_params(0), budget)
    # through the front door a failing student is reported, not raised
    res = train_students(deep, X, y, [0], backend="gn", budget=budget)[0]
    assert res.failed and "one hidden layer" in res.error


def test_a_problem_too_large_for_the_memory_is_refused_up_front(monkeypatch):
    spec = MLPSpec((784, 256, 10), "relu")
    need = memory_needed(spec, 60000)
    assert need > 8 * 60000 * 785  # at least the queries with their ones column
    monkeypatch.setattr("ec.train.gauss_newton.available_memory", lambda: need // 2)
    with pytest.raises(MemoryError, match="GiB.*fewer queries or the torch backend"):
        check_memory(spec, 60000)
    monkeypatch.setattr("ec.train.gauss_newton.available_memory", lambda: need * 2)
    check_memory(spec, 60000)


@pytest.mark.parametrize("kwargs, message", [
    ({"chunk_size": 0}, "chunk_size=0"), ({"cg_max_iter": 0}, "cg_max_iter=0"),
    ({"damping": -1.0}, "damping=-1.0"), ({"clock": "sundial"}, "clock='sundial'"),
])
def test_bad_options_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussNewtonTrainer(**kwargs)
