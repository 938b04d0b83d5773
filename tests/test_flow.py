"""The flow backend: training to zero loss, masks, determinism, budgets, train_students."""

import numpy as np
import pytest

from ec.mlp import MLPSpec, mse
from ec.teachers import make_teacher
from ec.train import Budget, Trainer, TrainResult, get_backend, register_backend, train_students
from ec.train import base
from ec.train.flow.backend import FlowTrainer
from ec.train.flow.newton import choose_method, trust_region_step

QUICK = Budget(ode_steps=200, ode_time=20, optim_steps=50, optim_time=10)


@pytest.fixture(scope="module")
def small_task():
    """Teacher d=2, r=2 (A.4) and 2000 of its queries; students with rho=2."""
    teacher = make_teacher((2, 2, 1), seed=0)
    data = teacher.dataset(2000, 10)
    return MLPSpec((2, 4, 1), teacher.spec.activation), data.X_train, data.y_train


def test_registered_and_implements_protocol():
    trainer = get_backend("flow")
    assert isinstance(trainer, FlowTrainer) and isinstance(trainer, Trainer)
    assert trainer.name == "flow" and trainer.batched is False


def test_overparameterised_student_learns_teacher_to_zero_loss(small_task):
    spec, X, y = small_task
    res = FlowTrainer().fit(spec, X, y, spec.init_params(1), Budget(ode_time=30, optim_time=15))
    assert res.loss < 1e-24
    assert res.loss == pytest.approx(mse(spec, res.params, X, y), rel=1e-6, abs=1e-30)
    assert res.stop_reason in ("min_loss", "min_grad")
    assert res.params.dtype == np.float64 and res.backend == "flow"
    curve = res.loss_curve
    assert curve.shape[1] == 2 and np.all(np.diff(curve[:, 1]) < 0) and np.all(np.diff(curve[:, 0]) >= 0)
    assert curve[-1, 1] == res.loss


def test_same_seed_gives_identical_parameters(small_task):
    spec, X, y = small_task
    a, b = (FlowTrainer().fit(spec, X, y, spec.init_params(3), QUICK) for _ in range(2))
    np.testing.assert_array_equal(a.params, b.params)
    assert a.loss == b.loss


@pytest.mark.parametrize("sizes", [(2, 4, 1), (2, 3, 3, 1)], ids=["shallow", "deep"])
def test_fixed_parameters_keep_their_values_bit_for_bit(small_task, sizes):
    _, X, y = small_task
    spec = MLPSpec(sizes, "g")
    theta0 = spec.init_params(5)
    trainable = np.zeros(spec.n_params, dtype=bool)
    trainable[spec.offsets()[-1][0] :] = True  # train only the output layer
    res = FlowTrainer().fit(spec, X, y, theta0, Budget(ode_steps=30, optim_steps=10), trainable=trainable)
    np.testing.assert_array_equal(res.params[~trainable], theta0[~trainable])
    assert not np.array_equal(res.params[trainable], theta0[trainable])
    assert res.loss < mse(spec, theta0, X, y)


def test_bad_mask_is_rejected(small_task):
    spec, X, y = small_task
    with pytest.raises(ValueError, match="trainable"):
        FlowTrainer().fit(spec, X, y, spec.init_params(0), QUICK, trainable=np.ones(3, dtype=bool))


@pytest.mark.parametrize(
    "options",
    [dict(ode_method="BDF"), dict(ode_method="DOP853", optim_method="bfgs"), dict(ode_method="RK45", optim_method="lbfgs")],
    ids=["bdf+newton", "dop853+bfgs", "rk45+lbfgs"],
)
def test_other_solvers_decrease_the_loss(small_task, options):
    spec, X, y = small_task
    theta0 = spec.init_params(2)
    trainer = FlowTrainer(reduce=False, **options)  # exactly the two named solvers
    res = trainer.fit(spec, X, y, theta0, Budget(ode_steps=30, ode_time=10, optim_steps=20, optim_time=10))
    assert res.loss < 0.5 * mse(spec, theta0, X, y)
    assert [p.steps > 0 for p in res.phases] == [True, True]


def test_budget_and_phase_records(small_task):
    spec, X, y = small_task
    theta0 = spec.init_params(4)
    res = FlowTrainer(reduce=False).fit(spec, X, y, theta0, Budget(ode_steps=7, ode_time=10, optim_steps=3, optim_time=10))
    assert [p.name for p in res.phases] == ["exp-euler", "newton"]
    assert res.phases[0].steps == 7 and res.phases[1].steps <= 3
    assert res.stop_reason == "budget"
    assert res.phases[1].loss == res.loss <= res.phases[0].loss
    idle = FlowTrainer().fit(spec, X, y, theta0, Budget(ode_steps=0, optim_steps=0))
    assert idle.phases == () and idle.loss == pytest.approx(mse(spec, theta0, X, y), rel=1e-13)
    np.testing.assert_array_equal(idle.params, theta0)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="ode method 'euler'"):
        FlowTrainer(ode_method="euler")
    with pytest.raises(ValueError, match="optim method 'adam'"):
        FlowTrainer(optim_method="adam")
    with pytest.raises(ValueError, match="clock='moon'"):
        FlowTrainer(clock="moon")


