"""The front door ``train_students`` with a deterministic stand-in backend (the real
backends have their own tests): ordering, seeds, failure isolation, process pool."""

import math

import numpy as np
import pytest

from ec.mlp import MLPSpec
from ec.train import Budget, TrainResult, register_backend, train_students
from ec.train.base import PhaseStats, backend_availability


class ScaleTrainer:
    """Returns theta0 * 0.5; raises for seed 13, returns NaN for seed 14."""

    name = "scale"
    batched = False

    def __init__(self, factor=0.5):
        self.factor = factor

    def fit(self, spec, X, y, theta0, budget, trainable=None):
        if theta0[0] == spec.init_params(13)[0]:
            raise RuntimeError("boom")
        params = theta0 * self.factor
        if theta0[0] == spec.init_params(14)[0]:
            params = params * np.nan
        loss = float(np.mean((spec.forward(params, X) - y) ** 2)) if np.isfinite(params).all() else math.nan
        return TrainResult(spec, params, loss, 0.0, "budget", (PhaseStats("fake", 1, 0.0, loss),))

    def fit_many(self, spec, X, y, theta0s, budget, trainable=None):
        return [self.fit(spec, X, y, t, budget, trainable) for t in theta0s]


register_backend("scale", f"{__name__}:ScaleTrainer")
SPEC = MLPSpec((2, 3, 1), "tanh")
X = np.random.default_rng(0).normal(size=(20, 2))
Y = np.zeros((20, 1))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_failures_are_recorded_not_fatal(n_jobs):
    seen = []
    res = train_students(SPEC, X, Y, seeds=[1, 13, 2, 14], backend="scale", n_jobs=n_jobs,
                         on_result=lambda i, r: seen.append(i))
    assert [r.seed for r in res] == [1, 13, 2, 14]
    assert sorted(seen) == [0, 1, 2, 3]
    assert [r.failed for r in res] == [False, True, False, True]
    assert "boom" in res[1].error and "diverged" in res[3].error
    np.testing.assert_array_equal(res[0].params, SPEC.init_params(1) * 0.5)
    assert res[1].loss == math.inf and res[0].backend == "scale"


def test_options_reach_the_backend_and_theta0s_are_used():
    t0 = [np.ones(SPEC.n_params), 2 * np.ones(SPEC.n_params)]
    res = train_students(SPEC, X, Y, seeds=[0, 1], backend="scale", theta0s=t0, n_jobs=1, factor=3.0)
    np.testing.assert_array_equal(res[1].params, 6 * np.ones(SPEC.n_params))
    with pytest.raises(ValueError, match="2 initial points for 3 seeds"):
        train_students(SPEC, X, Y, seeds=[0, 1, 2], backend="scale", theta0s=t0)


def test_unknown_backend_lists_allowed():
    with pytest.raises(ValueError, match="allowed: flow, torch, julia"):
        train_students(SPEC, X, Y, seeds=[0], backend="nope")
    assert backend_availability("nope")[0] is False


def test_result_round_trip_through_arrays():
    res = train_students(SPEC, X, Y, seeds=[5], backend="scale", n_jobs=1)[0]
    back = TrainResult.from_arrays(res.to_arrays("s0_"), "s0_")
    assert back.spec == res.spec and back.seed == 5 and back.phases == res.phases
    np.testing.assert_array_equal(back.params, res.params)
    assert back.params.dtype == np.float64


@pytest.mark.parametrize("field, value", [("ode_steps", -1), ("min_loss", -1.0), ("optim_time", math.nan)])
def test_budget_validation(field, value):
    with pytest.raises(ValueError, match=field):
        Budget(**{field: value})
