"""Layer-wise Expand-and-Cluster for deep teachers (ec.reconstruct._layerwise, issue 7).

Training overparameterised deep students from scratch takes minutes even for tiny
teachers, so the end-to-end test starts from *planted* original students (each an exact
overparameterised copy of the teacher: duplicated neurons, zero-type and constant-type
distractors, 1e-7 noise) and really trains everything after that: the retraining of the
upper layers on the fixed reconstructed layer, the bias filter and the final fine-tune.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ec.train.cached
from ec.activations import get_activation
from ec.finetune import fold_constant_neurons
from ec.metrics import compare_layers
from ec.reconstruct import (
    BiasFilter,
    LayerClustering,
    LayerwiseExpandAndCluster,
    Reexpansion,
    bias_spread,
    fixed_weights_mask,
    per_layer,
    retrain_and_filter,
    stage_init,
    stage_seeds,
    sub_student,
    voters,
)
from ec.mlp import MLPSpec, mse
from ec.teachers import make_teacher
from ec.train import Budget, TrainResult
from ec.train.base import failed_result

ACT = "g"
# Student widths: rho = 3 in the (planted) first layer, rho = 4 in the retrained second.
WIDTHS = (6, 8)
# A teacher whose retrained students reach ~1e-11 within the test budget (many tiny
# teachers, 2-3-2-1 included, need minutes: their second layer aligns only at such losses).
TEACHER = (3, 2, 2, 1)
TEACHER_SEED = 5
# Retraining and fine-tuning budgets small enough for a loaded 2-core machine.
RETRAIN = Budget(ode_steps=200, ode_time=60.0, optim_steps=200, optim_time=60.0)
FINETUNE = Budget(ode_steps=0, ode_time=0.0, optim_steps=200, optim_time=60.0)


def _planted_layer(rng, W_t, b_t, width, noise):
    """Neurons of one student layer: every teacher neuron once or twice (with the share of
    its outgoing weight each copy carries), then distractors up to ``width``.

    Returns ``W, b, kind, share``: ``kind[i]`` is the teacher neuron copied by neuron ``i``,
    -1 for a zero-type distractor (random weights, no outgoing weight), -2 for a
    constant-type one (zero weights: its output is the constant ``sigma(b)``).
    """
    rows = []
    for k in range(len(b_t)):
        copies = rng.integers(1, 3)
        for share in rng.dirichlet(np.ones(copies)) if copies > 1 else [1.0]:
            rows.append((W_t[k] + noise * rng.normal(size=W_t.shape[1]), b_t[k] + noise * rng.normal(), k, share))
    while len(rows) < width:
        if len(rows) % 2:
            rows.append((np.zeros(W_t.shape[1]), rng.normal(), -2, 0.0))
        else:
            rows.append((2.0 * rng.normal(size=W_t.shape[1]), rng.normal(), -1, 0.0))
    perm = rng.permutation(width)
    W = np.array([rows[p][0] for p in perm])
    b = np.array([rows[p][1] for p in perm])
    kind = np.array([rows[p][2] for p in perm])
    share = np.array([rows[p][3] for p in perm])
    return W, b, kind, share


def planted_deep_students(teacher, widths, n_students, X, y, noise=1e-7, seed=0):
    """Overparameterised deep students that compute the teacher's function (up to ``noise``)."""
    act = get_activation(teacher.spec.activation)
    t_layers = teacher.spec.unpack(teacher.params)
    spec = MLPSpec((teacher.spec.d_in, *widths, teacher.spec.d_out), teacher.spec.activation)
    rng = np.random.default_rng(seed)
    students = []
    for s in range(n_students):
        layers = []
        for l, width in enumerate(widths):
            W, b, kind, share = _planted_layer(rng, *t_layers[l], width, noise)
            if l > 0:  # the teacher's weights, re-expressed over the previous student layer
                W = _incoming(rng, kind, prev_kind, prev_share, t_layers[l][0])
                W, b = _absorb_constants(rng, W, b, kind, prev_kind, layers[-1][1], act)
            layers.append((W, b))
            prev_kind, prev_share = kind, share
        A_t, c_t = t_layers[-1]
        A = _incoming(rng, np.arange(len(c_t)), prev_kind, prev_share, A_t)
        layers.append(_absorb_constants(rng, A, c_t.copy(), np.arange(len(c_t)), prev_kind, layers[-1][1], act))
        theta = spec.pack(layers)
        students.append(TrainResult(spec, theta, mse(spec, theta, X, y), 0.0, "min_loss", seed=s))
    return spec, students


