"""The ``torch`` backend: N students trained as one batched model with Adam (appendix A.6.3).

The recipe of the paper's image experiments: MSE on the teacher's outputs, Adam on
mini-batches of 640, a plateau scheduler that lowers the learning rate after ``patience``
epochs without improvement of the training loss, and a stop once the learning rate would
fall below ``min_lr`` or at ``budget.max_epochs``.

Students are stacked: layer ``l`` of N students is one tensor ``W`` of shape
``(N, n_out, n_in)`` and ``b`` of shape ``(N, n_out)``. The first layer of all students is a
single matrix product with the shared inputs, the others are batched (``bmm``) products, and
the loss is the sum of the students' losses, so each student gets exactly its own gradient.
Adam is written out with one learning rate per student (each student has its own plateau
schedule); its update is elementwise, so a batch of N students follows the same trajectory
as N separate runs with the same mini-batch order. N students therefore cost about one
forward/backward pass of an N-times wider network.

Parameters cross this module's boundary as float64 numpy vectors in the :mod:`ec.mlp` layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..activations import LEAKY_RELU_SLOPE, SELU_ALPHA, SELU_SCALE
from ..io import atomic_save_npz
from ..mlp import MLPSpec
from .base import Budget, PhaseStats, TrainResult

Array = np.ndarray

DTYPES = ("float32", "float64")
# Per-student state codes stored in checkpoints.
_RUNNING, _MIN_LOSS, _CONVERGED, _BUDGET, _DIVERGED = 0, 1, 2, 3, 4
_STOP_REASONS = {_MIN_LOSS: "min_loss", _CONVERGED: "converged", _BUDGET: "budget", _DIVERGED: "error"}


def _torch():
    import torch

    return torch


def torch_activation(name: str) -> Callable:
    """The torch twin of :func:`ec.activations.get_activation` ``(name).f`` (same formulas)."""
    torch = _torch()
    F = torch.nn.functional

    def softplus(x):
        # logaddexp, not F.softplus: the latter switches to the identity above x = 20.
        return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))

    table = {
        "g": lambda x: softplus(x) + torch.sigmoid(4.0 * x),
        "softplus": softplus,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_RELU_SLOPE),
        "gelu": lambda x: F.gelu(x, approximate="none"),
        "silu": F.silu,
        "selu": lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(torch.clamp(x, max=0.0))),
        "mish": lambda x: x * torch.tanh(softplus(x)),
    }
    if name not in table:
        raise ValueError(f"activation {name!r} has no torch version; allowed: {', '.join(table)}")
    return table[name]


def resolve_device(device: str | None = None) -> str:
    """``None``/``"auto"``: ``"cuda"`` when a GPU is visible, else ``"cpu"``; an explicit
    CUDA device that does not exist raises ``ValueError``."""
    torch = _torch()
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: no CUDA GPU is visible to torch here; use 'cpu' or 'auto'")
        index = device.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    if device != "cpu":
        raise ValueError(f"device={device!r}; allowed: auto, cpu, cuda, cuda:N")
    return device


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads (None or 0: leave torch's setting alone).

    On a machine whose cores are shared, one thread is often several times faster than
    torch's default, which spins one thread per core.
    """
    if not n:
        yield
        return
    torch = _torch()
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_dtype(dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: {', '.join(DTYPES)}")
    return getattr(_torch(), dtype)


def stack_params(spec: MLPSpec, thetas: Array, dtype, device) -> list:
    """Flat parameters ``(N, n_params)`` -> ``[W (N, n_out, n_in), b (N, n_out), ...]`` tensors."""
    torch = _torch()
    thetas = np.asarray(thetas, dtype=np.float64)
    out = []
    for (o, i), (w0, b0, end) in zip(spec.layer_shapes, spec.offsets()):
        out.append(torch.as_tensor(thetas[:, w0:b0].reshape(-1, o, i), dtype=dtype, device=device).contiguous())
        out.append(torch.as_tensor(thetas[:, b0:end], dtype=dtype, device=device).contiguous())
    return out


def unstack_params(tensors: Sequence) -> Array:
    """Inverse of :func:`stack_params`: float64 numpy ``(N, n_params)``."""
    n = tensors[0].shape[0]
    return np.concatenate([t.detach().reshape(n, -1).cpu().double().numpy() for t in tensors], axis=1)


def batched_forward(tensors: Sequence, X, act: Callable):
    """Outputs ``(N, B, d_out)`` of N stacked networks on shared inputs ``X`` of shape ``(B, d_in)``."""
    torch = _torch()
    W, b = tensors[0], tensors[1]
    n, o, i = W.shape
    # One matrix product for the first layer of all students: (B, d_in) @ (d_in, N*o).
    h = (X @ W.reshape(n * o, i).T).reshape(X.shape[0], n, o).transpose(0, 1) + b[:, None, :]
    for W, b in zip(tensors[2::2], tensors[3::2]):
        h = torch.baddbmm(b[:, None, :], act(h), W.transpose(1, 2))
    return h


def flat_mse(spec: MLPSpec, X: Array, y: Array, act: Callable | None = None) -> Callable:
    """The loss of :func:`ec.mlp.mse` as a torch function of one flat float64 parameter tensor
    (:class:`MLPSpec` layout), for autograd and ``torch.func`` cross-checks of the flow kernels.

    Parameters
    ----------
    spec : MLPSpec
    X : ndarray, shape (n_samples, d_in); y : ndarray, shape (n_samples, d_out)
    act : callable, optional
        Torch activation (default: :func:`torch_activation` of ``spec.activation``).
    """
    torch = _torch()
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(len(X), -1))
    act = act or torch_activation(spec.activation)

    def loss(theta):
        h = Xt
        for l, ((o, i), (w0, b0, end)) in enumerate(zip(spec.layer_shapes, spec.offsets())):
            h = h @ theta[w0:b0].reshape(o, i).T + theta[b0:end]
            if l < spec.n_layers - 1:
                h = act(h)
        return ((h - yt) ** 2).mean()

    return loss


