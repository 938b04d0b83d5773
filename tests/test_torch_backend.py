"""The torch backend: exact math against numpy and the flow kernels, batched == sequential,
Adam == torch.optim.Adam, trainable masks, the plateau schedule, checkpoints."""

import numpy as np
import pytest
import torch

from ec.activations import HIDDEN_ACTIVATIONS, get_activation
from ec.mlp import MLPSpec, mse
from ec.teachers import make_teacher
from ec.train import Budget, backend_availability, get_backend, train_students
from ec.train.torch_backend import TorchTrainer, batched_forward, stack_params, torch_activation, unstack_params

TEACHER = make_teacher((6, 3, 2), seed=1, activation="g")
DATA = TEACHER.dataset(300, 50)
X, Y = DATA.X_train, DATA.y_train
SPEC = MLPSpec((6, 8, 2), "g")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def thetas(n, spec=SPEC):
    return [spec.init_params(s, "uniform") for s in range(n)]


@pytest.mark.parametrize("name", HIDDEN_ACTIVATIONS)
def test_torch_activations_equal_numpy(name):
    x = np.linspace(-40, 40, 2001)
    got = torch_activation(name)(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, get_activation(name).f(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("sizes,act", [((6, 8, 2), "g"), ((6, 5, 4, 2), "tanh"), ((6, 7, 2), "relu")])
def test_loss_and_gradient_match_flow_kernels_and_numpy(sizes, act):
    kernels = pytest.importorskip("ec.train.flow.kernels")
    spec = MLPSpec(sizes, act)
    ths = np.stack(thetas(3, spec))
    loss, grad = TorchTrainer(dtype="float64").loss_and_grad(spec, ths, X, Y)
    for i, th in enumerate(ths):
        ref_loss, ref_grad = kernels.loss_grad(spec, th, X, Y)
        assert loss[i] == pytest.approx(mse(spec, th, X, Y), rel=1e-13)
        assert loss[i] == pytest.approx(ref_loss, rel=1e-13)
        np.testing.assert_allclose(grad[i], ref_grad, rtol=1e-10, atol=1e-14)


def test_stack_unstack_and_forward_roundtrip():
    ths = np.stack(thetas(4))
    tensors = stack_params(SPEC, ths, torch.float64, "cpu")
    np.testing.assert_array_equal(unstack_params(tensors), ths)
    out = batched_forward(tensors, torch.as_tensor(X), torch_activation("g")).numpy()
    for i in range(4):
        np.testing.assert_allclose(out[i], SPEC.forward(ths[i], X), rtol=1e-12, atol=1e-13)


def test_batched_students_reduce_loss_and_match_sequential_runs():
    trainer = TorchTrainer(dtype="float64", batch_size=64, lr=3e-3, eval_every=5)
    budget = Budget(max_epochs=30)
    ths = thetas(3)
    batch = trainer.fit_many(SPEC, X, Y, ths, budget)
    for th, res in zip(ths, batch):
        single = trainer.fit(SPEC, X, Y, th, budget)
        assert res.loss < 0.5 * mse(SPEC, th, X, Y)
        assert res.loss == pytest.approx(mse(SPEC, res.params, X, Y), rel=1e-12)
        np.testing.assert_allclose(res.params, single.params, rtol=1e-9, atol=1e-12)
        assert res.params.dtype == np.float64 and res.stop_reason == "budget"
        assert res.phases[0].steps == 30 and res.loss_curve.shape == (7, 2)


def test_adam_matches_torch_optim_adam():
    trainer = TorchTrainer(dtype="float64", batch_size=100, lr=1e-2, patience=10**6, eval_every=1000)
    th = thetas(1)[0]
    res = trainer.fit(SPEC, X, Y, th, Budget(max_epochs=4))
    # The same updates with torch's own Adam and the trainer's mini-batch order.
    params = [t[0].clone().requires_grad_() for t in stack_params(SPEC, th[None], torch.float64, "cpu")]
    opt = torch.optim.Adam(params, lr=1e-2)
    act = torch_activation("g")
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    for epoch in range(4):
        perm = np.random.default_rng((0, epoch)).permutation(len(X))
        for s in range(0, len(X), 100):
            idx = torch.as_tensor(perm[s : s + 100])
            out = batched_forward([p[None] for p in params], Xt[idx], act)[0]
            loss = ((out - Yt[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    np.testing.assert_allclose(unstack_params([p[None] for p in params])[0], res.params, rtol=1e-10, atol=1e-13)


def test_trainable_mask_keeps_fixed_parameters():
    th = thetas(2)
    trainable = np.zeros(SPEC.n_params, dtype=bool)
    w0, b0, end = SPEC.offsets()[1]
    trainable[w0:end] = True  # train the output layer only
    res = TorchTrainer(dtype="float64", batch_size=64).fit_many(SPEC, X, Y, th, Budget(max_epochs=10), trainable)
    for t, r in zip(th, res):
        np.testing.assert_array_equal(r.params[~trainable], t[~trainable])
        assert not np.allclose(r.params[trainable], t[trainable])
        assert r.loss < mse(SPEC, t, X, Y)


def test_float32_default_and_float64_option():
    th = thetas(1)
    r32 = TorchTrainer(batch_size=64).fit_many(SPEC, X, Y, th, Budget(max_epochs=5))[0]
    r64 = TorchTrainer(dtype="float64", batch_size=64).fit_many(SPEC, X, Y, th, Budget(max_epochs=5))[0]
    assert r32.params.dtype == np.float64
    assert 0 < np.abs(r32.params - r64.params).max() < 1e-4  # float32 rounding, same trajectory
    with pytest.raises(ValueError, match="float16.*allowed: float32, float64"):
        TorchTrainer(dtype="float16")


def _plateau_run(patience, factor, min_lr, n_students=1):
    from ec.train.torch_backend import _Run

    trainer = TorchTrainer(batch_size=64, patience=patience, factor=factor, min_lr=min_lr)
    return _Run(trainer, SPEC, X, Y, np.stack(thetas(n_students)), Budget(max_epochs=100), None)


def test_plateau_rule_lowers_lr_after_patience_epochs_without_improvement():
    # The rule, on a chosen loss sequence (not a training trajectory): an epoch that does
    # not beat the best loss so far is a bad epoch; after more than `patience` of them in a
    # row the learning rate is multiplied by `factor`; an improvement resets the count.
    run = _plateau_run(patience=2, factor=0.5, min_lr=1e-9)
    lrs = []
    for loss in [1.0, 1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6]:
        run._schedule(np.array([loss]))
        lrs.append(float(run.lr[0]))
    assert lrs == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4]


def test_plateau_rule_stops_a_student_below_min_lr_and_leaves_the_others():
    run = _plateau_run(patience=1, factor=0.5, min_lr=3e-4, n_students=2)
    for epoch in range(6):
        run._schedule(np.array([1.0, 1.0 / (epoch + 1)]))  # student 1 improves every epoch
    from ec.train.torch_backend import _CONVERGED, _RUNNING

    assert run.state[0] == _CONVERGED and run.lr[0] < 3e-4
    assert run.state[1] == _RUNNING and run.lr[1] == 1e-3


def test_frozen_student_converges_on_the_plateau_rule():
    # Nothing trainable: the loss can only improve by rounding noise, so the schedule must
    # end the run ("converged") long before the epoch budget, whatever the summation order.
    trainer = TorchTrainer(batch_size=64, patience=2, factor=0.5, min_lr=3e-4)
    frozen = np.zeros(SPEC.n_params, dtype=bool)
    res = trainer.fit(SPEC, X, Y, thetas(1)[0], Budget(max_epochs=100), frozen)
    assert res.stop_reason == "converged" and 7 <= res.phases[0].steps < 100


def test_min_loss_stop_and_budget_in_seconds():
    tparams = TEACHER.params
    res = TorchTrainer(dtype="float64").fit(TEACHER.spec, X, Y, tparams, Budget(max_epochs=50, min_loss=1e-20))
    assert res.stop_reason == "min_loss" and res.phases[0].steps == 0 and res.loss < 1e-20
    res = TorchTrainer().fit(SPEC, X, Y, thetas(1)[0], Budget(max_epochs=10**6, optim_time=0.3))
    assert res.stop_reason == "budget" and res.phases[0].steps < 10**6


def test_checkpoint_resume_is_exact(tmp_path):
    ckpt = tmp_path / "students.ckpt.npz"
    ths = thetas(2)
    kw = dict(dtype="float64", batch_size=64, eval_every=3)
    full = TorchTrainer(**kw).fit_many(SPEC, X, Y, ths, Budget(max_epochs=12))
    TorchTrainer(**kw, checkpoint=ckpt).fit_many(SPEC, X, Y, ths, Budget(max_epochs=5))  # "interrupted"
    assert ckpt.exists()
    resumed = TorchTrainer(**kw, checkpoint=ckpt).fit_many(SPEC, X, Y, ths, Budget(max_epochs=12))
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a.params, b.params)
        assert b.phases[0].steps == 12
    with pytest.raises(ValueError, match="different run"):
        TorchTrainer(**kw, checkpoint=ckpt).fit_many(SPEC, X, Y, thetas(3), Budget(max_epochs=12))


def test_train_students_front_door_and_availability():
    res = train_students(SPEC, X, Y, seeds=[3, 4], backend="torch", budget=Budget(max_epochs=3), batch_size=64)
    assert [r.seed for r in res] == [3, 4] and all(r.backend == "torch" and not r.failed for r in res)
    # train_students starts from Glorot-normal points; the curve's first point is the float32 loss there.
    assert res[0].loss_curve[0, 1] == pytest.approx(mse(SPEC, SPEC.init_params(3), X, Y), rel=1e-6)
    usable, reason = backend_availability("torch")
    assert usable and "torch" in reason
    assert get_backend("torch").batched


def test_cached_students_are_reloaded_and_the_batch_checkpointed(tmp_path):
    from ec.train.cached import train_students_cached

    kw = dict(budget=Budget(max_epochs=3), batch_size=64, dtype="float64")
    first, loaded = train_students_cached(tmp_path, SPEC, X, Y, [1, 2], "torch", **kw)
    assert loaded == [] and len(list(tmp_path.glob("student-0*.npz"))) == 2
    assert (tmp_path / "student-batch.ckpt.npz").is_file()  # an interrupted batch resumes from it
    again, loaded = train_students_cached(tmp_path, SPEC, X, Y, [1, 2], "torch", **kw)
    assert loaded == [0, 1]
    assert all(np.array_equal(a.params, b.params) and a.loss == b.loss for a, b in zip(first, again))


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="batch_size=0"):
        TorchTrainer(batch_size=0)
    with pytest.raises(ValueError, match="factor=1.5"):
        TorchTrainer(factor=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            TorchTrainer(device="cuda").fit(SPEC, X, Y, thetas(1)[0], Budget(max_epochs=1))
    with pytest.raises(ValueError, match="expected \\(10,\\)|trainable has shape"):
        TorchTrainer().fit(SPEC, X, Y, thetas(1)[0], Budget(max_epochs=1), np.ones(10, dtype=bool))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_training_equals_cpu_training():
    spec = MLPSpec((6, 5, 4, 2), "g")
    ths = thetas(3, spec)
    trainable = np.ones(spec.n_params, dtype=bool)
    trainable[:6] = False
    budget = Budget(max_epochs=20)
    for dtype, tol in (("float64", 1e-8), ("float32", 1e-4)):
        kw = dict(dtype=dtype, batch_size=64, lr=3e-3, eval_every=5)
        cpu = TorchTrainer(device="cpu", **kw).fit_many(spec, X, Y, ths, budget, trainable)
        gpu = TorchTrainer(device="cuda", **kw).fit_many(spec, X, Y, ths, budget, trainable)
        for th, a, b in zip(ths, cpu, gpu):
            assert b.params.dtype == np.float64 and b.backend == "torch" and not b.failed
            # Fixed entries are exact (after rounding to the training dtype).
            np.testing.assert_array_equal(b.params[~trainable], th[~trainable].astype(dtype))
            np.testing.assert_allclose(b.params, a.params, rtol=tol, atol=tol)
            assert b.loss == pytest.approx(a.loss, rel=10 * tol)
    loss_c, grad_c = TorchTrainer(device="cpu", dtype="float64").loss_and_grad(spec, np.stack(ths), X, Y)
    loss_g, grad_g = TorchTrainer(device="cuda", dtype="float64").loss_and_grad(spec, np.stack(ths), X, Y)
    np.testing.assert_allclose(loss_g, loss_c, rtol=1e-13)
    np.testing.assert_allclose(grad_g, grad_c, rtol=1e-10, atol=1e-15)


@needs_cuda
def test_cuda_front_door_and_device_errors():
    res = train_students(SPEC, X, Y, seeds=[1, 2], backend="torch", budget=Budget(max_epochs=3), device="cuda")
    assert all(r.backend == "torch" and not r.failed and r.params.dtype == np.float64 for r in res)
    assert "CUDA" in backend_availability("torch")[1]
    bad = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=f"device='{bad}': only"):
        TorchTrainer(device=bad).fit(SPEC, X, Y, thetas(1)[0], Budget(max_epochs=1))