def _incoming(rng, kind, prev_kind, prev_share, W_t):
    """Incoming weights of neurons ``kind`` over inputs ``prev_kind``: a copy of teacher neuron
    ``q`` takes ``W_t[q, k] * share`` from each copy of ``k``; zero-type distractors take random
    weights; constant-type ones (and inputs that are distractors) zero."""
    copies = prev_kind >= 0
    W = np.zeros((len(kind), len(prev_kind)))
    for i, q in enumerate(kind):
        if q >= 0:
            W[i, copies] = W_t[q, prev_kind[copies]] * prev_share[copies]
        elif q == -1:
            W[i, copies] = rng.normal(size=int(copies.sum()))
    return W


def _absorb_constants(rng, W, b, kind, prev_kind, prev_b, act):
    """Random weights on constant-type inputs (``sigma(b)``), compensated exactly in the bias;
    none for constant-type neurons, which keep all-zero weights."""
    const = prev_kind == -2
    u = rng.normal(size=(W.shape[0], int(const.sum()))) * (kind != -2)[:, None]
    W[:, const] = u
    return W, b - u @ act.f(prev_b[const])


@pytest.fixture(scope="module")
def problem():
    teacher = make_teacher(TEACHER, TEACHER_SEED, ACT)
    data = teacher.dataset(200, 400)
    return teacher, data


def _estimator(**kw):
    kw = {"n_students": 4, "backend": "flow", "n_jobs": 1, "retrain_budget": RETRAIN, "finetune_budget": FINETUNE,
          **kw}
    return LayerwiseExpandAndCluster(WIDTHS, **kw)


def _training(**kw):
    return _estimator(**kw)._training()


def _filter(std_max):
    return BiasFilter(std_max=std_max)