def _per_student_mse(out, y):
    return ((out - y) ** 2).mean(dim=(1, 2))


def _chunks(n: int, size: int):
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _fingerprint(spec, X, y, theta0s, trainable, options) -> str:
    h = hashlib.sha1()
    for a in (X, y, theta0s) + ((trainable,) if trainable is not None else ()):
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return json.dumps({"spec": [list(spec.layer_sizes), spec.activation], "data": h.hexdigest(), **options})


class TorchTrainer:
    """Batched Adam training of MLP students with PyTorch on CPU or CUDA.

    Parameters
    ----------
    device : str, optional
        ``"auto"``/None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    dtype : {"float32", "float64"}
        Training precision. Returned parameters are always float64, and the reported loss
        and gradient are evaluated in float64 at those parameters.
    batch_size : int
        Mini-batch size (paper: 640).
    lr : float
        Initial Adam learning rate.
    patience : int
        Epochs without a decrease of a student's epoch loss before its learning rate is
        multiplied by ``factor`` (paper: 100).
    factor : float
        Learning-rate reduction factor in (0, 1).
    min_lr : float
        A student whose learning rate would fall below this stops (``"converged"``).
    betas, eps : Adam constants.
    eval_every : int
        Every this many epochs the full training loss of every student is evaluated; the
        best evaluated parameters are returned and ``budget.min_loss`` is checked.
    seed : int
        Seeds the mini-batch order (a function of ``(seed, epoch)``, so resuming is exact).
    checkpoint : str or Path, optional
        ``.npz`` file holding the training state; an existing one with the same run
        fingerprint (spec, data, initial points, options) is resumed.
    checkpoint_every : float
        Seconds between checkpoint writes (also written when training ends).
    progress : callable(dict), optional
        Called after every epoch with ``epoch``, ``max_epochs``, ``loss`` (median epoch
        loss over running students), ``best`` (lowest evaluated loss), ``active``.
    eval_chunk : int
        Samples per chunk when evaluating the full loss and gradient (bounds memory).
    threads : int, optional
        torch CPU threads while training (None: torch's default).

    Notes
    -----
    ``budget.max_epochs``, ``budget.optim_steps`` (Adam steps), ``budget.optim_time``
    (seconds, counted across resumes) and ``budget.min_loss`` are honoured; the ODE fields
    and ``min_grad`` do not apply to stochastic training. ``PhaseStats.steps`` counts epochs.
    """

    name = "torch"
    batched = True

    def __init__(
        self,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 640,
        lr: float = 1e-3,
        patience: int = 100,
        factor: float = 0.5,
        min_lr: float = 1e-7,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        eval_every: int = 10,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        checkpoint_every: float = 30.0,
        progress: Callable[[dict], None] | None = None,
        eval_chunk: int = 8192,
        threads: int | None = None,
    ):
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.factor = factor
        self.min_lr = min_lr
        self.betas = betas
        self.eps = eps
        self.eval_every = eval_every
        self.seed = seed
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.eval_chunk = eval_chunk
        self.threads = threads
        torch_dtype(dtype)
        checks = {
            "batch_size": batch_size >= 1,
            "lr": lr > 0,
            "patience": patience >= 0,
            "factor": 0 < factor < 1,
            "min_lr": min_lr >= 0,
            "eval_every": eval_every >= 1,
            "eval_chunk": eval_chunk >= 1,
            "threads": threads is None or threads >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"TorchTrainer: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            torch = _torch()
        except ImportError as exc:
            return False, f"torch is not installed ({exc})"
        where = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
        return True, f"torch {torch.__version__} on {where}"

    # ------------------------------------------------------------------ public API
    def fit(self, spec, X, y, theta0, budget, trainable=None) -> TrainResult:
        return self.fit_many(spec, X, y, [theta0], budget, trainable)[0]

    def fit_many(self, spec, X, y, theta0s, budget: Budget, trainable=None) -> list[TrainResult]:
        """Train ``len(theta0s)`` students at once; one :class:`TrainResult` per student.

        Parameters
        ----------
        spec : MLPSpec
        X : ndarray, shape (n_samples, d_in)
        y : ndarray, shape (n_samples, d_out) or (n_samples,)
        theta0s : sequence of ndarray of float64, each shape (spec.n_params,)
        budget : Budget
        trainable : ndarray of bool, shape (spec.n_params,), optional
            False entries keep their initial value exactly.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).reshape(len(X), -1))
        theta0s = np.ascontiguousarray(np.stack([np.asarray(t, dtype=np.float64) for t in theta0s]))
        if X.ndim != 2 or X.shape[1] != spec.d_in or y.shape[1] != spec.d_out:
            raise ValueError(f"X {X.shape}, y {y.shape} do not match layer sizes {spec.layer_sizes}")
        if theta0s.shape[1] != spec.n_params:
            raise ValueError(f"initial points have {theta0s.shape[1]} parameters, spec has {spec.n_params}")
        if trainable is not None:
            trainable = np.asarray(trainable, dtype=bool)
            if trainable.shape != (spec.n_params,):
                raise ValueError(f"trainable has shape {trainable.shape}, expected ({spec.n_params},)")
        with torch_threads(self.threads):
            return _Run(self, spec, X, y, theta0s, budget, trainable).train()

    def loss_and_grad(self, spec: MLPSpec, thetas: Array, X: Array, y: Array) -> tuple[Array, Array]:
        """Full-data MSE and its gradient for each of ``thetas`` ``(N, n_params)``, in float64.

        Returns
        -------
        loss : ndarray of float64, shape (N,)
        grad : ndarray of float64, shape (N, n_params)
        """
        with torch_threads(self.threads):
            return self._loss_and_grad(spec, thetas, X, y)

    def _loss_and_grad(self, spec, thetas, X, y):
        torch = _torch()
        device = resolve_device(self.device)
        thetas = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
        params = [t.requires_grad_() for t in stack_params(spec, thetas, torch.float64, device)]
        act = torch_activation(spec.activation)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
        total = torch.zeros(len(thetas), dtype=torch.float64, device=device)
        for sl in _chunks(len(X), self.eval_chunk):
            xb = torch.as_tensor(X[sl], device=device)
            yb = torch.as_tensor(y[sl], device=device)
            # Sum of squared errors per student; divided by the element count below.
            sse = ((batched_forward(params, xb, act) - yb) ** 2).sum(dim=(1, 2))
            sse.sum().backward()
            total += sse.detach()
        scale = 1.0 / y.size
        grad = unstack_params([p.grad for p in params]) * scale
        return (total * scale).cpu().numpy(), grad


class _Run:
    """State of one ``fit_many`` call: stacked parameters, Adam moments, schedules."""

    def __init__(self, cfg: TorchTrainer, spec, X, y, theta0s, budget, trainable):
        torch = _torch()
        self.torch, self.cfg, self.spec, self.budget = torch, cfg, spec, budget
        self.device = resolve_device(cfg.device)
        self.dt = torch_dtype(cfg.dtype)
        self.X64, self.y64, self.trainable = X, y, trainable
        self.X = torch.as_tensor(X, dtype=self.dt, device=self.device)
        self.y = torch.as_tensor(y, dtype=self.dt, device=self.device)
        self.act = torch_activation(spec.activation)
        n = self.n = len(theta0s)
        self.params = [t.requires_grad_() for t in stack_params(spec, theta0s, self.dt, self.device)]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.masks = None
        if trainable is not None:
            self.masks = [t[0] for t in stack_params(spec, trainable[None].astype(np.float64), torch.bool, self.device)]
        self.lr = np.full(n, cfg.lr)
        self._lr_tensor_key, self._lr_tensor = None, None
        self.state = np.full(n, _RUNNING)
        self.plateau_best = np.full(n, np.inf)
        self.bad_epochs = np.zeros(n, dtype=np.int64)
        self.best_loss = np.full(n, np.inf)
        self.best_params = theta0s.copy()
        self.curves: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        self.epoch = self.step = 0
        self.elapsed = 0.0
        self.ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
        if self.ckpt is not None:
            opts = {k: getattr(cfg, k) for k in ("dtype", "batch_size", "lr", "patience", "factor", "min_lr", "seed")}
            opts["betas"], opts["eps"] = list(cfg.betas), cfg.eps
            self.fingerprint = _fingerprint(spec, X, y, theta0s, trainable, opts)
            if self.ckpt.exists():
                self._restore()

    # ---------------------------------------------------------------- training loop
    def train(self) -> list[TrainResult]:
        torch, cfg, budget = self.torch, self.cfg, self.budget
        start = time.perf_counter() - self.elapsed
        last_save = time.perf_counter()
        if self.epoch == 0 and not np.isfinite(self.best_loss).any():
            self._evaluate(0.0)
        n_samples, first_epoch = len(self.X64), self.epoch
        while True:
            self._apply_budget(time.perf_counter() - start)
            if not (self.state == _RUNNING).any():
                break
            perm = np.random.default_rng((cfg.seed, self.epoch)).permutation(n_samples)
            perm_t = torch.as_tensor(perm, device=self.device)
            active = torch.as_tensor(self.state == _RUNNING, device=self.device)
            epoch_sse = torch.zeros(self.n, dtype=self.dt, device=self.device)
            for sl in _chunks(n_samples, cfg.batch_size):
                idx = perm_t[sl]
                loss = _per_student_mse(batched_forward(self.params, self.X[idx], self.act), self.y[idx])
                grads = torch.autograd.grad(loss.sum(), self.params)
                self._adam(grads, active)
                epoch_sse += loss.detach() * (sl.stop - sl.start)
            self.epoch += 1
            epoch_loss = (epoch_sse / n_samples).cpu().numpy().astype(np.float64)
            self._schedule(epoch_loss)
            seconds = time.perf_counter() - start
            if self.epoch % cfg.eval_every == 0:
                self._evaluate(seconds)
            if cfg.progress is not None:
                running = self.state == _RUNNING
                cfg.progress(
                    {
                        "epoch": self.epoch,
                        "max_epochs": budget.max_epochs,
                        "loss": float(np.median(epoch_loss[running])) if running.any() else float("nan"),
                        "best": float(np.min(self.best_loss)),
                        "active": int(running.sum()),
                    }
                )
            if self.ckpt is not None and time.perf_counter() - last_save >= cfg.checkpoint_every:
                self.elapsed = seconds
                self._save()
                last_save = time.perf_counter()
        self.elapsed = time.perf_counter() - start
        if self.epoch > first_epoch and self.epoch % cfg.eval_every:
            self._evaluate(self.elapsed)
        if self.ckpt is not None:
            self._save()
        return self._results()

    def _apply_budget(self, seconds: float) -> None:
        b = self.budget
        over = self.epoch >= b.max_epochs or self.step >= b.optim_steps or seconds >= b.optim_time
        if over:
            self.state[self.state == _RUNNING] = _BUDGET

    def _adam(self, grads, active) -> None:
        torch, cfg = self.torch, self.cfg
        self.step += 1
        b1, b2 = cfg.betas
        c1, c2 = 1.0 - b1**self.step, 1.0 - b2**self.step
        lr = self._lr_on_device()
        with torch.no_grad():
            for k, (p, g, m, v) in enumerate(zip(self.params, grads, self.m, self.v)):
                shape = (-1,) + (1,) * (p.dim() - 1)
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                update = (lr / c1).view(shape) * m / (v.sqrt() / math.sqrt(c2) + cfg.eps)
                keep = ~active.view(shape)
                if self.masks is not None:
                    keep = keep | ~self.masks[k]
                # where, not a product: a stopped student may hold inf/nan moments.
                p.sub_(torch.where(keep, torch.zeros((), dtype=p.dtype, device=p.device), update))

    def _lr_on_device(self):
        # Copied only when a schedule changed it: a host-to-device copy every step would
        # make each Adam step wait for the GPU.
        key = self.lr.tobytes()
        if key != self._lr_tensor_key:
            self._lr_tensor = self.torch.as_tensor(self.lr, dtype=self.dt, device=self.device)
            self._lr_tensor_key = key
        return self._lr_tensor

    def _schedule(self, epoch_loss: Array) -> None:
        """ReduceLROnPlateau per student (threshold 0, no cooldown); divergence stops a student."""
        cfg = self.cfg
        running = self.state == _RUNNING
        diverged = running & ~np.isfinite(epoch_loss)
        if diverged.any():
            self.state[diverged] = _DIVERGED
            self._reset_to_best(diverged)
        running &= ~diverged
        better = running & (epoch_loss < self.plateau_best)
        self.plateau_best[better] = epoch_loss[better]
        self.bad_epochs[better] = 0
        self.bad_epochs[running & ~better] += 1
        reduce = running & (self.bad_epochs > cfg.patience)
        self.bad_epochs[reduce] = 0
        self.lr[reduce] *= cfg.factor
        self.state[reduce & (self.lr < cfg.min_lr * (1 - 1e-12))] = _CONVERGED

    def _reset_to_best(self, which: Array) -> None:
        best = stack_params(self.spec, self.best_params, self.dt, self.device)
        sel = self.torch.as_tensor(which, device=self.device)
        with self.torch.no_grad():
            for p, b, m, v in zip(self.params, best, self.m, self.v):
                shape = (-1,) + (1,) * (p.dim() - 1)
                p.copy_(self.torch.where(sel.view(shape), b, p))
                m.masked_fill_(sel.view(shape).expand_as(m), 0.0)
                v.masked_fill_(sel.view(shape).expand_as(v), 0.0)

    def _evaluate(self, seconds: float) -> None:
        """Full training loss of every student in the training dtype; keep the best parameters."""
        torch = self.torch
        with torch.no_grad():
            sse = torch.zeros(self.n, dtype=self.dt, device=self.device)
            for sl in _chunks(len(self.X64), self.cfg.eval_chunk):
                out = batched_forward(self.params, self.X[sl], self.act)
                sse += ((out - self.y[sl]) ** 2).sum(dim=(1, 2))
        loss = (sse / self.y64.size).cpu().numpy().astype(np.float64)
        loss[self.state == _DIVERGED] = np.inf
        better = np.isfinite(loss) & (loss < self.best_loss)
        if better.any():
            self.best_params[better] = unstack_params(self.params)[better]
            self.best_loss[better] = loss[better]
        for i in range(self.n):
            if np.isfinite(loss[i]):
                self.curves[i].append((seconds, loss[i]))
        self.state[(self.state == _RUNNING) & (self.best_loss <= self.budget.min_loss)] = _MIN_LOSS

    def _results(self) -> list[TrainResult]:
        loss, grad = self.cfg.loss_and_grad(self.spec, self.best_params, self.X64, self.y64)
        if self.trainable is not None:
            grad = grad[:, self.trainable]
        out = []
        for i in range(self.n):
            state = int(self.state[i])
            failed = state == _DIVERGED
            out.append(
                TrainResult(
                    spec=self.spec,
                    params=self.best_params[i].copy(),
                    loss=float(loss[i]),
                    grad_norm=float(np.max(np.abs(grad[i]), initial=0.0)),
                    stop_reason=_STOP_REASONS.get(state, "budget"),
                    phases=(PhaseStats("adam", self.epoch, self.elapsed, float(loss[i])),),
                    loss_curve=np.array(self.curves[i], dtype=np.float64).reshape(-1, 2),
                    backend="torch",
                    failed=failed,
                    error=f"diverged (non-finite loss) before epoch {self.epoch}" if failed else None,
                )
            )
        return out

    # ---------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        k = max(len(c) for c in self.curves)
        curves = np.full((self.n, k, 2), np.nan)
        for i, c in enumerate(self.curves):
            if c:
                curves[i, : len(c)] = c
        atomic_save_npz(
            self.ckpt,
            fingerprint=np.array(self.fingerprint),
            params=unstack_params(self.params),
            m=unstack_params(self.m),
            v=unstack_params(self.v),
            lr=self.lr,
            state=self.state,
            plateau_best=self.plateau_best,
            bad_epochs=self.bad_epochs,
            best_loss=self.best_loss,
            best_params=self.best_params,
            curves=curves,
            counters=np.array([self.epoch, self.step], dtype=np.int64),
            elapsed=np.array(self.elapsed),
        )

    def _restore(self) -> None:
        with np.load(self.ckpt, allow_pickle=False) as f:
            if str(f["fingerprint"]) != self.fingerprint:
                raise ValueError(
                    f"checkpoint {str(self.ckpt)!r} belongs to a different run (data, initial points, "
                    "architecture or trainer options differ); delete it or use another path"
                )
            for name, target in (("params", self.params), ("m", self.m), ("v", self.v)):
                with self.torch.no_grad():
                    for t, s in zip(target, stack_params(self.spec, f[name], self.dt, self.device)):
                        t.copy_(s)
            self.lr, self.state = f["lr"].copy(), f["state"].copy()
            self.plateau_best, self.bad_epochs = f["plateau_best"].copy(), f["bad_epochs"].copy()
            self.best_loss, self.best_params = f["best_loss"].copy(), f["best_params"].copy()
            self.curves = [[tuple(r) for r in c if np.isfinite(r).all()] for c in f["curves"]]
            self.epoch, self.step = (int(c) for c in f["counters"])
            self.elapsed = float(f["elapsed"])
        # A run stopped by its budget may go on under a larger one.
        self.state[self.state == _BUDGET] = _RUNNING