def test_deep_students_finish_with_levenberg_marquardt():
    assert choose_method(500, "auto", deep=True) == "lm" and choose_method(500, "auto") == "newton"
    assert choose_method(2000, "auto", deep=True) == "bfgs"  # too large for a dense G as for a dense H
    assert choose_method(500, "newton", deep=True) == "newton"


@pytest.mark.parametrize("sizes", [(3, 2, 2, 1), (3, 3, 2, 2)], ids=["3-2-2-1", "3-3-2-2"])
def test_levenberg_marquardt_converges_quadratically_to_zero_loss(sizes):
    """From a perturbed teacher of the same size (a non-degenerate zero-loss minimum) LM
    reaches float64 round-off in a few steps: quadratic convergence, not a slow tail."""
    teacher = make_teacher(sizes, seed=1)
    data = teacher.dataset(1000, 10)
    theta0 = teacher.params + 0.02 * np.random.default_rng(0).normal(size=teacher.spec.n_params)
    res = FlowTrainer(optim_method="lm", reduce_deep=False).fit(teacher.spec, data.X_train, data.y_train, theta0,
                                             Budget(ode_steps=0, optim_steps=25, optim_time=60))
    assert [p.name for p in res.phases] == ["lm"]
    assert res.loss < 1e-28 and res.phases[0].steps < 25
    assert res.loss == pytest.approx(mse(teacher.spec, res.params, data.X_train, data.y_train), rel=1e-6, abs=1e-30)


class FailsOnMarkedStudent(FlowTrainer):
    """Raises for the student whose initial parameters start with the marker value."""

    def fit(self, spec, X, y, theta0, budget=None, trainable=None):
        if theta0[0] == 123.0:
            raise RuntimeError("boom")
        return super().fit(spec, X, y, theta0, budget, trainable)


@pytest.fixture
def failing_backend():
    register_backend("flow-fails", f"{__name__}:FailsOnMarkedStudent")
    yield "flow-fails"
    del base._REGISTRY["flow-fails"]


def test_train_students_flow_and_failure_isolation(small_task, failing_backend):
    spec, X, y = small_task
    results = train_students(spec, X, y, seeds=[0, 1], backend="flow", budget=QUICK, n_jobs=1)
    assert [r.seed for r in results] == [0, 1]
    assert all(isinstance(r, TrainResult) and not r.failed and r.backend == "flow" for r in results)
    theta0s = [spec.init_params(0), spec.init_params(1), spec.init_params(2)]
    theta0s[1][0] = 123.0
    seen = []
    results = train_students(
        spec, X, y, seeds=[7, 8, 9], backend=failing_backend, budget=QUICK, n_jobs=1, theta0s=theta0s,
        on_result=lambda i, r: seen.append(i),
    )
    assert [r.failed for r in results] == [False, True, False]
    assert "RuntimeError: boom" in results[1].error and results[1].stop_reason == "error"
    assert np.isfinite(results[0].loss) and np.isfinite(results[2].loss)
    assert sorted(seen) == [0, 1, 2]