@pytest.mark.slow
def test_layerwise_reconstructs_a_tiny_deep_teacher_end_to_end(problem):
    teacher, data = problem
    X, y = data.X_train, data.y_train
    _, students = planted_deep_students(teacher, WIDTHS, 4, X, y)
    assert max(s.loss for s in students) < 1e-10  # the planted students are exact
    est = _estimator(gamma=(0.5, 0.75), beta=(math.pi / 5, math.pi / 12)).fit(X, y, students=students)

    assert est.layer_sizes_ == TEACHER
    summary, rows = compare_layers(est.spec_, est.params_, teacher.spec, teacher.params, data.X_test, data.y_test)
    assert summary["r"] == summary["m_hat"] == list(TEACHER[1:-1])
    assert summary["excess"] == [0, 0] and summary["missing"] == [0, 0]
    assert all(L["max_angle_deg"] < 1e-3 for L in summary["layers"])
    assert sorted((row["layer"], row["teacher"]) for row in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert summary["test_rmse"] < 1e-10
    report = est.report_
    assert report["m_hat"] == list(TEACHER[1:-1])
    assert report["layers"][0]["bias_filter"]["removed"] == []
    assert report["train_loss"]["finetuned"] <= report["train_loss"]["folded"]

    # Every retrained student holds the same reconstructed first-layer weights, bit for bit.
    retrained = est.retrained_[0]
    mask = fixed_weights_mask(retrained[0].spec, 1)
    assert all(np.array_equal(s.params[~mask], retrained[0].params[~mask]) for s in retrained)


def test_retraining_keeps_fixed_weights_bit_for_bit(problem):
    teacher, data = problem
    X, y = data.X_train[:200], data.y_train[:200]
    fixed = [teacher.spec.unpack(teacher.params)[0]]
    spec = MLPSpec((3, 2, 4, 1), ACT)
    budget = Budget(ode_steps=20, ode_time=30.0, optim_steps=20, optim_time=30.0)
    students, _ = retrain_and_filter(_training(n_students=2), X, y, list(fixed), (4,), 1, budget, _filter(10.0))
    mask = fixed_weights_mask(spec, 1)
    assert mask.sum() == spec.n_params - 6  # only W_1 (2 x 3) is fixed
    for s, seed in zip(students, stage_seeds(0, 1, 2)):
        theta0 = stage_init(spec, fixed, seed)
        assert np.array_equal(s.params[~mask], theta0[~mask])
        assert not np.array_equal(s.params[mask], theta0[mask])  # the rest, biases included, trained
        assert not np.array_equal(s.spec.unpack(s.params)[0][1], fixed[0][1])


def test_retrained_students_are_saved_and_reloaded(problem, tmp_path, monkeypatch):
    teacher, data = problem
    X, y = data.X_train[:200], data.y_train[:200]
    W, b = teacher.spec.unpack(teacher.params)[0]
    budget = Budget(ode_steps=20, ode_time=30.0, optim_steps=20, optim_time=30.0)
    events = []
    est = _training(n_students=2, retrain_dir=tmp_path,
                    progress=lambda event, **info: events.append((event, info.get("resumed"))))
    first, _ = retrain_and_filter(est, X, y, [(W, b)], (4,), 1, budget, _filter(10.0))
    assert len(list(tmp_path.glob("stage1-*/student-*.npz"))) == 2

    # A rerun (say after a crash) loads them: nothing is trained, the results are the same.
    monkeypatch.setattr(ec.train.cached, "train_students", lambda *a, **k: pytest.fail("trained again"))
    events.clear()
    again, _ = retrain_and_filter(est, X, y, [(W, b)], (4,), 1, budget, _filter(10.0))
    assert [e for e in events if e[0] == "student"] == [("student", True)] * 2
    for a, r in zip(first, again):
        assert np.array_equal(a.params, r.params) and a.loss == r.loss
    monkeypatch.undo()

    # Other fixed weights are other inputs: a new folder, trained anew.
    retrain_and_filter(est, X, y, [(1.01 * W, b)], (4,), 1, budget, _filter(10.0))
    assert len(list(tmp_path.glob("stage1-*"))) == 2


def test_bias_filter_removes_a_mis_clustered_neuron(problem):
    teacher, data = problem
    X, y = data.X_train, data.y_train
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    # A mis-clustered neuron: teacher neuron 1 (w = (3, 0, 0)) rotated by 20 degrees, as a
    # cluster that mixes two directions would give. The students have no use for it: those
    # that reach zero loss route it into neurons the output ignores, and its bias drifts along
    # that flat direction, differently in each student (spread 1e-2..1e-1), while the biases
    # of the teacher's neurons agree to 1e-6.
    angle = math.radians(20.0)
    bogus_w, bogus_b = 3.0 * np.array([[math.cos(angle), math.sin(angle), 0.0]]), b1[1:2]
    np.testing.assert_allclose(W1[1], [3.0, 0.0, 0.0], atol=1e-12)
    fixed = [(np.vstack([W1, bogus_w]), np.append(b1, bogus_b))]
    students, report = retrain_and_filter(_training(n_students=4), X, y, fixed, (WIDTHS[1],), 1, RETRAIN, _filter(0.01))
    assert report["removed"] == [2]
    assert report["rounds"] == 2
    np.testing.assert_array_equal(fixed[0][0], W1)  # the layer lost the bogus neuron only
    assert max(report["std"]) <= 0.01
    assert bias_spread(students, 0).shape == (2,)


def test_bias_filter_at_once_removes_every_neuron_above_the_threshold_in_one_round(problem):
    teacher, data = problem
    X, y = data.X_train, data.y_train
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    bogus = [3.0 * np.array([math.cos(math.radians(a)), math.sin(math.radians(a)), 0.0]) for a in (20.0, -25.0)]
    fixed = [(np.vstack([W1, *bogus]), np.append(b1, [b1[1], b1[1]]))]
    students, report = retrain_and_filter(_training(n_students=4), X, y, fixed, (WIDTHS[1],), 1, RETRAIN,
                                          BiasFilter(std_max=0.01, at_once=True))
    # both bogus neurons spread their biases over the students; the teacher neurons do not
    assert sorted(report["removed"]) == [2, 3] and report["rounds"] == 2  # one round fewer than one by one
    assert report["neurons"] == [0, 1] and report["restored"] is None
    np.testing.assert_array_equal(fixed[0][0], W1)


def test_bias_filter_never_removes_a_protected_neuron(problem):
    teacher, data = problem
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    bogus_w = 3.0 * np.array([[math.cos(math.radians(20.0)), math.sin(math.radians(20.0)), 0.0]])
    fixed = [(np.vstack([W1, bogus_w]), np.append(b1, b1[1]))]
    students, report = retrain_and_filter(_training(n_students=4), data.X_train, data.y_train, fixed,
                                          (WIDTHS[1],), 1, RETRAIN, _filter(0.01), protected=[2])
    assert report["removed"] == [] and report["rounds"] == 1
    assert report["std"][2] > 0.01  # it would have gone (see the test above)
    assert len(fixed[0][1]) == 3


def test_bias_filter_puts_back_a_neuron_the_layer_needs(problem):
    """With a threshold no spread can meet, the filter removes the bogus neuron, then a
    teacher neuron; without it the students fit far worse, so it is put back."""
    teacher, data = problem
    X, y = data.X_train, data.y_train
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    bogus_w = 3.0 * np.array([[math.cos(math.radians(20.0)), math.sin(math.radians(20.0)), 0.0]])
    fixed = [(np.vstack([W1, bogus_w]), np.append(b1, b1[1]))]
    students, report = retrain_and_filter(_training(n_students=4), X, y, fixed, (WIDTHS[1],), 1, RETRAIN,
                                          _filter(1e-300))
    assert report["removed"] == [2] and report["restored"] in (0, 1)
    assert report["rounds"] == 3
    losses = [h["best_loss"] for h in report["history"]]
    assert losses[2] > 10 * losses[1]
    np.testing.assert_array_equal(fixed[0][0], W1)
    assert all(s.spec.layer_sizes == (3, 2, WIDTHS[1], 1) for s in students)


def test_fold_constant_neurons_preserves_the_function():
    rng = np.random.default_rng(0)
    spec = MLPSpec((3, 5, 4, 2), ACT)
    layers = spec.unpack(spec.init_params(1))
    W1, b1 = layers[0]
    W1[1] = 0.0  # constant type: sigma(b) everywhere
    b1[:] = rng.normal(size=5)
    layers[1][0][:, 3] = 0.0  # zero type: the next layer ignores neuron 3
    W2, b2 = layers[1]
    W2[2] = 0.0  # a second-layer constant neuron
    theta = spec.pack(layers)
    X = rng.uniform(-2, 2, size=(300, 3))
    new_spec, new_theta, removed = fold_constant_neurons(spec, theta, X)
    assert removed == [[1, 3], [2]]
    assert new_spec.layer_sizes == (3, 3, 3, 2)
    np.testing.assert_allclose(new_spec.forward(new_theta, X), spec.forward(theta, X), rtol=0, atol=1e-12)

    # A nearly constant neuron is folded with its mean: the function moves by its variation only.
    W1[1] = 1e-7 * rng.normal(size=3)
    theta = spec.pack(layers)
    new_spec, new_theta, removed = fold_constant_neurons(spec, theta, X)
    assert removed[0] == [1, 3]
    err = np.abs(new_spec.forward(new_theta, X) - spec.forward(theta, X)).max()
    assert 0 < err < 1e-5


def test_sub_student_and_per_layer_helpers():
    spec = MLPSpec((2, 5, 4, 1), ACT)
    theta = spec.init_params(0)
    s = TrainResult(spec, theta, 1e-3, 0.0, "budget", seed=7)
    sub = sub_student(s, 1)
    assert sub.spec.layer_sizes == (5, 4, 1) and sub.loss == 1e-3 and sub.seed == 7
    np.testing.assert_array_equal(sub.params, np.concatenate([theta[2 * 5 + 5:]]))
    assert per_layer(0.5, 3, "gamma") == (0.5, 0.5, 0.5)
    assert per_layer([0.5, 0.4], 2, "beta") == (0.5, 0.4)
    with pytest.raises(ValueError, match="gamma"):
        per_layer([0.5, 0.4], 3, "gamma")
    assert len(set(stage_seeds(0, 0, 4) + stage_seeds(0, 1, 4))) == 8


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": (0.5, 0.5, 0.5)}, "gamma"),
    ({"beta": (0.1, 0.0)}, "beta"),
    ({"bias_std_max": 0.0}, "bias_std_max"),
    ({"fold_tol": 1.0}, "fold_tol"),
    ({"reexpand": -1}, "reexpand=-1; allowed: an int >= 0"),
    ({"reexpand": 1.5}, "reexpand"),
    ({"loss_ratio": 0.5}, "loss_ratio=0.5; allowed: a number >= 1"),
    ({"loss_ratio": "1e3"}, "loss_ratio"),
])
def test_bad_parameters_raise(kwargs, match):
    est = LayerwiseExpandAndCluster((8, 8), **kwargs)
    with pytest.raises(ValueError, match=match):
        est.fit(np.zeros((10, 2)), np.zeros(10))


