"""``ec recover``: recover a network a user hands in, width unknown, queries counted.

:data:`RECOVER` is the parameter schema; :func:`run_recover` the pipeline: load the model
(:mod:`ec.teachers.external`) -> draw and ask the queries (counted against
``max_queries``) -> Step 1, the width search (:func:`ec.reconstruct.find_width`) ->
Expand-and-Cluster with students ``rho`` times that wide -> compare with the model on
fresh evaluation inputs (and with its weights when it is a torch chain of ``Linear``
layers) -> run directory.

Run directory: ``config.json``, ``queries.npz`` (the queries and answers, so that a
resumed run asks nothing again), ``step1.json`` (the probes of the width search),
``students/``, then the result files of ``ec synth`` (``reconstruction.npz``,
``report.json``, ...).
"""

from __future__ import annotations

import json
import math
import re
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np

from ..activations import HIDDEN_ACTIVATIONS
from ..config import BACKEND, BETA, GAMMA, JOBS, N_STUDENTS, OUT, SEED, ConfigError, Param, Schema, parse_angles
from ..finetune import FINETUNE_BUDGET
from ..io import atomic_save_npz, atomic_write_json
from ..metrics import compare, output_error_bits, parameter_error, rmse
from ..mlp import MLPSpec, output_variance
from ..progress import Event
from ..queries import DATASET_NAMES, load_dataset, uniform_inputs
from ..reconstruct import DEEP_GAMMA, ExpandAndCluster, LayerwiseExpandAndCluster, ReconstructionError
from ..reconstruct import Probe, find_width
from ..reconstruct._expansion import PROBE_BUDGET, QUERIES_PER_PARAM, ZERO_LOSS, default_backend
from ..runs import RunDir
from ..runs.rundir import problem_record
from ..teachers.external import ExternalModel, ModelError, from_callable, from_pairs, from_torch, load_model
from ..train import Budget
from .synth import _BUDGET_PARAMS, EXACT_RMSE, SHALLOW_GAMMA, _estimator_options, _retrain_message, _training_text
from .synth import clustering_defaults, write_plots

Array = np.ndarray

# Activations tried when neither --act nor the model tells (the paper's and the common ones).
AUTO_ACTIVATIONS = ("relu", "tanh", "sigmoid", "g", "softplus", "gelu")
AUTO_DEPTHS = (1, 2, 3)
# A recovered model whose weights are known: largest parameter error after matching symmetries.
EXACT_PARAMS = 1e-8
N_TRAIN, N_TEST = 30_000, 10_000
QUERY_KINDS = ("uniform", "gaussian")


def _act_or_auto(value: str) -> str:
    return value if value == "auto" else _hidden(value)


def _hidden(name: str) -> str:
    if name not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}")
    return name


def _depth(value) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    depth = int(value)
    if depth < 1:
        raise ValueError("at least one hidden layer")
    return depth


def _queries_check(cfg: dict) -> str | None:
    q = cfg["queries"]
    if q in QUERY_KINDS or q in DATASET_NAMES or Path(q).is_file():
        return None
    return (f"--queries={q!r} is not allowed; allowed: {', '.join(QUERY_KINDS)}, a dataset "
            f"({', '.join(DATASET_NAMES)}) or a file of inputs (.npy, .npz with X, .csv)")


def _counts_check(cfg: dict) -> str | None:
    total, n_train, n_test = cfg["max_queries"], cfg["n_train"], cfg["n_test"]
    if total is not None and n_train + n_test > total:
        return (f"--n-train={n_train} and --n-test={n_test} ask {n_train + n_test} queries, more than "
                f"--max-queries={total}; lower them or raise --max-queries")
    return None


