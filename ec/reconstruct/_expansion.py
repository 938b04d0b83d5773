"""Step 1 of the method (paper section 5, "Expansion phase"): find the width at which
students reach near-zero loss, when the teacher's width is unknown.

Students of width 1, 2, 4, ... (every hidden layer that wide) are trained on the queries,
a few per width, each with a short budget that stops as soon as the loss is near zero.
The first width where one of them gets there bounds the teacher's width from above (a
student as wide as the teacher often misses zero loss, so the bound can be loose by a
factor of two or more); Expand-and-Cluster then trains students ``rho`` times wider and
finds the exact width by clustering. Students that stop short of zero loss whatever their
width (deep students, which stall in flat regions; answers that carry noise) end the search
on a plateau instead: once the best loss is small (:data:`PLATEAU_LOSS`) and doubling the
width no longer lowers it :data:`PLATEAU_GAIN` times, the narrower width is taken. Several activations can be tried: the one that
reaches near-zero loss at the smallest width, and there the lowest loss, is chosen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..mlp import MLPSpec, output_variance
from ..progress import Event
from ..train import Budget, train_students
from ._stages import student_seed

Array = np.ndarray

# Near-zero loss of Step 1: training MSE at most this times the outputs' mean variance (the
# paper's 1e-14 on its unit-variance synthetic outputs).
ZERO_LOSS = 1e-14
# 30 s: with 10 s, gn probes of width 16-64 for relu 10-16-10 teachers stopped at 1e-4 (2 of 3 seeds,
# docs/recover.md); probes narrower than the teacher mostly stop early, at their local minimum.
PROBE_BUDGET = Budget(ode_time=30.0, optim_time=30.0)
# Training queries per student parameter below which zero loss says little (the student
# could interpolate the queries whatever the teacher).
QUERIES_PER_PARAM = 4
# The plateau: best loss below this times the outputs' variance, and a doubling of the width
# that gains less than this factor.
PLATEAU_LOSS = 1e-6
PLATEAU_GAIN = 10.0


@dataclass(frozen=True)
class Probe:
    """Students of one width, depth and activation trained in Step 1."""

    width: int
    hidden_layers: int
    activation: str
    losses: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        finite = [x for x in self.losses if math.isfinite(x)]
        return min(finite) if finite else math.inf


@dataclass(frozen=True)
class WidthSearch:
    """The outcome of Step 1.

    Attributes
    ----------
    width : int or None
        Smallest width where a student reached :attr:`tolerance` (None: none did up to the
        largest width tried).
    hidden_layers : int
    activation : str
        The activation chosen (the only one tried, or the best of several).
    tolerance : float
        The absolute training loss counted as near zero.
    probes : tuple of Probe
        Every width, depth and activation tried, in order.
    stop : str
        Why the search ended: ``"found"`` (near-zero loss), ``"plateau"``, ``"max_width"``
        or ``"queries"`` (the next width has too many parameters for the training queries).
    """

    width: int | None
    hidden_layers: int
    activation: str
    tolerance: float
    probes: tuple[Probe, ...] = field(default_factory=tuple)
    stop: str = "found"

    def to_dict(self) -> dict:
        return {**asdict(self), "probes": [asdict(p) for p in self.probes]}


def probe_widths(max_width: int) -> list[int]:
    """1, 2, 4, ... up to ``max_width`` (included, also when not a power of two)."""
    widths = [1 << i for i in range(max(1, int(max_width)).bit_length()) if 1 << i <= max_width]
    return widths if widths[-1] == max_width else [*widths, int(max_width)]


def default_backend(hidden_layers: int) -> str:
    """``gn`` for one hidden layer (float64 Gauss-Newton: with the flow trainer's exact Hessians
    Step 1 found no width for relu 10-16-10 models, docs/recover.md), ``flow`` for deeper
    students (the only float64 trainer of several hidden layers)."""
    return "gn" if hidden_layers == 1 else "flow"


def student_params(d_in: int, d_out: int, width: int, hidden_layers: int) -> int:
    return MLPSpec((d_in, *[width] * hidden_layers, d_out), "tanh").n_params


def find_width(
    X: Array,
    y: Array,
    activations: Sequence[str],
    hidden_layers: Sequence[int] = (1,),
    max_width: int = 64,
    n_probe: int = 3,
    budget: Budget = PROBE_BUDGET,
    zero_loss: float = ZERO_LOSS,
    seed: int = 0,
    backend: str | None = None,
    n_jobs: int | None = None,
    done: Sequence[Probe] = (),
    on_probe: Callable[[Probe], None] | None = None,
    progress: Callable | None = None,
) -> WidthSearch:
    """Step 1: the smallest width (and depth, activation) where a student reaches near-zero
    loss, or where the loss stops falling with the width (see the module docstring).

    Parameters
    ----------
    X : ndarray of float64, shape (n, d_in)
    y : ndarray of float64, shape (n, d_out)
    activations : sequence of str
        Tried at every width, in this order.
    hidden_layers : sequence of int
        Depths tried in this order: all widths of one depth before the next.
    max_width : int
    n_probe : int
        Students per width, depth and activation.
    budget : Budget
        Per student; its ``min_loss`` is replaced by the near-zero tolerance so that a
        student stops as soon as it gets there.
    zero_loss : float
        Near zero: training MSE at most ``zero_loss`` times the outputs' mean variance.
    seed : int
        Student ``j`` of every probe starts from ``student_seed(seed, j)``.
    backend : str, optional
        Trainer of the probes (default :func:`default_backend` of each depth).
    n_jobs : int, optional
        Worker processes (None: all cores).
    done : sequence of Probe
        Probes of an earlier invocation (a resumed run): not trained again.
    on_probe : callable(Probe), optional
        Called as each new probe finishes (e.g. to save it).
    progress : callable, optional
        ``progress(event, **info)``; a ``"message"`` per probe.

    Returns
    -------
    WidthSearch
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    variance = max(output_variance(y), np.finfo(np.float64).tiny)
    tolerance = zero_loss * variance
    budget = Budget(**{**asdict(budget), "min_loss": tolerance})
    saved = {(p.hidden_layers, p.width, p.activation): p for p in done}
    probes: list[Probe] = []
    seeds = [student_seed(seed, j) for j in range(n_probe)]
    stop = "max_width"
    for depth in hidden_layers:
        previous = None  # the best probe of the previous width
        for width in probe_widths(max_width):
            if QUERIES_PER_PARAM * student_params(X.shape[1], y.shape[1], width, depth) > len(X):
                stop = "queries"
                break
            found = []
            for act in activations:
                probe = saved.get((depth, width, act))
                if probe is None:
                    spec = MLPSpec((X.shape[1], *[width] * depth, y.shape[1]), act)
                    results = train_students(spec, X, y, seeds, backend=backend or default_backend(depth),
                                             budget=budget, n_jobs=n_jobs)
                    probe = Probe(width, depth, act, tuple(float(r.loss) for r in results),
                                  tuple(float(r.seconds) for r in results))
                    if on_probe is not None:
                        on_probe(probe)
                probes.append(probe)
                if progress is not None:
                    progress(Event.MESSAGE, text=f"step 1: width {width} x {depth} hidden layer(s), {act}: best "
                                                 f"loss {probe.best:.2e} (near zero: <= {tolerance:.1e})")
                if probe.best <= tolerance:
                    found.append(probe)
            here = min(probes[-len(activations):], key=lambda p: p.best)
            if found:
                best = min(found, key=lambda p: p.best)
                return WidthSearch(width, depth, best.activation, tolerance, tuple(probes))
            if (previous is not None and previous.best <= PLATEAU_LOSS * variance
                    and here.best > previous.best / PLATEAU_GAIN):
                return WidthSearch(previous.width, depth, previous.activation, tolerance, tuple(probes), "plateau")
            previous = here
    best = min(probes, key=lambda p: p.best) if probes else None
    return WidthSearch(None, hidden_layers[-1] if best is None else best.hidden_layers,
                       activations[0] if best is None else best.activation, tolerance, tuple(probes), stop)