def test_fold_removes_neurons_that_only_feed_folded_neurons():
    spec = MLPSpec((2, 3, 2, 1), ACT)
    layers = spec.unpack(spec.init_params(2))
    (W1, b1), (W2, b2), (A, c) = layers
    W2[1] = 0.0  # second-layer neuron 1 is constant ...
    W2[1, 2] = 5.0  # ... except for its input from first-layer neuron 2,
    b2[1] = -60.0  # which cannot wake it: it is saturated at sigma(-60 + ...) ~ 0
    W2[0, 2] = 0.0  # and first-layer neuron 2 feeds nothing else
    theta = spec.pack(layers)
    X = np.random.default_rng(1).uniform(-1, 1, size=(200, 2))
    new_spec, new_theta, removed = fold_constant_neurons(spec, theta, X)
    assert removed == [[2], [1]] and new_spec.layer_sizes == (2, 2, 1, 1)
    np.testing.assert_allclose(new_spec.forward(new_theta, X), spec.forward(theta, X), rtol=0, atol=1e-12)


def test_compare_layers_counts_a_duplicate_as_excess_and_maps_it_through():
    teacher = make_teacher(TEACHER, TEACHER_SEED, ACT)
    (W1, b1), (W2, b2), (A, c) = teacher.spec.unpack(teacher.params)
    # Duplicate first-layer neuron 0 (the next layer's weight split 30/70) and reorder.
    W1d, b1d = np.vstack([W1[1], W1[0], W1[0]]), np.array([b1[1], b1[0], b1[0]])
    W2d = np.column_stack([W2[:, 1], 0.3 * W2[:, 0], 0.7 * W2[:, 0]])
    spec = MLPSpec((3, 3, 2, 1), ACT)
    theta = spec.pack([(W1d, b1d), (W2d[::-1], b2[::-1]), (A[:, ::-1], c)])
    X = teacher.dataset(100, 100).X_test
    summary, rows = compare_layers(spec, theta, teacher.spec, teacher.params, X, teacher.predict(X))
    assert summary["m_hat"] == [3, 2] and summary["excess"] == [1, 0] and summary["missing"] == [0, 0]
    assert summary["test_rmse"] < 1e-14
    layer2 = [r for r in rows if r["layer"] == 1]
    assert [r["reconstructed"] for r in layer2] == [1, 0]  # teacher order, reconstruction reversed
    assert max(r["angle_deg"] for r in layer2) < 1e-6  # the duplicate's 30 % counted for neuron 0