def _split_counts(cfg: dict) -> dict:
    """``n_train`` / ``n_test`` not given: 30 000 / 10 000, or 80 % / 20 % of ``max_queries``
    when that is smaller."""
    out = dict(cfg)
    total = cfg["max_queries"]
    if out["n_test"] is None:
        out["n_test"] = N_TEST if total is None or total >= N_TRAIN + N_TEST else max(1, total // 5)
    if out["n_train"] is None:
        out["n_train"] = N_TRAIN if total is None else max(0, min(N_TRAIN, total - out["n_test"]))
    return out


RECOVER = Schema(
    "recover",
    (
        Param("act", _act_or_auto, None, "Hidden activation of the model (default: read from a torch module, else "
              "'auto': tried in Step 1 among " + ", ".join(AUTO_ACTIVATIONS) + ").",
              "auto or " + ", ".join(HIDDEN_ACTIVATIONS), type="str", metavar="NAME"),
        Param("hidden_layers", _depth, None, "Hidden layers of the students (default: a torch module's own, else 1; "
              "'auto': Step 1 tries 1, 2, 3).", "an integer >= 1 or auto", type="str", metavar="N|auto"),
        Param("width", int, None, "Skip Step 1: the width to expand from (students rho x this wide).", ">= 1",
              lambda w: w >= 1, metavar="INT"),
        Param("max_width", int, 64, "Step 1 tries widths 1, 2, 4, ... up to this.", ">= 1", lambda w: w >= 1,
              metavar="INT"),
        Param("queries", str, "uniform", "Query inputs: uniform on [-sqrt 3, sqrt 3]^d, gaussian N(0, 1), a dataset "
              "(" + ", ".join(DATASET_NAMES) + ") or a file of inputs (.npy, .npz with X, .csv).",
              "uniform, gaussian, a dataset name or a file", metavar="KIND|DATASET|FILE"),
        Param("max_queries", int, None, "Most teacher evaluations in all: Step 1, training and test queries (the "
              "--n-eval inputs are counted apart).", ">= 2", lambda q: q >= 2, metavar="INT"),
        Param("n_train", int, None, f"Training queries (default {N_TRAIN}, or 80 % of --max-queries).", ">= 1",
              lambda n: n >= 1, metavar="INT"),
        Param("n_test", int, None, f"Held-out test queries (default {N_TEST}, or 20 % of --max-queries).", ">= 1",
              lambda n: n >= 1, metavar="INT"),
        Param("n_eval", int, 100_000, "Fresh evaluation inputs for the output error in bits (uniform and gaussian "
              "queries; counted apart; 0: none).", ">= 0", lambda n: n >= 0, metavar="INT"),
        Param("din", int, None, "Input size, needed when MODEL is a package.module:function.", ">= 1",
              lambda d: d >= 1, metavar="INT"),
        Param("rho", float, 2.0, "Students are rho times the Step-1 width (which is itself at least the model's).",
              ">= 1 and <= 100", lambda r: 1 <= r <= 100, metavar="FACTOR"),
        Param("zero_loss", float, ZERO_LOSS, "Step 1's near-zero loss, relative to the outputs' variance (raise it "
              "for outputs that carry noise, e.g. 1e-10 for float32 answers).", "> 0 and < 1",
              lambda z: 0 < z < 1, metavar="FACTOR"),
        Param("probe_time", float, PROBE_BUDGET.ode_time, "Step 1: seconds of gradient flow and as many of "
              "second-order steps per student.", "> 0", lambda t: t > 0, metavar="SECONDS"),
        replace(N_STUDENTS, default=10, help="Number of students N.", check=lambda n: n >= 2, allowed=">= 2"),
        replace(GAMMA, default=None, help=f"Keep clusters with neurons of at least ceil(gamma*N) students (default "
                f"{SHALLOW_GAMMA:g}; {DEEP_GAMMA:g} for deep students)."),
        replace(BETA, parse=parse_angles, default=None,
                help="Median-angle limit of a cluster, one value or one per hidden layer (radians; 'pi/24' or "
                "'7.5deg' accepted; default pi/24, deep: pi/24 for the first hidden layer, pi/5 above).",
                allowed="0 < beta <= pi, one value or one per hidden layer",
                check=lambda b: all(0 < v <= math.pi for v in np.atleast_1d(b)), metavar="ANGLE[,ANGLE...]"),
        SEED,
        replace(BACKEND, default=None, help="Trainer of the students (default: gn for one hidden layer, flow for "
                "deeper students)."),
        JOBS,
        OUT,
        *_BUDGET_PARAMS,
        Param("finetune_time", float, FINETUNE_BUDGET.optim_time, "Seconds of second-order fine-tuning of the "
              "reconstructed network.", ">= 0", lambda v: v >= 0, metavar="SECONDS"),
        Param("allow_pickle", bool, False, "Load a whole pickled torch module (torch.save(model)): this runs code "
              "from the file, so only for files you trust. TorchScript and state dicts need no such trust.",
              flag=True),
        Param("plots", bool, True, "Write the PNG figures.", flag=True),
    ),
    cross_checks=(_queries_check, _counts_check),
    derive=_split_counts,
)

# Parameters that change the queries: they must match for a run directory to be resumed.
QUERY_KEYS = ("model_identity", "queries", "max_queries", "n_train", "n_test", "seed")


def default_out(model: ExternalModel) -> str:
    """``runs/recover-<file stem or function name>-<first 8 characters of the model's hash>``."""
    name = model.source if model.kind == "callable" else Path(model.source).stem
    name = re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"
    return f"runs/recover-{name}-{model.identity[:8]}"


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` returns: the recovered network, its report and run directory.

    Attributes
    ----------
    spec : MLPSpec
        Layer sizes found and the activation.
    params : ndarray of float64
        Flat parameters (:mod:`ec.mlp` layout; ``spec.unpack(params)`` gives ``[(W, b), ...]``).
    report : dict
        The ``report.json`` of the run (status, queries, Step 1, summary).
    path : Path
        The run directory.
    """

    spec: MLPSpec
    params: Array
    report: dict
    path: Path

    def predict(self, X: Array) -> Array:
        """The recovered network's outputs, shape (n, d_out)."""
        return self.spec.forward(self.params, np.asarray(X, dtype=np.float64))


def recover(model, out: str | Path | None = None, progress: Callable | None = None, **params) -> Recovery:
    """Recover the width and weights of ``model`` from its answers to queries.

    Parameters
    ----------
    model : torch.nn.Module, callable, (X, y) tuple, or str
        A torch module; a function mapping (n, d) float64 arrays to (n, k) (give ``din``);
        arrays of query pairs; or a path / ``package.module:function`` as on the command
        line (:func:`ec.teachers.external.load_model`).
    out : path, optional
        Run directory (default ``runs/recover-<name>-<hash>``); rerunning resumes it.
    progress : callable, optional
        ``progress(event, **info)`` (see :class:`ec.reconstruct.ExpandAndCluster`).
    **params
        :data:`RECOVER` parameters by Python name (``act``, ``hidden_layers``, ``width``,
        ``max_queries``, ``queries``, ``n_students``, ``jobs``, ...). With ``jobs`` other
        than 1 the students are trained in spawned processes: call this under
        ``if __name__ == "__main__":`` in a script.

    Returns
    -------
    Recovery

    Raises
    ------
    ReconstructionError
        Step 1 found no width or the clustering kept nothing; the message says what to change.
    ModelError, ConfigError
        A model that cannot be loaded or answers wrongly; a bad parameter.
    """
    report = recover_model(model, params, out, progress)
    spec, theta = RunDir.load_reconstruction(Path(report["result_dir"]))
    return Recovery(spec, theta, report, Path(report["result_dir"]))


def recover_model(model, params: dict | None = None, out: str | Path | None = None,
                  progress: Callable | None = None) -> dict:
    """Load ``model`` (a path, ``module:function``, a torch module, a callable or ``(X, y)``)
    and run :func:`run_recover`."""
    params = RECOVER.resolve(params or {})
    if isinstance(model, ExternalModel):
        pass
    elif isinstance(model, (str, Path)):
        model = load_model(str(model), _given_act(params), params["allow_pickle"], params["din"])
    elif isinstance(model, tuple) and len(model) == 2:
        model = from_pairs(*model)
    elif hasattr(model, "state_dict") and hasattr(model, "modules"):
        model = from_torch(model)
    elif callable(model):
        if params["din"] is None:
            raise ConfigError("a Python function as the model needs its input size: din=...")
        model = from_callable(model, params["din"], getattr(model, "__qualname__", "callable"))
    else:
        raise ConfigError(f"model={type(model).__name__}: give a torch module, a function of (n, d) arrays, "
                          "(X, y) arrays, or a path")
    return run_recover(model, params, out, progress)


def _given_act(params: dict) -> str | None:
    return None if params["act"] in (None, "auto") else params["act"]


def _activations(params: dict, model: ExternalModel) -> tuple[str, ...]:
    act = params["act"]
    if act == "auto":
        return AUTO_ACTIVATIONS
    if act is not None:
        if model.activation is not None and model.activation != act:
            raise ConfigError(f"--act={act}: the model {model.source!r} uses {model.activation}; drop --act "
                              "or give that one")
        return (act,)
    return (model.activation,) if model.activation is not None else AUTO_ACTIVATIONS


def _depths(params: dict, model: ExternalModel) -> tuple[int, ...]:
    depth = params["hidden_layers"]
    if depth == "auto":
        return AUTO_DEPTHS
    if depth is not None:
        return (depth,)
    return (len(model.spec.hidden_sizes),) if model.spec is not None else (1,)


def run_recover(model: ExternalModel, params: dict, out: str | Path | None = None,
                progress: Callable | None = None) -> dict:
    """Queries -> Step 1 -> Expand-and-Cluster -> comparison -> run directory.

    Returns
    -------
    dict
        The report written to ``report.json``: ``status`` (``"recovered"``: test RMSE at most
        1e-10 of the outputs' standard deviation and, when the model's weights are known, its
        widths and parameters within :data:`EXACT_PARAMS`; ``"inexact"``; ``"wrong-size"``;
        ``"failed"``), ``queries`` (counts), ``step1``, ``summary``, ``neurons``.

    Raises
    ------
    ReconstructionError
        Step 1 found no width, or the clustering kept nothing (the report is written first).
    ModelError, ConfigError
        Bad model or parameters, before anything is written.
    """
    params = RECOVER.resolve(params)
    acts, depths = _activations(params, model), _depths(params, model)
    if params["width"] is not None and len(acts) * len(depths) > 1:
        raise ConfigError(f"--width={params['width']} skips Step 1, which is what chooses the activation and depth: "
                          "give --act and --hidden-layers too")
    run = RunDir(Path(out or params["out"] or default_out(model)))
    config = {**params, "out": str(run.path), "model": model.source, "model_identity": model.identity}
    resumed = run.init(config, QUERY_KEYS, write=False)
    t0 = time.perf_counter()
    data = _queries(model, params, run, progress)
    run.write_config(config)
    X, y, X_test, y_test = data["X_train"], data["y_train"], data["X_test"], data["y_test"]
    search = _step1(X, y, acts, depths, params, run, progress)
    report = {
        "command": "recover",
        "result_dir": str(run.path),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "model": {"source": model.source, "kind": model.kind, "d_in": int(X.shape[1]), "d_out": int(y.shape[1]),
                  "layer_sizes": None if model.spec is None else list(model.spec.layer_sizes),
                  "activation": model.activation},
        "queries": {"train": len(X), "test": len(X_test), "total": int(data["count"]),
                    "max": params["max_queries"], "asked_now": model.queries},
        "step1": search,
    }
    if search["width"] is None:
        _fail(run, report, _no_width_message(search, params))
    act, depth = search["activation"], search["hidden_layers"]
    widths = (int(math.ceil(params["rho"] * search["width"])),) * depth
    est = _estimator(params, act, widths, progress, run.path / "retrained")
    spec = est.student_spec(X.shape[1], y.shape[1])
    run.check_students(problem_record(
        data=(f"{len(X)} {params['queries']} queries of {model.source}", (X, y)),
        training=(_training_text(est.backend, est.budget or Budget()) + f", {act}, width {widths}",
                  ({"backend": est.backend, "budget": asdict(est.budget or Budget()), "spec": list(spec.layer_sizes),
                    "act": act},)),
    ), trusted=resumed)
    done = run.load_students(est.n_students, spec, est.student_seeds(), on_skip=_retrain_message(progress))
    students = est.train_students(X, y, done=done, on_result=run.save_student)
    losses = [float(s.loss) for s in students]
    report["students"] = {"n": len(students), "width": list(widths), "activation": act, "losses": losses,
                          "failed": sum(bool(s.failed) for s in students), "seconds": [s.seconds for s in students]}
    try:
        est.fit(X, y, students=students)
    except ReconstructionError as exc:
        _fail(run, report, str(exc))
    report.update(_evaluate(est, model, params, data, progress))
    report["reconstruction"] = est.report_
    report["seconds"] = {"total": time.perf_counter() - t0}
    RunDir.save_result(run.path, est.spec_, est.params_, est.clusters_[0], report, report["neurons"])
    if params["plots"]:
        _plots(est, report, run.path / "plots")
    return report


def _plots(est: ExpandAndCluster, report: dict, folder: Path) -> None:
    """The figures of ``ec synth``; the alignment plot only where the model's weights are known."""
    from ..plots.synth import plot_dendrogram, plot_similarity

    rows = [r for r in report["neurons"] if r.get("layer", 0) == 0]
    if rows:
        summary = report["summary"]
        write_plots(est.clusters_[0], rows, {**summary, "excess": summary["excess"][0],
                                             "m_hat": summary["m_hat"][0], "r": summary["r"][0]}, folder)
    else:
        plot_similarity(est.clusters_[0], folder / "similarity.png")
        plot_dendrogram(est.clusters_[0], folder / "dendrogram.png")


def _fail(run: RunDir, report: dict, message: str) -> NoReturn:
    """Write the failed report (no stale result files beside it) and raise."""
    report.update(status="failed", error=message)
    RunDir.clear_result(run.path)
    atomic_write_json(run.path / "report.json", report)
    raise ReconstructionError(f"{message} (report: {run.path / 'report.json'})")


def _no_width_message(search: dict, params: dict) -> str:
    best = min(search["probes"], key=lambda p: Probe(**p).best, default=None)
    where = (f"; the best was {Probe(**best).best:.2e} at width {best['width']} ({best['activation']})"
             if best else "")
    if search["stop"] == "queries":
        return (f"Step 1: no student reached near-zero loss (<= {search['tolerance']:.1e}) before the next width had "
                f"more parameters than {QUERIES_PER_PARAM} per training query allow{where}; raise --max-queries "
                "or --n-train")
    return (f"Step 1: no student up to width {params['max_width']} reached near-zero loss (<= "
            f"{search['tolerance']:.1e}){where}; raise --max-width or --probe-time, try another --act or "
            "--hidden-layers, or --zero-loss for noisy answers")


def _estimator(params: dict, act: str, widths: tuple[int, ...], progress, retrain_dir: Path) -> ExpandAndCluster:
    """The estimator of ``ec synth`` for students of ``widths`` (its clustering defaults by depth)."""
    defaults = clustering_defaults(len(widths))
    merged = {**params, **{k: v for k, v in defaults.items() if params.get(k) is None}, "act": act,
              "backend": params["backend"] or default_backend(len(widths)), "student_seed": params["seed"]}
    options = _estimator_options(merged, progress, retrain_dir)
    if len(widths) > 1:
        return LayerwiseExpandAndCluster(widths, **options)
    return ExpandAndCluster(widths, **options)


# -- queries ------------------------------------------------------------------------------


def _queries(model: ExternalModel, params: dict, run: RunDir, progress) -> dict:
    """The training and test queries with the model's answers: from ``queries.npz`` when a
    resumed run saved them, else drawn and asked (counted), then saved."""
    path = run.path / "queries.npz"
    key = json.dumps({k: params.get(k) for k in QUERY_KEYS if k != "model_identity"} | {"model": model.identity},
                     sort_keys=True)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: np.array(f[k]) for k in ("X_train", "y_train", "X_test", "y_test", "count")}
                saved_key = str(f["key"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            saved_key = None  # unreadable: asked again and rewritten
        if saved_key == key:
            if progress is not None:
                progress(Event.MESSAGE, text=f"queries: the {int(data['count'])} saved in {path} (none asked again)")
            return data
    n_train, n_test = params["n_train"], params["n_test"]
    model.max_queries = params["max_queries"]
    if model.pairs is not None:
        data = _split_pairs(model, n_train, n_test, params["seed"])
    else:
        X_train, X_test = _inputs(params["queries"], model.d_in, n_train, n_test, params["seed"])
        data = {"X_train": X_train, "y_train": model.query(X_train), "X_test": X_test, "y_test": model.query(X_test),
                "count": np.array(model.queries)}
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, key=np.array(key), **data)
    if progress is not None:
        progress(Event.MESSAGE, text=f"queries: {len(data['X_train'])} for training, {len(data['X_test'])} held out "
                                     f"({params['queries'] if model.pairs is None else model.source})")
    return data


def _split_pairs(model: ExternalModel, n_train: int, n_test: int, seed: int) -> dict:
    X, y = model.pairs
    limit = model.max_queries
    if n_train + n_test > len(X):
        n_test = min(n_test, max(1, len(X) // 5))
        n_train = min(n_train, len(X) - n_test)
    if limit is not None and n_train + n_test > limit:
        raise ModelError(f"{model.source!r}: {n_train + n_test} pairs used, more than --max-queries={limit}")
    order = np.random.default_rng(seed).permutation(len(X))
    train, test = order[:n_train], order[n_train:n_train + n_test]
    return {"X_train": X[train], "y_train": y[train], "X_test": X[test], "y_test": y[test],
            "count": np.array(n_train + n_test)}


def _inputs(kind: str, d: int, n_train: int, n_test: int, seed: int) -> tuple[Array, Array]:
    if kind in QUERY_KINDS:
        return _draw(kind, n_train, d, (seed, 1)), _draw(kind, n_test, d, (seed, 2))
    if kind in DATASET_NAMES:
        ds = load_dataset(kind, n_train=n_train, n_test=n_test, seed=seed)
        X_train, X_test = ds.X_train, ds.X_test
    else:
        X = _read_inputs(Path(kind))
        if len(X) < n_train + n_test:
            raise ConfigError(f"--queries={kind!r} holds {len(X)} inputs, fewer than --n-train + --n-test = "
                              f"{n_train + n_test}")
        order = np.random.default_rng(seed).permutation(len(X))
        X_train, X_test = X[order[:n_train]], X[order[n_train:n_train + n_test]]
    if X_train.shape[1] != d:
        raise ConfigError(f"--queries={kind!r} gives inputs of size {X_train.shape[1]}; the model takes {d}")
    if len(X_train) < n_train or len(X_test) < n_test:
        raise ConfigError(f"--queries={kind!r} has {len(X_train)} training and {len(X_test)} test inputs, fewer "
                          f"than --n-train={n_train} / --n-test={n_test}")
    return X_train, X_test


def _draw(kind: str, n: int, d: int, seed) -> Array:
    if kind == "uniform":
        return uniform_inputs(n, d, seed)
    return np.random.default_rng(seed).standard_normal((n, d))


def _read_inputs(path: Path) -> Array:
    try:
        if path.suffix.lower() == ".csv":
            import pandas as pd

            X = pd.read_csv(path).to_numpy(np.float64)
        else:
            with np.load(path, allow_pickle=False) as f:
                X = np.array(f["X"] if isinstance(f, np.lib.npyio.NpzFile) else f, dtype=np.float64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"--queries={str(path)!r} is not a readable file of inputs (.npy, .npz with X, .csv): "
                          f"{type(exc).__name__}: {exc}") from None
    if X.ndim != 2 or not np.isfinite(X).all():
        raise ConfigError(f"--queries={str(path)!r}: inputs must be a finite (n, d) array, not shape {X.shape}")
    return X


# -- step 1 --------------------------------------------------------------------------------


def _step1(X, y, acts, depths, params: dict, run: RunDir, progress) -> dict:
    """The width search, resumed from ``step1.json``; with ``--width`` given, that width."""
    if params["width"] is not None:
        return {"width": params["width"], "hidden_layers": depths[0], "activation": acts[0], "tolerance": None,
                "probes": [], "stop": "given"}
    path = run.path / "step1.json"
    key = _data_key(X, y, params)
    done: list[Probe] = []
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                done = [Probe(**{**p, "losses": tuple(p["losses"]), "seconds": tuple(p["seconds"])})
                        for p in saved["probes"]]
        except (OSError, ValueError, KeyError, TypeError):
            done = []  # unreadable: probed again
    probes = list(done)

    def save(probe: Probe) -> None:
        probes.append(probe)
        atomic_write_json(path, {"key": key, "probes": [asdict(p) for p in probes]})

    if progress is not None:
        progress(Event.STAGE, name="step 1: width search")
    budget = replace(PROBE_BUDGET, ode_time=params["probe_time"], optim_time=params["probe_time"])
    search = find_width(X, y, acts, depths, params["max_width"], budget=budget, zero_loss=params["zero_loss"],
                        seed=params["seed"], backend=params["backend"], n_jobs=params["jobs"] or None, done=done,
                        on_probe=save, progress=progress)
    return search.to_dict()


def _data_key(X, y, params: dict) -> str:
    from ..train.cached import run_key

    return run_key(X, y, max_width=params["max_width"], zero_loss=params["zero_loss"],
                   probe_time=params["probe_time"], backend=params["backend"], seed=params["seed"])


# -- evaluation ----------------------------------------------------------------------------


def _evaluate(est: ExpandAndCluster, model: ExternalModel, params: dict, data: dict, progress) -> dict:
    """Test RMSE, output error in bits on fresh inputs, and, with the model's weights,
    widths, neuron alignment and parameter error; ``status``."""
    if progress is not None:
        progress(Event.STAGE, name="evaluation")
    X_test, y_test = data["X_test"], data["y_test"]
    scale = math.sqrt(output_variance(data["y_train"])) or 1.0
    summary = {"layer_sizes": list(est.spec_.layer_sizes), "m_hat": list(est.spec_.hidden_sizes),
               "activation": est.spec_.activation,
               "test_rmse": rmse(est.spec_.forward(est.params_, X_test), y_test)}
    summary["relative_test_rmse"] = summary["test_rmse"] / scale
    n_eval = params["n_eval"] if params["queries"] in QUERY_KINDS and model.function is not None else 0
    if n_eval:
        X_eval = _draw(params["queries"], n_eval, X_test.shape[1], (params["seed"], 3))
        y_eval = model.evaluate(X_eval)
    else:
        X_eval, y_eval = X_test, y_test
    summary["n_eval"] = len(X_eval)
    summary["output_bits"] = output_error_bits(est.spec_.forward(est.params_, X_eval), y_eval)
    rows: list[dict] = []
    exact = summary["relative_test_rmse"] <= EXACT_RMSE
    status = "recovered" if exact else "inexact"
    if model.spec is not None:
        summary["r"] = list(model.spec.hidden_sizes)
        summary["param_error"] = parameter_error(est.spec_, est.params_, model.spec, model.params)
        if est.spec_.n_layers == model.spec.n_layers:
            compared, rows = compare(est.spec_, est.params_, model.spec, model.params)
            summary["excess"] = np.atleast_1d(compared["excess"]).tolist()
            summary["missing"] = np.atleast_1d(compared["missing"]).tolist()
        if summary["m_hat"] != summary["r"]:
            status = "wrong-size"
        elif not (exact and summary["param_error"] <= EXACT_PARAMS):
            status = "inexact"
    return {"status": status, "summary": summary, "neurons": rows}
