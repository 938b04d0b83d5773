"""The front door ``train_students`` with a deterministic stand-in backend (the real
backends have their own tests): ordering, seeds, failure isolation, process pool."""

import math
import os
import signal
import subprocess
import sys
import time

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


_SLOW_FIT = """
import time
from ec.mlp import MLPSpec
from ec.train import register_backend, train_students
from ec.train.base import SequentialFitMany

class Sleeper(SequentialFitMany):
    name = "sleeper"
    def fit(self, spec, X, y, theta0, budget=None, trainable=None):
        time.sleep(600)

if __name__ == "__main__":
    register_backend("sleeper", "__main__:Sleeper")
    import numpy as np
    train_students(MLPSpec((1, 1, 1)), np.zeros((2, 1)), np.zeros(2), [0, 1], "sleeper", n_jobs=2)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_run_leaves_no_training_workers(tmp_path):
    """SIGKILL the process running train_students: its pool workers exit within seconds
    instead of training on."""
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_FIT)
    proc = subprocess.Popen([sys.executable, str(script)])
    children = []
    for _ in range(200):  # wait for both workers to start (spawn imports ec)
        time.sleep(0.1)
        children = [int(p) for p in _children(proc.pid)]
        if len(children) >= 2:
            break
    assert len(children) >= 2, "the pool never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not any(_alive(c) for c in children)


def _children(pid):
    path = f"/proc/{pid}/task/{pid}/children"
    return open(path).read().split() if os.path.exists(path) else []


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
