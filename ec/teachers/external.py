"""A network a user hands in (``ec recover``): loaded, wrapped as a float64 function and
queried through one counter.

What can be handed in (:func:`load_model`):

- a TorchScript archive (``torch.jit.script(model).save(path)``): loaded without running
  code from the file;
- a state dict of a ``Sequential`` of ``Linear`` layers (``torch.save(model.state_dict(),
  path)``): loaded with ``weights_only=True``; the activation must be given;
- a whole pickled module (``torch.save(model, path)``): unpickling runs code from the
  file, so only with ``allow_pickle=True``;
- ``package.module:function``: the user's own code, imported and called on ``(n, d)``
  float64 arrays;
- a file of query pairs: ``.npz`` with arrays ``X`` (n, d) and ``y`` (n, k), or ``.csv``
  with a header where the output columns are named ``y`` or ``y<something>``.

Torch modules are evaluated in float64 on a copy (their weights are what is recovered;
float32 arithmetic would blur the answers at 1e-7). A module that is a chain of ``Linear``
layers and one registered activation also yields its architecture and weights, so the
recovered network can be compared with them.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import math
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..activations import HIDDEN_ACTIVATIONS, LEAKY_RELU_SLOPE
from ..mlp import MLPSpec

Array = np.ndarray

PAIR_SUFFIXES = (".npz", ".csv")
# Torch module class -> activation name in ec.activations (with the arguments that match ours).
_TORCH_ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "GELU": "gelu", "Softplus": "softplus",
                      "LeakyReLU": "leaky_relu", "SiLU": "silu", "SELU": "selu", "Mish": "mish"}
_TRANSPARENT = ("Identity", "Flatten", "Dropout")
_CHUNK = 8192  # rows per call of the user's function (bounded memory for large query sets)


class ModelError(ValueError):
    """A model that cannot be loaded or answers wrongly; the message says what to do."""


class QueryBudgetExceeded(ModelError):
    """More teacher evaluations were asked for than ``--max-queries`` allows."""


@dataclass
class ExternalModel:
    """A user's network as a black box with a query counter.

    Attributes
    ----------
    source : str
        What was handed in (path or ``module:function``).
    kind : str
        ``"torchscript"``, ``"state_dict"``, ``"pickle"``, ``"callable"`` or ``"pairs"``.
    d_in, d_out : int or None
        Input and output sizes (``d_out`` is known after the first query).
    spec, params : MLPSpec and ndarray, or None
        The architecture and flat float64 weights when the model is a chain of ``Linear``
        layers with one registered activation; otherwise None.
    pairs : (ndarray, ndarray) or None
        For a file of query pairs, its ``(X, y)``: no other query can be asked.
    identity : str
        A hash of what was handed in: a run directory is never reused for another model.
    max_queries : int or None
        Evaluations allowed in all (``queries`` counts them).
    """

    source: str
    kind: str
    function: Callable[[Array], Array] | None = None
    d_in: int | None = None
    d_out: int | None = None
    spec: MLPSpec | None = None
    params: Array | None = None
    pairs: tuple[Array, Array] | None = None
    identity: str = ""
    max_queries: int | None = None
    queries: int = field(default=0, init=False)
    evaluations: int = field(default=0, init=False)

    @property
    def activation(self) -> str | None:
        return None if self.spec is None else self.spec.activation

    def query(self, X: Array) -> Array:
        """The model's answers on ``X`` (n, d_in), counted against :attr:`max_queries`.

        Raises
        ------
        QueryBudgetExceeded
            When the count would pass ``max_queries``.
        ModelError
            Outputs of the wrong shape or not finite.
        """
        n = len(X)
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetExceeded(
                f"--max-queries={self.max_queries}: {self.queries} queries used, {n} more asked for; raise "
                "--max-queries or lower --n-train / --n-test")
        self.queries += n
        return self._answer(X)

    def evaluate(self, X: Array) -> Array:
        """The model's answers on evaluation inputs, counted apart from the queries (the
        reported test of the recovered network, not part of recovering it)."""
        self.evaluations += len(X)
        return self._answer(X)

    def _answer(self, X: Array) -> Array:
        if self.function is None:
            raise ModelError(f"{self.source!r} is a file of query pairs: it cannot answer new queries")
        X = np.ascontiguousarray(X, dtype=np.float64)
        parts = []
        for start in range(0, len(X), _CHUNK):
            block = X[start:start + _CHUNK]
            try:
                out = self.function(block)
            except Exception as exc:
                raise ModelError(f"{self.source!r} failed on a ({len(block)}, {X.shape[1]}) float64 input: "
                                 f"{type(exc).__name__}: {exc}") from None
            parts.append(_as_outputs(out, len(block), self.source))
        y = np.concatenate(parts) if parts else np.zeros((0, self.d_out or 1))
        if self.d_out is None:
            self.d_out = y.shape[1]
        elif y.shape[1] != self.d_out:
            raise ModelError(f"{self.source!r} returned {y.shape[1]} outputs per input after {self.d_out} before")
        return y


def _as_outputs(out, n: int, source: str) -> Array:
    """``out`` as a finite float64 (n, k) array, or a :class:`ModelError` saying what is wrong."""
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    try:
        y = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{source!r} returned {type(out).__name__}, not an array of numbers") from None
    if y.ndim == 1 and len(y) == n:
        y = y[:, None]
    if y.ndim != 2 or len(y) != n:
        raise ModelError(f"{source!r} returned shape {y.shape} for {n} inputs; it must return ({n}, k): one row "
                         "of outputs per input row")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).any(axis=1).sum())
        raise ModelError(f"{source!r} returned NaN or infinite outputs for {bad} of {n} inputs; recovery needs "
                         "finite outputs (check the model, or the query distribution --queries)")
    return y


def load_model(source: str, activation: str | None = None, allow_pickle: bool = False,
               d_in: int | None = None) -> ExternalModel:
    """Load what ``source`` names (see the module docstring).

    Parameters
    ----------
    source : str
        A file path or ``package.module:function``.
    activation : str, optional
        Needed for a state dict; checked against what a torch module declares.
    allow_pickle : bool
        Load a whole pickled torch module (runs code from the file).
    d_in : int, optional
        Input size, needed for a callable (a torch module or a pairs file tells its own).

    Raises
    ------
    ModelError
        Naming the source and what to do.
    """
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() in PAIR_SUFFIXES:
            return _load_pairs(path)
        return _load_torch(path, activation, allow_pickle)
    if ":" in source and not path.exists():
        return _load_callable(source, d_in)
    raise ModelError(f"MODEL={source!r} is neither a file nor package.module:function; give a TorchScript or "
                     f"torch file, a file of query pairs ({', '.join(PAIR_SUFFIXES)}) or a callable")


def from_torch(module, source: str = "torch module", identity: str = "") -> ExternalModel:
    """An in-memory ``torch.nn.Module`` as an :class:`ExternalModel` (float64 copy)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # TorchScript's .double() touches .grad of non-leaf tensors and warns
        warnings.simplefilter("ignore", UserWarning)
        model = copy.deepcopy(module).double().eval()

    def function(X: Array) -> Array:
        with torch.no_grad():
            return model(torch.from_numpy(X)).numpy()

    spec, params = read_architecture(model)
    first = next((m for m in model.modules() if _class_name(m) == "Linear"), None)
    din = spec.d_in if spec is not None else (int(first.in_features) if first is not None else None)
    return ExternalModel(source, "torch", function, din, None if spec is None else spec.d_out, spec, params,
                         identity=identity or _hash_params(model))