def test_trust_region_step_satisfies_optimality_conditions():
    """s = -(Lambda + mu)^-1 g with mu >= max(0, -lambda_min), |s| <= r, mu (|s| - r) = 0,
    including indefinite, singular and hard-case (no gradient on the lowest mode) models."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        lam = np.sort(rng.normal(size=6) * np.exp(3 * rng.normal(size=6)))
        if trial % 5 == 0:
            lam = np.sort(np.abs(lam))
        gc = rng.normal(size=6) * np.exp(3 * rng.normal())
        if trial % 3 == 0:
            gc[0] = 0.0
        radius = np.exp(rng.normal())
        s = trust_region_step(lam, gc, radius)
        scale = 1.0 + np.abs(lam).max()
        mus = -gc[gc != 0] / s[gc != 0] - lam[gc != 0]
        mu = np.median(mus)
        assert np.linalg.norm(s) <= radius * (1 + 1e-9)
        np.testing.assert_allclose(mus, mu, rtol=1e-6, atol=1e-9 * scale)
        assert mu >= max(0.0, -lam[0]) - 1e-9 * scale
        if mu > 1e-9 * scale:
            assert np.linalg.norm(s) == pytest.approx(radius, rel=1e-8)


def test_a_student_whose_dense_phases_do_not_fit_is_refused_up_front(monkeypatch):
    import ec.train.flow.backend as backend

    rng = np.random.default_rng(0)
    spec = MLPSpec((20, 8, 2), "g")  # 186 parameters: 4 dense 186 x 186 matrices are ~1.1 MB
    X, y = rng.normal(size=(50, 20)), rng.normal(size=(50, 2))
    monkeypatch.setattr(backend, "available_memory", lambda: 100_000)
    with pytest.raises(MemoryError, match=r"186 free parameters .* newton .* optim_method='auto'"):
        FlowTrainer(optim_method="newton").fit(spec, X, y, spec.init_params(0), Budget(ode_steps=0, optim_steps=5))
    # gradient-only phases (DOP853, L-BFGS) need no dense matrix: the same student trains
    small = FlowTrainer(exp_euler_max_params=10, newton_max_params=10, bfgs_max_params=10)
    res = small.fit(spec, X, y, spec.init_params(0), Budget(ode_steps=5, optim_steps=5))
    assert not res.failed and [p.name for p in res.phases][0] == "DOP853"


def test_warm_up_never_forms_the_students_hessian(monkeypatch):
    """Compiling the kernels must not cost n_params^2 memory (a 510-64-10 image student's
    Hessian is 8.3 GiB): the warm-up evaluates a tiny network of the same depth."""
    import ec.train.flow.backend as backend
    from ec.train.flow.kernels import MSE

    sizes = []
    real = MSE.hessian
    monkeypatch.setattr(MSE, "hessian", lambda self, theta: sizes.append(len(theta)) or real(self, theta))
    monkeypatch.setattr(backend, "_warm", set())
    rng = np.random.default_rng(1)
    spec = MLPSpec((40, 30, 3), "relu")  # 1323 parameters: "auto" picks gradient-only DOP853, then BFGS
    FlowTrainer().fit(spec, rng.normal(size=(30, 40)), rng.normal(size=(30, 3)), spec.init_params(0),
                      Budget(ode_steps=2, optim_steps=2))
    assert sizes and sizes[0] < 50  # the warm-up's network
    assert spec.n_params not in sizes


@pytest.fixture(scope="module")
def stuck_deep_student():
    """A 3-4-4-1 student of a 3-2-2-1 teacher with its first-layer weights fixed at random
    directions: no zero-loss point is within its reach, so Levenberg-Marquardt levels off."""
    teacher = make_teacher((3, 2, 2, 1), seed=1)
    data = teacher.dataset(500, 10)
    spec = MLPSpec((3, 4, 4, 1), teacher.spec.activation)
    trainable = np.ones(spec.n_params, dtype=bool)
    w0, b0, _ = spec.offsets()[0]
    trainable[w0:b0] = False
    return spec, data.X_train, data.y_train, spec.init_params(3), trainable


def test_levenberg_marquardt_stops_a_stalled_student(stuck_deep_student):
    spec, X, y, theta0, trainable = stuck_deep_student
    budget = Budget(ode_steps=0, optim_steps=3000, optim_time=300)
    stalled = FlowTrainer(stall_steps=30, stall_factor=2.0).fit(spec, X, y, theta0, budget, trainable)
    assert stalled.stop_reason == "stalled" and 30 < stalled.phases[0].steps < 3000
    assert stalled.loss > 1e-10  # it did stop in a valley, not at a zero-loss point
    # The stop ends the run and changes nothing before it: the same number of steps without
    # the rule gives the same student, bit for bit.
    steps = stalled.phases[0].steps
    same = FlowTrainer(stall_steps=0).fit(spec, X, y, theta0, Budget(ode_steps=0, optim_steps=steps, optim_time=300),
                                          trainable)
    assert same.stop_reason == "budget" and np.array_equal(same.params, stalled.params)


def test_a_converging_deep_student_is_not_stopped_as_stalled():
    teacher = make_teacher((3, 2, 2, 1), seed=1)
    data = teacher.dataset(1000, 10)
    theta0 = teacher.params + 0.02 * np.random.default_rng(0).normal(size=teacher.spec.n_params)
    res = FlowTrainer(optim_method="lm", stall_steps=5, stall_factor=2.0).fit(
        teacher.spec, data.X_train, data.y_train, theta0, Budget(ode_steps=0, optim_steps=100, optim_time=60))
    assert res.stop_reason in ("min_loss", "min_grad", "converged") and res.loss < 1e-28


def test_deep_students_try_the_reduction_only_below_the_gate(stuck_deep_student):
    spec, X, y, theta0, _ = stuck_deep_student
    budget = Budget(ode_steps=50, optim_steps=200, optim_time=60)
    gated = FlowTrainer(reduce_after=20, stall_steps=0).fit(spec, X, y, theta0, budget)
    assert gated.loss > 1e-9 * np.var(y)  # far from zero loss: no attempt
    assert "reduce" not in [p.name for p in gated.phases]
    always = FlowTrainer(reduce_after=20, stall_steps=0, reduce_deep_below=np.inf).fit(spec, X, y, theta0, budget)
    assert "reduce" in [p.name for p in always.phases]


@pytest.mark.parametrize("option, value", [("stall_steps", -1), ("stall_steps", 2.5), ("stall_factor", 0.5),
                                           ("reduce_deep_below", 0.0)])
def test_flow_trainer_refuses_bad_stall_and_gate_options(option, value):
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        FlowTrainer(**{option: value})
