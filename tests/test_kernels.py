"""Loss, gradient and exact Hessian of the flow backend against finite differences and torch."""

import numba
import numpy as np
import pytest

from ec.activations import HIDDEN_ACTIVATIONS, LEAKY_RELU_SLOPE, get_activation
from ec.mlp import MLPSpec, mse
from ec.train.flow import _deep, kernels
from ec.train.flow._activations_nb import CODES, fdd

SHALLOW, DEEP = (3, 5, 2), (3, 4, 3, 2)
EPS = 1e-6


def problem(sizes, activation, seed=0, n=40):
    """Random data and parameters; samples with a hidden pre-activation within 0.05 of 0
    are dropped, so that central differences never straddle the kink of relu,
    leaky_relu (sigma') or selu (sigma')."""
    rng = np.random.default_rng(seed)
    spec = MLPSpec(sizes, activation)
    X = rng.uniform(-1.5, 1.5, (4 * n, sizes[0]))
    theta = rng.normal(0.0, 0.8, spec.n_params)
    zs = _deep._forward(spec, spec.unpack(theta), X)[0]
    keep = np.all([np.abs(z).min(axis=1) > 0.05 for z in zs[:-1]], axis=0)
    X = X[keep][:n]
    assert len(X) >= n // 2
    return spec, X, rng.normal(size=(len(X), sizes[-1])), theta


def central_diff(f, theta):
    cols = []
    for e in np.eye(len(theta)):
        cols.append((np.asarray(f(theta + EPS * e)) - np.asarray(f(theta - EPS * e))) / (2 * EPS))
    return np.array(cols)


@pytest.mark.parametrize("sizes", [SHALLOW, DEEP], ids=["shallow", "deep"])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradient_and_hessian_match_finite_differences(sizes, activation):
    spec, X, y, theta = problem(sizes, activation)
    obj = kernels.MSE(spec, X, y)
    loss, grad = obj.loss_grad(theta)
    H = obj.hessian(theta)
    assert loss == pytest.approx(mse(spec, theta, X, y), rel=1e-13)
    fd_grad = central_diff(lambda t: mse(spec, t, X, y), theta)
    np.testing.assert_allclose(grad, fd_grad, rtol=1e-6, atol=1e-8)
    fd_hess = central_diff(lambda t: obj.loss_grad(t)[1], theta)
    np.testing.assert_allclose(H, fd_hess, rtol=1e-5, atol=1e-7 * np.abs(H).max())
    np.testing.assert_array_equal(H, H.T)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_fused_shallow_kernels_match_generic_path(activation):
    """The numba one-hidden-layer kernels against the layer-generic numpy code."""
    spec, X, y, theta = problem((4, 7, 3), activation, seed=1, n=1500)
    obj = kernels.MSE(spec, X, y)
    assert obj.shallow
    loss, grad = obj.loss_grad(theta)
    ref_loss, ref_grad = _deep.loss_grad(spec, theta, obj.X, obj.y)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-13 * np.abs(ref_grad).max())
    ref_H = _deep.hessian(spec, theta, obj.X, obj.y)
    np.testing.assert_allclose(obj.hessian(theta), ref_H, rtol=1e-11, atol=1e-13 * np.abs(ref_H).max())


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_numba_activations_match_registry(activation):
    act = get_activation(activation)
    x = np.concatenate([np.linspace(-40, 40, 4001), [-800.0, -1e-300, 0.0, 1e-300, 800.0]])
    f, df, d2f = (np.empty_like(x) for _ in range(3))
    fdd(CODES[activation], x, f, df, d2f, True)
    for got, ref in ((f, act.f(x)), (df, act.df(x)), (d2f, act.d2f(x))):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


TORCH_ACTIVATIONS = {
    "g": lambda F, x: F.softplus(x, threshold=1e300) + F.sigmoid(4 * x),
    "softplus": lambda F, x: F.softplus(x, threshold=1e300),
    "sigmoid": lambda F, x: F.sigmoid(x),
    "tanh": lambda F, x: F.tanh(x),
    "relu": lambda F, x: F.relu(x),
    "leaky_relu": lambda F, x: F.leaky_relu(x, LEAKY_RELU_SLOPE),
    "gelu": lambda F, x: F.gelu(x),
    "silu": lambda F, x: F.silu(x),
    "selu": lambda F, x: F.selu(x),
    "mish": lambda F, x: F.mish(x),
}


def torch_loss(spec, X, y):
    """Our flat-parameter loss in torch, with the activation written independently here."""
    torch = pytest.importorskip("torch")
    from ec.train.torch_backend import flat_mse

    sigma = TORCH_ACTIVATIONS[spec.activation]
    return flat_mse(spec, X, y, lambda h: sigma(torch.nn.functional, h))


@pytest.mark.parametrize("sizes", [SHALLOW, DEEP], ids=["shallow", "deep"])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_loss_and_gradient_match_torch_autograd(sizes, activation):
    torch = pytest.importorskip("torch")
    spec, X, y, theta = problem(sizes, activation, seed=2, n=300)
    t = torch.tensor(theta, requires_grad=True)
    ref = torch_loss(spec, X, y)(t)
    (ref_grad,) = torch.autograd.grad(ref, t)
    loss, grad = kernels.loss_grad(spec, theta, X, y)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("sizes", [(2, 3, 1), (2, 3, 2, 2), (3, 4, 3, 2, 2)], ids=["shallow", "deep", "deeper"])
