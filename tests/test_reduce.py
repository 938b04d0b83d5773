"""Symmetry reduction of the flow backend: exact expansion, planted reductions, finishing."""

import numpy as np
import pytest

from ec.mlp import MLPSpec, mse
from ec.teachers import make_teacher
from ec.train import Budget
from ec.train.flow.backend import FlowTrainer
from ec.train.flow.kernels import MSE
from ec.train.flow.objective import Objective
from ec.train.flow.reduce import reduce_network, reduce_shallow, reduction_finish


@pytest.fixture(scope="module")
def task():
    teacher = make_teacher((3, 3, 1), seed=1)
    data = teacher.dataset(3000, 10)
    return teacher, data.X_train, data.y_train


def _student(teacher, extra):
    """Teacher neurons followed by ``extra`` neurons given as (w, b, a) triples."""
    (W, b), (A, c) = teacher.spec.unpack(teacher.params)
    W2 = np.vstack([W] + [e[0][None] for e in extra])
    b2 = np.concatenate([b, [e[1] for e in extra]])
    A2 = np.hstack([A, np.array([[e[2] for e in extra]])])
    spec = teacher.spec.with_hidden_sizes((len(b2),))
    return spec, spec.pack([(W2, b2), (A2, c)])


def _split(teacher, k, delta, share=1.7):
    """Neuron k replaced by two near-duplicates with outgoing weights ``share * a`` and
    ``(1 - share) * a`` of mixed signs, placed so that their a-weighted mean is the teacher
    neuron: the network is then right to first order in ``delta``, as the flow leaves it."""
    (W, b), (A, _) = teacher.spec.unpack(teacher.params)
    spec, theta = _student(teacher, [(W[k] + share / (share - 1) * delta, b[k], (1 - share) * A[0, k])])
    (W2, _), (A2, _) = spec.unpack(theta)  # views into theta
    W2[k] += delta
    A2[0, k] = share * A[0, k]
    return spec, theta


def test_expansion_reproduces_the_reduced_function_exactly(task):
    teacher, X, y = task
    rng = np.random.default_rng(0)
    w = rng.normal(size=3)
    spec, theta = _student(teacher, [(w, 0.3, 0.5), (w, 0.3, -0.5), (rng.normal(size=3), 0.1, 1e-9)])
    red = reduce_shallow(spec, theta, X, y, 1e-3, 1e-6)
    assert red.small_spec.hidden_sizes == (3,)  # cancelling pair and dead neuron gone
    other = red.small_theta + 0.1 * rng.normal(size=red.small_spec.n_params)  # any reduced point
    full = red.expand(other)
    assert full.dtype == np.float64 and full.shape == (spec.n_params,)
    np.testing.assert_allclose(spec.forward(full, X), red.small_spec.forward(other, X), rtol=0, atol=1e-13)


def test_near_duplicates_merge_onto_the_teacher_neuron(task):
    teacher, X, y = task
    spec, theta = _split(teacher, 1, 1e-3)
    red = reduce_shallow(spec, theta, X, y, 0.01, 1e-6)
    assert red.small_spec.hidden_sizes == (3,)
    (W, _), _ = red.small_spec.unpack(red.small_theta)
    (Wt, _), _ = teacher.spec.unpack(teacher.params)
    # first-moment matching puts the merged neuron on the teacher's
    nearest = np.abs(Wt[:, None, :] - W[None, :, :]).max(axis=2).min(axis=1)
    np.testing.assert_allclose(nearest, 0.0, atol=1e-12)
    assert reduce_shallow(spec, theta, X, y, 1e-6, 1e-9) is None  # nothing to do at a tight tolerance


def test_parallel_group_is_refit_by_one_neuron(task):
    teacher, X, y = task
    (W, b), (A, _) = teacher.spec.unpack(teacher.params)
    # a second neuron on neuron 0's hyperplane direction, with another bias and scale
    spec, theta = _student(teacher, [(0.3 * W[0], b[0] - 1.0, 0.05)])
    red = reduce_shallow(spec, theta, X, y, 0.01, 1e-9, mode="parallel")
    assert red.small_spec.hidden_sizes == (3,)
    assert mse(red.small_spec, red.small_theta, X, y) < mse(spec, theta, X, y)


def test_reduction_finish_reaches_zero_loss_from_a_slow_tail(task):
    teacher, X, y = task
    spec, theta = _split(teacher, 2, 3e-3)
    obj = Objective(MSE(spec, X, y), theta, None, Budget(), "cpu")
    start = obj.loss_grad(obj.best_u)[0]
    assert start > 1e-12
    _, steps, reason = reduction_finish(obj, max_time=30.0)
    assert reason in ("min_loss", "min_grad") and obj.best_loss < 1e-28 and steps > 0
    assert mse(spec, obj.theta(obj.best_u), X, y) == pytest.approx(obj.best_loss, rel=1e-6, abs=1e-30)


