import numpy as np
import pytest
import torch

from ec.mlp import MLPSpec, mse


def test_pack_unpack_round_trip_and_layout():
    spec = MLPSpec((3, 4, 2, 1), "tanh")
    theta = np.arange(spec.n_params, dtype=np.float64)
    layers = spec.unpack(theta)
    assert [W.shape for W, _ in layers] == [(4, 3), (2, 4), (1, 2)]
    # layer 1: W row-major, then b
    np.testing.assert_array_equal(layers[0][0].ravel(), np.arange(12))
    np.testing.assert_array_equal(layers[0][1], np.arange(12, 16))
    back = spec.pack(layers)
    np.testing.assert_array_equal(back, theta)
    assert back.dtype == np.float64
    assert spec.n_params == 4 * 3 + 4 + 2 * 4 + 2 + 2 + 1


def test_unpack_returns_views():
    spec = MLPSpec((2, 3, 1), "g")
    theta = np.zeros(spec.n_params)
    spec.unpack(theta)[0][0][1, 1] = 7.0
    assert theta[1 * 2 + 1] == 7.0


def test_forward_matches_torch_float64():
    spec = MLPSpec((5, 7, 3, 2), "silu")
    theta = spec.init_params(seed=1)
    X = np.random.default_rng(0).normal(size=(50, 5))
    layers = spec.unpack(theta)
    h = torch.tensor(X)
    for i, (W, b) in enumerate(layers):
        h = h @ torch.tensor(W).T + torch.tensor(b)
        if i < len(layers) - 1:
            h = torch.nn.functional.silu(h)
    out = spec.forward(theta, X)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, h.numpy(), rtol=1e-13, atol=1e-13)


def test_init_is_seeded_glorot():
    spec = MLPSpec((100, 300, 1), "g")
    a, b = spec.init_params(3), spec.init_params(3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, spec.init_params(4))
    W = spec.unpack(a)[0][0]
    assert abs(W.std() - np.sqrt(2 / 400)) < 0.003
    Wu = spec.unpack(spec.init_params(3, "uniform"))[0][0]
    assert np.abs(Wu).max() <= np.sqrt(6 / 400)
    assert np.all(spec.unpack(a)[0][1] == 0)


def test_mse_is_mean_over_all_elements():
    spec = MLPSpec((2, 2, 3), "relu")
    theta = np.zeros(spec.n_params)
    y = np.ones((4, 3))
    assert mse(spec, theta, np.zeros((4, 2)), y) == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layer_sizes=(3,)), "at least"),
        (dict(layer_sizes=(3, 0, 1)), ">= 1"),
        (dict(layer_sizes=(3, 2, 1), activation="nope"), "allowed"),
        (dict(layer_sizes=(3, 2, 1), activation="identity"), "hidden activation"),
    ],
)
def test_bad_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPSpec(**kwargs)


def test_bad_shapes_raise():
    spec = MLPSpec((3, 2, 1))
    with pytest.raises(ValueError, match="expected"):
        spec.unpack(np.zeros(5))
    with pytest.raises(ValueError, match="expected"):
        spec.forward(np.zeros(spec.n_params), np.zeros((4, 2)))