@pytest.mark.parametrize("activation", ["g", "tanh", "gelu"])
def test_hessian_matches_torch_func_hessian(sizes, activation):
    torch = pytest.importorskip("torch")
    spec, X, y, theta = problem(sizes, activation, seed=3, n=200)
    ref = torch.func.hessian(torch_loss(spec, X, y))(torch.tensor(theta)).numpy()
    H = kernels.hessian(spec, theta, X, y)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("sizes", [SHALLOW, DEEP], ids=["shallow", "deep"])
def test_float64_throughout(sizes):
    spec, X, y, theta = problem(sizes, "g")
    loss, grad = kernels.loss_grad(spec, theta.astype(np.float32), X.astype(np.float32), y.astype(np.float32))
    H = kernels.hessian(spec, theta, X.astype(np.float32), y)
    assert isinstance(loss, float)
    assert grad.dtype == np.float64 and H.dtype == np.float64
    assert grad.shape == (spec.n_params,) and H.shape == (spec.n_params,) * 2


def test_single_output_accepts_1d_targets():
    spec, X, y, theta = problem((3, 4, 1), "tanh")
    a = kernels.loss_grad(spec, theta, X, y)
    b = kernels.loss_grad(spec, theta, X, y[:, 0])
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_result_does_not_depend_on_thread_count():
    spec, X, y, theta = problem((4, 9, 2), "g", n=5000)
    obj = kernels.MSE(spec, X, y)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = obj.loss_grad(theta), obj.hessian(theta)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = obj.loss_grad(theta), obj.hessian(theta)
    finally:
        numba.set_num_threads(before)
    assert one[0][0] == many[0][0]
    np.testing.assert_array_equal(one[0][1], many[0][1])
    np.testing.assert_allclose(one[1], many[1], rtol=1e-14, atol=1e-15)


def test_non_finite_parameters_give_nan():
    spec, X, y, theta = problem(SHALLOW, "g")
    theta[3] = np.inf
    loss, grad = kernels.loss_grad(spec, theta, X, y)
    assert np.isnan(loss) and np.isnan(grad).all()


@pytest.mark.parametrize(
    "theta_len, X_shape, y_shape, match",
    [(31, (10, 3), (10, 2), "theta has shape"), (32, (10, 4), (10, 2), "X has shape"), (32, (10, 3), (10, 3), "outputs")],
)
def test_bad_shapes_are_rejected(theta_len, X_shape, y_shape, match):
    spec = MLPSpec(SHALLOW, "g")
    with pytest.raises(ValueError, match=match):
        kernels.loss_grad(spec, np.zeros(theta_len), np.zeros(X_shape), np.zeros(y_shape))


def test_deep_hessian_does_not_depend_on_the_sample_blocks(monkeypatch):
    """The deep Hessian sums Kronecker blocks over sample blocks: one block or many, same sum."""
    spec, X, y, theta = problem((3, 5, 4, 3, 2), "g", seed=4, n=300)
    whole = kernels.hessian(spec, theta, X, y)
    monkeypatch.setattr(_deep, "_BLOCK_BYTES", 1)  # 64 samples per block
    np.testing.assert_allclose(kernels.hessian(spec, theta, X, y), whole, rtol=1e-12, atol=1e-14 * np.abs(whole).max())


@pytest.mark.parametrize("sizes", [SHALLOW, DEEP, (3, 4, 3, 2, 2)], ids=["shallow", "deep", "deeper"])
@pytest.mark.parametrize("activation", ["g", "tanh", "relu"])
def test_gauss_newton_matrix_is_jacobian_product(sizes, activation):
    """``G = 2/(NK) J^T J`` with J from central differences of the outputs; loss and
    gradient as loss_grad's; at zero residual G is the exact Hessian."""
    spec, X, y, theta = problem(sizes, activation, seed=5)
    obj = kernels.MSE(spec, X, y)
    loss, grad, G = obj.gauss_newton(theta)
    ref_loss, ref_grad = obj.loss_grad(theta)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    J = central_diff(lambda t: spec.forward(t, X).ravel(), theta).T
    np.testing.assert_allclose(G, 2.0 / J.shape[0] * J.T @ J, rtol=1e-6, atol=1e-8 * np.abs(G).max())
    np.testing.assert_array_equal(G, G.T)
    exact = kernels.MSE(spec, X, spec.forward(theta, X))
    np.testing.assert_allclose(exact.gauss_newton(theta)[2], exact.hessian(theta), rtol=1e-10,
                               atol=1e-13 * np.abs(G).max())


def test_gauss_newton_does_not_depend_on_the_sample_blocks(monkeypatch):
    spec, X, y, theta = problem((3, 5, 4, 2), "g", seed=6, n=300)
    whole = kernels.MSE(spec, X, y).gauss_newton(theta)
    monkeypatch.setattr(_deep, "_BLOCK_BYTES", 1)  # 16 samples per block
    blocks = kernels.MSE(spec, X, y).gauss_newton(theta)
    assert blocks[0] == pytest.approx(whole[0], rel=1e-13)
    np.testing.assert_allclose(blocks[2], whole[2], rtol=1e-12, atol=1e-14 * np.abs(whole[2]).max())


def test_gauss_newton_of_non_finite_parameters_is_nan():
    spec, X, y, theta = problem(DEEP, "g")
    theta[0] = np.nan
    loss, grad, G = kernels.MSE(spec, X, y).gauss_newton(theta)
    assert np.isnan(loss) and np.isnan(grad).all() and np.isnan(G).all()
