"""Readers for the two raw formats image datasets ship in, using only the standard library
and numpy: IDX (MNIST, Fashion-MNIST; optionally gzipped) and the CIFAR-10 python pickles."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

# IDX type byte -> big-endian numpy dtype.
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of its stored shape.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_TYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{str(path)!r}: header promises {expected} bytes of data, file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(tuple(dims))


def find_idx_set(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-style files in ``folder`` (gzipped or not), or None if any is missing."""
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    found = {}
    for key, stem in stems.items():
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            return None
    return found


def read_idx_set(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` from :func:`find_idx_set`."""
    return tuple(read_idx(files[k]) for k in ("train_images", "train_labels", "test_images", "test_labels"))


def read_cifar10_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 from its ``cifar-10-batches-py`` folder: images ``(n, 3, 32, 32)`` uint8, labels.

    The batches are Python pickles (the dataset's official format); only open folders
    you trust.
    """

    def batch(name):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"])

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    X_test, y_test = batch("test_batch")
    return np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), X_test, y_test