def _angle_deg(u, v):
    return math.degrees(math.acos(min(1.0, abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))))


def test_reexpand_finds_the_neuron_the_clustering_missed(problem):
    """The reconstructed layer lacks teacher neuron 1; students with teacher neuron 0 fixed
    and two free neurons agree on it, and it is added (close to the teacher's); a second
    round finds nothing more. (These briefly trained students also agree on a partner of
    neuron 0, -w with another bias, which g's linear part lets them use: it is added too,
    and left to the bias filter and the final folding.)"""
    from ec.reconstruct._reexpand import reexpand_layer

    teacher, data = problem
    X, y = data.X_train, data.y_train
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    fixed = [(W1[:1].copy(), b1[:1].copy())]
    # the reference: students with teacher neuron 0 alone cannot fit (loss ~1e-2)
    report = reexpand_layer(_training(n_students=4), X, y, fixed, (WIDTHS[1],), 1, Reexpansion(2, RETRAIN),
                            LayerClustering(0.5, math.radians(5)), 1e-2)
    W, b = fixed[0]
    assert report["added"][0] >= 1 and len(b) == 1 + sum(report["added"])
    np.testing.assert_array_equal(W[0], W1[0])  # the fixed neuron is untouched
    angles = [_angle_deg(np.append(W[i], b[i]), np.append(W1[1], b1[1])) for i in range(1, len(b))]
    assert min(angles) < 1.0
    assert report["added"][-1] == 0 and report["rounds"] == len(report["added"])


