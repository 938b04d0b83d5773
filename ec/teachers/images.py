"""Teachers trained on image datasets (appendix A.6.3): MLPs trained with cross-entropy and
Adam, stopped early on a held-out validation split; their logits are what students imitate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import atomic_save_npz
from ..mlp import MLPSpec
from ..queries import ImageDataset
from .synthetic import Teacher

Array = np.ndarray


_INFO_FIELDS = ("seed", "trained_on", "source", "n_train", "test_accuracy", "val_accuracy", "epochs")


def accuracy(logits: Array, labels: Array) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


@dataclass(frozen=True)
class ImageTeacher(Teacher):
    """A :class:`ec.teachers.Teacher` trained on an image dataset, with how it was made.

    Attributes
    ----------
    trained_on : str
        Training dataset name (not ``dataset``: that is :meth:`Teacher.dataset`).
    source : str
        Where that dataset came from.
    n_train : int
        Training samples used (validation split excluded).
    test_accuracy, val_accuracy : float
    epochs : int
        Epochs trained (the returned parameters are those of the best validation loss).
    """

    trained_on: str = ""
    source: str = ""
    n_train: int = 0
    test_accuracy: float = math.nan
    val_accuracy: float = math.nan
    epochs: int = 0

    def info(self) -> dict:
        return {
            "layer_sizes": list(self.spec.layer_sizes),
            "activation": self.spec.activation,
            "seed": self.seed,
            "trained_on": self.trained_on,
            "source": self.source,
            "n_train": self.n_train,
            "test_accuracy": self.test_accuracy,
            "val_accuracy": self.val_accuracy,
            "epochs": self.epochs,
        }

    def save(self, path: str | Path) -> None:
        """Atomic ``.npz``; its ``meta`` is a superset of :meth:`Teacher.save`'s."""
        atomic_save_npz(path, params=self.params, meta=np.array(json.dumps(self.info())))

    @classmethod
    def load(cls, path: str | Path) -> "ImageTeacher":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = np.array(f["params"], dtype=np.float64)
        spec = MLPSpec(tuple(meta.pop("layer_sizes")), meta.pop("activation"))
        return cls(spec, params, **{k: v for k, v in meta.items() if k in _INFO_FIELDS})


def train_image_teacher(
    data: ImageDataset,
    hidden_sizes,
    activation: str,
    seed: int = 0,
    *,
    max_epochs: int = 200,
    patience: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    device: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    progress: Callable[[dict], None] | None = None,
) -> ImageTeacher:
    """Train an MLP classifier ``(d_in, *hidden_sizes, n_classes)`` with cross-entropy.

    Parameters
    ----------
    data : ImageDataset
    hidden_sizes : sequence of int
        e.g. ``(64,)`` (shallow) or ``(30, 30, 30)`` (deep).
    activation : str
        Hidden activation.
    seed : int
        Glorot-uniform initialisation, validation split and mini-batch order.
    max_epochs, patience : int
        Stop after ``patience`` epochs without a lower validation loss, or at ``max_epochs``;
        the parameters with the lowest validation loss are returned.
    batch_size, lr : Adam mini-batch size and learning rate.
    val_fraction : float
        Share of the training split held out for early stopping.
    device, dtype, threads : see :class:`ec.train.torch_backend.TorchTrainer`.
    progress : callable(dict), optional
        Called after every epoch with ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``.
    """
    from ..train.torch_backend import torch_threads

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}; allowed: 0 < val_fraction < 1")
    for name, value in (("max_epochs", max_epochs), ("patience", patience), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value!r}; allowed: >= 1")
    spec = MLPSpec((data.d_in, *hidden_sizes, data.n_classes), activation)
    with torch_threads(threads):
        theta, val_acc, epochs, n_train = _fit_classifier(
            spec, data, seed, max_epochs, patience, batch_size, lr, val_fraction, device, dtype, progress
        )
    test_acc = accuracy(spec.forward(theta, data.X_test), data.y_test)
    return ImageTeacher(spec, theta, seed, data.name, data.source, n_train, test_acc, val_acc, epochs)


def _fit_classifier(spec, data, seed, max_epochs, patience, batch_size, lr, val_fraction, device, dtype, progress):
    """Adam on cross-entropy with early stopping; ``(best params, val accuracy, epochs, n_train)``."""
    import torch

    from ..train.torch_backend import batched_forward, resolve_device, stack_params, torch_activation, torch_dtype
    from ..train.torch_backend import unstack_params

    dev, dt = resolve_device(device), torch_dtype(dtype)
    rng = np.random.default_rng((seed, 1))
    order = rng.permutation(len(data.X_train))
    n_val = max(1, int(round(val_fraction * len(order))))
    val, train = order[:n_val], order[n_val:]
    Xtr = torch.as_tensor(data.X_train[train], dtype=dt, device=dev)
    ytr = torch.as_tensor(data.y_train[train], device=dev)
    Xva = torch.as_tensor(data.X_train[val], dtype=dt, device=dev)
    yva = torch.as_tensor(data.y_train[val], device=dev)
    params = [t.requires_grad_() for t in stack_params(spec, spec.init_params(seed, "uniform")[None], dt, dev)]
    act = torch_activation(spec.activation)
    cross_entropy = torch.nn.functional.cross_entropy
    opt = torch.optim.Adam(params, lr=lr)
    best, best_theta, best_acc, bad, epoch = math.inf, None, math.nan, 0, 0
    for epoch in range(1, max_epochs + 1):
        total = torch.zeros((), dtype=dt, device=dev)
        perm = torch.as_tensor(rng.permutation(len(train)), device=dev)
        for start in range(0, len(train), batch_size):
            idx = perm[start : start + batch_size]
            loss = cross_entropy(batched_forward(params, Xtr[idx], act)[0], ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        with torch.no_grad():
            out = batched_forward(params, Xva, act)[0]
            val_loss = float(cross_entropy(out, yva))
            val_acc = float((out.argmax(dim=1) == yva).double().mean())
        if progress is not None:
            progress({"epoch": epoch, "train_loss": float(total) / len(train), "val_loss": val_loss,
                      "val_accuracy": val_acc})
        if val_loss < best:
            best, best_theta, best_acc, bad = val_loss, unstack_params(params)[0], val_acc, 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best_theta, best_acc, epoch, len(train)
