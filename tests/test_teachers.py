import numpy as np
import pytest

from ec.teachers import Teacher, make_teacher


@pytest.mark.parametrize("d, r", [(2, 2), (4, 4), (8, 8), (32, 4)])
def test_a4_construction(d, r):
    t = make_teacher((d, r, 1), seed=d * 10 + r)
    (W, b), (A, c) = t.spec.unpack(t.params)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 3.0)
    # before normalisation w had entries in {-1,0,1}: nonzero entries share one magnitude per row
    for w in W:
        nz = np.abs(w[w != 0])
        np.testing.assert_allclose(nz, nz[0])
    levels = 3 * np.array([-2, -1, 0, 1, 2]) * np.sqrt(3) / 3
    assert np.all(np.min(np.abs(b[:, None] - levels[None]), axis=1) < 1e-12)
    assert len({(tuple(np.round(w, 9)), round(bi, 9)) for w, bi in zip(W, b)}) == r
    # output weights are +-1 scaled by one common factor
    np.testing.assert_allclose(np.abs(A), np.abs(A[0, 0]))


def test_outputs_standardised_and_data_float64():
    t = make_teacher((4, 4, 1), seed=0)
    ds = t.dataset(n_train=30_000, n_test=1000)
    assert ds.X_train.shape == (30_000, 4) and ds.y_train.shape == (30_000, 1)
    assert ds.X_train.dtype == ds.y_train.dtype == np.float64
    assert abs(ds.y_train.mean()) < 0.03 and abs(ds.y_train.std() - 1) < 0.03
    assert np.abs(ds.X_train).max() <= np.sqrt(3)
    assert not np.array_equal(ds.X_train[:1000], ds.X_test)


def test_same_seed_same_teacher_and_data():
    a, b = make_teacher((8, 4, 1), 5), make_teacher((8, 4, 1), 5)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.dataset(100, 10).X_train, b.dataset(100, 10).X_train)
    assert not np.array_equal(a.params, make_teacher((8, 4, 1), 6).params)


def test_deep_teacher_layers_see_standardised_inputs():
    t = make_teacher((8, 4, 2, 1), seed=1)
    X = t.dataset(50_000, 10).X_train
    h1 = t.spec.hidden(t.params, X)[0]
    W2, b2 = t.spec.unpack(t.params)[1]
    # layer 2 equals an A.4 layer applied to standardised h1
    Z = (h1 - h1.mean(0)) / h1.std(0)
    W2_std = W2 * h1.std(0)
    np.testing.assert_allclose(np.linalg.norm(W2_std, axis=1), 3.0, rtol=0.02)
    np.testing.assert_allclose(h1 @ W2.T + b2, Z @ W2_std.T + (b2 + W2 @ h1.mean(0)), atol=1e-9)
    y = t.predict(X)
    assert abs(y.std() - 1) < 0.05


def test_save_load_round_trip(tmp_path):
    t = make_teacher((4, 2, 1), seed=3, activation="tanh")
    t.save(tmp_path / "t.npz")
    u = Teacher.load(tmp_path / "t.npz")
    assert u.spec == t.spec and u.seed == 3
    np.testing.assert_array_equal(u.params, t.params)
    assert list(tmp_path.iterdir()) == [tmp_path / "t.npz"]  # no temp file left behind


def test_shallowest_teacher_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="hidden layer"):
        make_teacher((4, 1), seed=0)