def test_reexpand_adds_nothing_to_a_complete_layer(problem):
    """The layer has both teacher neurons: free neurons do not lower the loss."""
    from ec.reconstruct._reexpand import reexpand_layer

    teacher, data = problem
    X, y = data.X_train, data.y_train
    (W1, b1) = teacher.spec.unpack(teacher.params)[0]
    fixed = [(W1.copy(), b1.copy())]
    training = _training(n_students=4)
    students, _ = retrain_and_filter(training, X, y, fixed, (WIDTHS[1],), 1, RETRAIN, _filter(0.1))
    reference = min(s.loss for s in students)
    report = reexpand_layer(training, X, y, fixed, (WIDTHS[1],), 1, Reexpansion(2, RETRAIN),
                            LayerClustering(0.5, math.radians(5)), reference)
    # the free neurons agree on something (helpers), but the fit gains nothing from them
    assert report["free_clusters"][0] >= 1 and report["added"] == [0]
    np.testing.assert_array_equal(fixed[0][0], W1)


def test_reexpand_leaves_out_the_neuron_the_guard_put_back(monkeypatch):
    """The free neurons search without the stand-in the filter's guard restored; when they
    find nothing the layer is given back as it was."""
    import ec.reconstruct._layerwise
    from ec.reconstruct._layerwise import _reexpand_and_filter

    W, b = np.arange(9.0).reshape(3, 3), np.array([0.0, 1.0, 2.0])
    fixed = [(W, b)]
    seen = {}

    def no_find(training, X, y, fixed, *args):
        seen["b"], seen["reference"] = fixed[-1][1].copy(), args[-1]
        return {"added": [0], "rounds": 1}

    monkeypatch.setattr(ec.reconstruct._layerwise, "reexpand_layer", no_find)
    # the layer was [n0, n1, n2, n3]; n3 went, then n1's removal was undone (loss 1e-2)
    filt = {"restored": 1, "neurons": [0, 1, 2], "history": [{"neurons": [0, 1, 2, 3], "best_loss": 1e-6},
                                        {"neurons": [0, 1, 2], "best_loss": 1e-6},
                                        {"neurons": [0, 2], "best_loss": 1e-2}]}
    students = [TrainResult(MLPSpec((3, 3, 1), ACT), np.zeros(16), 1e-6, 0.0, "budget", seed=0)] * 2
    report = {}
    out, out_filt = _reexpand_and_filter(_training(), None, None, fixed, (4,), 1, students, filt,
                                         reexpansion=Reexpansion(2, RETRAIN), bias_filter=_filter(0.1),
                                         retrain_budget=RETRAIN, clustering=LayerClustering(0.5, 0.1),
                                         layer_report=report)
    np.testing.assert_array_equal(seen["b"], [0.0, 2.0])  # searched without n1 (position 1)
    assert seen["reference"] == 1e-2
    assert fixed[0][1] is b and out is students and out_filt is filt
    assert report["reexpand"]["left_out"] == 1


def test_reexpand_clusters_first_layer_free_neurons_on_the_informative_inputs():
    from ec.reconstruct._reexpand import _agreed_free_neurons

    rng = np.random.default_rng(0)
    spec = MLPSpec((3, 2, 1), ACT)
    parts = []
    for s in range(4):
        # neuron 0 agrees across students on inputs 0, 1 (and the bias); input 2 is noise,
        # like a corner pixel the students never move; neuron 1 is random
        W = np.array([[1.0, 2.0, 5.0 * rng.normal()], 3.0 * rng.normal(size=3)])
        theta = spec.pack([(W, np.array([0.5, rng.normal()])), (np.ones((1, 2)), np.zeros(1))])
        parts.append(TrainResult(spec, theta, 1e-9, 0.0, "budget", seed=s))
    mask = np.array([True, True, False])
    W, b = _agreed_free_neurons(parts, ACT, LayerClustering(0.75, math.radians(5), "aligned", mask))
    assert len(b) == 1 and np.allclose(W[0, :2], [1.0, 2.0]) and b[0] == 0.5
    W, b = _agreed_free_neurons(parts, ACT, LayerClustering(0.75, math.radians(5), "aligned", None))
    assert len(b) == 0


