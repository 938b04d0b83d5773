"""The summary of a fit, the same shape for one hidden layer and for many."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields


@dataclass
class Report(Mapping):
    """What :meth:`ExpandAndCluster.fit` found, one entry per hidden layer where a quantity is
    per layer. Read as attributes (``report.m_hat``) or as a mapping (``report["m_hat"]``,
    ``dict(report)``, JSON through :meth:`to_dict`).

    Attributes
    ----------
    layer_sizes : list of int
        The reconstructed network, ``[d_in, m_hat_1, ..., d_out]``.
    student_layer_sizes : list of int
    m_hat : list of int
        Reconstructed width of every hidden layer.
    n_students, n_usable_students : int
    failed_students : list of int
        Indices of the original students that failed.
    student_losses : list of float
        Training loss of every original student.
    gamma, beta : list of float
        The clustering parameters of every hidden layer.
    activation : str
    layers : list of dict
        Per hidden layer: clustering and collapse details; deep networks add ``bias_filter``
        and, with re-expansion, ``reexpand``.
    train_loss : dict
        Training MSE after each stage (``finetuned``: the final one).
    train_rmse : float
    seconds : dict
        Wall-clock seconds per stage.
    bias_filter : dict or None
        Deep networks: the A.3 filter's settings (:class:`BiasFilter`).
    folded, folded_after_finetune : list of list of int or None
        Deep networks: per hidden layer, neurons folded into the next bias before and after
        the fine-tune.
    """

    layer_sizes: list
    student_layer_sizes: list
    m_hat: list
    n_students: int
    n_usable_students: int
    failed_students: list
    student_losses: list
    gamma: list
    beta: list
    activation: str
    layers: list
    train_loss: dict
    train_rmse: float
    seconds: dict
    bias_filter: dict | None = None
    folded: list | None = None
    folded_after_finetune: list | None = None
    _keys: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        self._keys = tuple(f.name for f in fields(self) if f.name != "_keys" and getattr(self, f.name) is not None)

    def __getitem__(self, key: str):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def to_dict(self) -> dict:
        """A plain dict (the entries that are set), for JSON."""
        return {key: getattr(self, key) for key in self._keys}