def from_callable(function: Callable[[Array], Array], d_in: int, source: str = "callable",
                  identity: str = "") -> ExternalModel:
    """A Python function mapping (n, d_in) float64 arrays to (n, k) as an :class:`ExternalModel`."""
    if not callable(function):
        raise ModelError(f"{source!r} is {type(function).__name__}, not a function")
    identity = identity or hashlib.sha256(source.encode()).hexdigest()[:16]
    return ExternalModel(source, "callable", function, int(d_in), identity=identity)


def from_pairs(X, y, source: str = "query pairs") -> ExternalModel:
    """Fixed query pairs ``X`` (n, d), ``y`` (n, k) or (n,) as an :class:`ExternalModel`."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ModelError(f"{source}: X has shape {X.shape}; expected (n, d) with n >= 2")
    y = _as_outputs(y, len(X), source)
    if not np.isfinite(X).all():
        raise ModelError(f"{source}: X holds NaN or infinite inputs")
    digest = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()[:16]
    return ExternalModel(source, "pairs", None, X.shape[1], y.shape[1], pairs=(X, y), identity=digest)


def read_architecture(module) -> tuple[MLPSpec | None, Array | None]:
    """``(MLPSpec, flat float64 params)`` of a module whose leaf layers are ``Linear`` and one
    registered activation, alternating (``Identity``, ``Flatten``, ``Dropout`` ignored);
    ``(None, None)`` for anything else."""
    leaves = [m for m in module.modules() if not list(m.children())]
    layers, acts = [], []
    for m in leaves:
        name = _class_name(m)
        if name == "Linear":
            if len(layers) > len(acts):  # two Linear layers in a row: not an MLP of ours
                return None, None
            if m.bias is None:
                return None, None
            layers.append((m.weight.detach().double().numpy().copy(), m.bias.detach().double().numpy().copy()))
        elif name in _TORCH_ACTIVATIONS:
            act = _activation_of(m, name)
            if act is None or len(acts) != len(layers) - 1:
                return None, None
            acts.append(act)
        elif name not in _TRANSPARENT:
            return None, None
    if len(layers) < 2 or len(acts) != len(layers) - 1 or len(set(acts)) != 1:
        return None, None
    sizes = (layers[0][0].shape[1], *(W.shape[0] for W, _ in layers))
    if any(W.shape[1] != sizes[i] for i, (W, _) in enumerate(layers)):
        return None, None
    spec = MLPSpec(tuple(int(s) for s in sizes), acts[0])
    return spec, spec.pack(layers)


def _activation_of(m, name: str) -> str | None:
    """Our name for a torch activation module, None where its arguments differ from ours."""
    if name == "GELU" and getattr(m, "approximate", "none") != "none":
        return None
    if name == "Softplus" and getattr(m, "beta", 1.0) != 1.0:
        return None
    if name == "LeakyReLU" and not math.isclose(getattr(m, "negative_slope", LEAKY_RELU_SLOPE), LEAKY_RELU_SLOPE):
        return None
    return _TORCH_ACTIVATIONS[name]


def _class_name(m) -> str:
    """The class name of a module, also for a loaded TorchScript module (``original_name``)."""
    return getattr(m, "original_name", None) or type(m).__name__


def _hash_params(module) -> str:
    h = hashlib.sha256()
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _load_torch(path: Path, activation: str | None, allow_pickle: bool) -> ExternalModel:
    try:
        import torch
    except ImportError:
        raise ModelError(f"{str(path)!r}: reading torch files needs torch (pip install torch)") from None
    identity = _file_hash(path)
    if zipfile.is_zipfile(path):
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:
            scripted = None  # a zip written by torch.save, not TorchScript
        if scripted is not None:
            model = from_torch(scripted, str(path), identity)
            model.kind = "torchscript"
            return model
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for what it cannot read
        # a pickle of classes (a whole module) fails the weights-only unpickler on its first "global"
        if "unsupported global" not in str(exc).lower():
            raise ModelError(f"{str(path)!r} is not a torch file ec can read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}); save the model with "
                             "torch.jit.script(model).save(path)") from None
        if not allow_pickle:
            raise ModelError(f"{str(path)!r} holds a pickled torch module: loading it runs code from the file. "
                             "Pass --allow-pickle if you trust the file, or save the model as TorchScript "
                             "(torch.jit.script(model).save(path))") from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        model = from_torch(obj, str(path), identity)
        model.kind = "pickle"
        return model
    if isinstance(obj, dict):
        return _from_state_dict(obj, activation, str(path), identity)
    raise ModelError(f"{str(path)!r} holds a {type(obj).__name__}, not a torch module or a state dict")


def _from_state_dict(state: dict, activation: str | None, source: str, identity: str) -> ExternalModel:
    """A state dict of ``Linear`` layers (``*.weight``, ``*.bias`` in order) and ``activation``."""
    if activation is None:
        raise ModelError(f"{source!r} is a state dict (weights without the architecture): give its hidden "
                         f"activation with --act ({', '.join(HIDDEN_ACTIVATIONS)})")
    prefixes = [k[: -len(".weight")] for k in state if k.endswith(".weight")]
    try:
        layers = [(state[p + ".weight"].double().numpy(), state[p + ".bias"].double().numpy()) for p in prefixes]
    except (KeyError, AttributeError) as exc:
        raise ModelError(f"{source!r}: a state dict of Linear layers needs a .weight and a .bias per layer "
                         f"(missing {exc})") from None
    sizes = (layers[0][0].shape[1], *(W.shape[0] for W, _ in layers)) if layers else ()
    if len(layers) < 2 or any(W.ndim != 2 or W.shape[1] != sizes[i] for i, (W, _) in enumerate(layers)):
        raise ModelError(f"{source!r}: the state dict is not a chain of Linear layers (keys {list(state)[:6]}); "
                         "save the model as TorchScript instead")
    spec = MLPSpec(tuple(int(s) for s in sizes), activation)
    params = spec.pack(layers)
    return ExternalModel(source, "state_dict", lambda X: spec.forward(params, X), spec.d_in, spec.d_out, spec,
                         params, identity=identity)


def _load_callable(source: str, d_in: int | None) -> ExternalModel:
    module_name, _, attr = source.rpartition(":")
    if d_in is None:
        raise ModelError(f"MODEL={source!r} is a function: give its input size with --din")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # import the user's modules from the working directory, as python -m does
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelError(f"MODEL={source!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    function = getattr(module, attr, None)
    if function is None:
        raise ModelError(f"MODEL={source!r}: module {module_name!r} has no {attr!r}")
    return from_callable(function, d_in, source)


def _load_pairs(path: Path) -> ExternalModel:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files if name in ("X", "y")}
                names = f.files
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{str(path)!r} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
        if len(arrays) < 2:
            raise ModelError(f"{str(path)!r} holds {names}; a pairs file needs arrays named X and y")
        return from_pairs(arrays["X"], arrays["y"], str(path))
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise ModelError(f"{str(path)!r} is not a readable CSV file ({type(exc).__name__}: {exc})") from None
    outputs = [c for c in table.columns if str(c).lower().startswith("y")]
    inputs = [c for c in table.columns if c not in outputs]
    if not outputs or not inputs:
        raise ModelError(f"{str(path)!r}: name the output columns y (or y0, y1, ...) in the header, the others are "
                         f"inputs (columns: {list(table.columns)[:8]})")
    try:
        return from_pairs(table[inputs].to_numpy(np.float64), table[outputs].to_numpy(np.float64), str(path))
    except ValueError as exc:
        raise ModelError(f"{str(path)!r}: {exc}") from None