def test_voters_are_a_near_best_minority_that_must_agree_or_else_a_gamma_vote():
    spec = MLPSpec((2, 3, 1), ACT)
    losses = [1e-6, 1e-30, 2e-6, 5e-28, np.nan, 1e-6, 3e-29, 1e-6, 1e-6]
    students = [TrainResult(spec, spec.init_params(i), loss, 0.0, "budget", seed=i) for i, loss in enumerate(losses)]
    students.append(failed_result(spec, spec.init_params(99), 99, "flow", "diverged"))

    def seeds(chosen):
        group, unanimous = chosen
        return [s.seed for s in group], unanimous

    everyone = [0, 1, 2, 3, 5, 6, 7, 8]
    # Three of eight usable within the ratio, in their order (failed and NaN left out): each must hold a cluster.
    assert seeds(voters(students, 1e3, 0.8)) == ([1, 3, 6], True)
    assert seeds(voters(students, math.inf, 0.8)) == (everyone, False)
    # More than half within the ratio: none stands out, gamma counts among them, when they
    # are enough for a cluster of two (ceil(0.3 * 3) is 1).
    majority = [students[i] for i in (1, 2, 3, 6)]
    assert seeds(voters(majority, 1e3, 0.5)) == ([1, 3, 6], False)
    assert seeds(voters(majority, 1e3, 0.3)) == ([1, 2, 3, 6], False)
    # Fewer than three within the ratio: every usable one.
    assert seeds(voters(students, 1.0, 0.8)) == (everyone, False)
    assert voters(students[4:5], 1e3, 0.8) == ([], False)
    # Below zero loss the ratio counts from zero loss: round-off is no distance.
    exact = [TrainResult(spec, spec.init_params(i), loss, 0.0, "budget", seed=i)
             for i, loss in enumerate([1e-31, 1e-29, 5e-12, 1e-8, 1e-6, 1e-6, 1e-6, 1e-6])]
    assert seeds(voters(exact, 1e3, 0.5)) == ([0, 1, 2, 3, 4, 5, 6, 7], False)  # two: no group
    assert seeds(voters(exact, 1e3, 0.5, zero_loss=1e-14)) == ([0, 1, 2], True)
    assert seeds(voters(exact, 1e3, 0.5, zero_loss=1e-20)) == ([0, 1, 2, 3, 4, 5, 6, 7], False)


def test_converged_students_are_not_outvoted(problem, monkeypatch):
    """Four exact students and six that fit another teacher's first layer: with
    ``loss_ratio`` the first layer handed to retraining is the teacher's; without it, it
    is not."""
    teacher, data = problem
    X, y = data.X_train, data.y_train
    _, exact = planted_deep_students(teacher, WIDTHS, 4, X, y)
    other = make_teacher(TEACHER, TEACHER_SEED + 1, ACT)
    _, wrong = planted_deep_students(other, WIDTHS, 6, X, other.spec.forward(other.params, X), seed=1)
    wrong = [TrainResult(s.spec, s.params, mse(s.spec, s.params, X, y), 0.0, "budget", seed=10 + i)
             for i, s in enumerate(wrong)]
    assert max(s.loss for s in exact) < 1e-10 < min(s.loss for s in wrong)

    class Handed(Exception):
        pass

    def stop(training, X, y, fixed, *args, **kw):
        raise Handed(fixed[0])

    monkeypatch.setattr("ec.reconstruct._layerwise.retrain_and_filter", stop)
    W_t = teacher.spec.unpack(teacher.params)[0][0]
    for loss_ratio, teachers in ((1e3, True), (math.inf, False)):
        with pytest.raises(Handed) as handed:
            _estimator(n_students=10, gamma=0.5, beta=math.pi / 5, loss_ratio=loss_ratio).fit(X, y, students=exact + wrong)
        W, _ = handed.value.args[0]
        angles = [min(_angle_deg(w, v) for v in W_t) for w in W]
        assert (W.shape == W_t.shape and max(angles) < 1e-3) == teachers