def test_reduction_never_makes_the_student_worse(task):
    teacher, X, y = task
    spec = teacher.spec.with_hidden_sizes((5,))
    theta = spec.init_params(3)  # far from any minimum: rungs may not help, but never hurt
    obj = Objective(MSE(spec, X, y), theta, None, Budget(), "cpu")
    start = obj.loss_grad(obj.best_u)[0]
    reduction_finish(obj, max_time=5.0, steps_per_try=5)
    assert obj.best_loss <= start


def test_bad_inputs_are_rejected(task):
    teacher, X, y = task
    deep = MLPSpec((3, 2, 2, 1), "g")
    with pytest.raises(ValueError, match="one hidden layer"):
        reduce_shallow(deep, deep.init_params(0), X, y, 0.1, 0.1)
    with pytest.raises(ValueError, match="mode='pairs'"):
        reduce_shallow(teacher.spec, teacher.params, X, y, 0.1, 0.1, mode="pairs")


def _split_deep(spec, theta, layer, k, delta, share=1.7):
    """Deep version of :func:`_split`: neuron k of hidden layer ``layer`` made two
    near-duplicates whose a-weighted mean is the original neuron."""
    layers = [(np.array(W), np.array(b)) for W, b in spec.unpack(theta)]
    (W, b), (W_next, b_next) = layers[layer], layers[layer + 1]
    moved = W[k] + share / (share - 1) * delta
    layers[layer] = (np.vstack([W, moved]), np.append(b, b[k]))
    column = (1 - share) * W_next[:, [k]]
    W_next = W_next.copy()
    W_next[:, k] *= share
    layers[layer + 1] = (np.hstack([W_next, column]), b_next)
    layers[layer][0][k] += delta
    sizes = list(spec.hidden_sizes)
    sizes[layer] += 1
    wider = spec.with_hidden_sizes(sizes)
    return wider, wider.pack(layers)


@pytest.fixture(scope="module")
def deep_task():
    teacher = make_teacher((3, 3, 2, 1), seed=2)
    data = teacher.dataset(3000, 10)
    return teacher, data.X_train, data.y_train


def test_deep_reduction_merges_every_layer_and_expands_exactly(deep_task):
    teacher, X, y = deep_task
    spec, theta = _split_deep(teacher.spec, teacher.params, 0, 1, 1e-3)
    spec, theta = _split_deep(spec, theta, 1, 0, 1e-3)
    assert spec.hidden_sizes == (4, 3)
    red = reduce_network(spec, theta, X, y, 0.01, 1e-9)
    assert red.small_spec.hidden_sizes == (3, 2)
    assert [step[0] for step in red.steps] == [0, 1]
    other = red.small_theta + 0.05 * np.random.default_rng(1).normal(size=red.small_spec.n_params)
    full = red.expand(other)
    assert full.shape == (spec.n_params,) and full.dtype == np.float64
    np.testing.assert_allclose(spec.forward(full, X), red.small_spec.forward(other, X), rtol=0, atol=1e-12)


def test_deep_student_is_finished_by_the_reduction(deep_task):
    teacher, X, y = deep_task
    spec, theta = _split_deep(teacher.spec, teacher.params, 1, 1, 3e-3)
    obj = Objective(MSE(spec, X, y), theta, None, Budget(), "cpu")
    assert obj.loss_grad(obj.best_u)[0] > 1e-14
    _, steps, reason = reduction_finish(obj, max_time=60.0)
    # "converged": Levenberg-Marquardt on the reduced deep network found no further decrease in float64
    assert reason in ("min_loss", "min_grad", "converged") and obj.best_loss < 1e-26 and steps > 0


def test_flow_trainer_reduces_deep_students_unless_asked_not_to(deep_task):
    teacher, X, y = deep_task
    spec, theta = _split_deep(teacher.spec, teacher.params, 0, 2, 3e-3)
    budget = Budget(ode_steps=100, optim_steps=100)
    plain = FlowTrainer(reduce_deep=False).fit(spec, X, y, theta, budget)
    assert "reduce" not in [p.name for p in plain.phases]
    reduced = FlowTrainer(reduce_after=10).fit(spec, X, y, theta, budget)
    assert "reduce" in [p.name for p in reduced.phases] and reduced.loss < 1e-26
    assert reduced.params.shape == theta.shape and reduced.params.dtype == np.float64
