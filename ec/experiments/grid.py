"""The paper's benchmark grid of synthetic teachers (section 6.1, Fig. 4B/C and 5B).

For every input dimension ``d`` and teacher width ``r`` there are ``n_teachers`` A.4
teachers ``d-r-1``; each is learned by students of width ``m = rho * r`` for every
``rho``, and Expand-and-Cluster reconstructs it from its students at each ``rho`` in
``reconstruct_rho``. The work is cut into units that :func:`ec.runs.executors.execute`
runs in parallel and records in the run directory's store:

- ``student``: train one student ``(d, r, teacher, rho, student seed)``;
- ``reconstruction``: Expand-and-Cluster from the stored students of ``(d, r, teacher, rho)``
  (no retraining: they are passed to ``ExpandAndCluster.fit(students=...)``).

A unit's key is the hash of everything its result depends on, so changing one parameter
recomputes only the units it affects: ``gamma`` only reconstructions, a training budget the
students and then their reconstructions, ``n_students`` only the new students and the
reconstructions; ``jobs`` and ``scheduler`` nothing.

Seeds (all explicit):

- teacher ``index`` of cell ``(d, r)``: ``teacher_seed = 1_000_000 * seed + 10_000 * d +
  100 * r + index`` (``d, r, index < 100``), passed to ``make_teacher((d, r, 1), ...)``; the
  training and test inputs come from the same seed (``Teacher.dataset``), so
  ``ec synth --din d --r r --seed <teacher_seed>`` sees the same teacher and data;
- student ``k`` (``k = 0 .. N-1``) starts from ``MLPSpec((d, rho * r, 1)).init_params(k)``;
- the reconstruction of a teacher uses ``teacher_seed`` as its own seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ACTIVATION, BACKEND, BETA, GAMMA, JOBS, OUT, SEED, ConfigError, Param, Schema, parse_int_list
from ..io import atomic_write_json, atomic_write_text
from ..provenance import environment
from ..runs.executors import Unit, UnitOutput, check_scheduler
from ..runs.store import ResultStore

UNIT_VERSION = 2  # bump when a unit function's meaning changes: every key changes with it
CONFIG_FILE = "grid-config.json"
REPORT_DIR = "report"
BUNDLED = {"full": "grid.toml", "quick": "grid-quick.toml"}


def _ints_between(lo: int, hi: int):
    """A check: a non-empty list of distinct ints in ``lo..hi``."""
    return lambda values: len(values) > 0 and len(set(values)) == len(values) and all(lo <= v <= hi for v in values)


def _reconstruct_rho_in_rho(cfg: dict) -> str | None:
    bad = [p for p in cfg["reconstruct_rho"] if p not in cfg["rho"]]
    if bad:
        return f"--reconstruct-rho={bad}: every value must also be in --rho={list(cfg['rho'])}"
    return None


def _positive_int(n) -> bool:
    return n >= 1


GRID = Schema(
    "grid",
    (
        Param("din", parse_int_list, (2, 4, 8, 16, 32), "Input dimensions d.", "distinct ints in 1..99", _ints_between(1, 99),
              aliases=("d_in",)),
        Param("r", parse_int_list, (2, 4, 8), "Teacher hidden widths r.", "distinct ints in 1..99", _ints_between(1, 99)),
        Param("n_teachers", int, 10, "Teachers per (d, r) cell.", "1..100", lambda n: 1 <= n <= 100),
        Param(
            "rho",
            parse_int_list,
            (1, 2, 4, 8),
            "Overparameterisation factors: student width m = rho * r.",
            "distinct ints >= 1",
            _ints_between(1, 10_000),
        ),
        Param(
            "reconstruct_rho",
            parse_int_list,
            (4,),
            "Factors at which Expand-and-Cluster reconstructs each teacher (a subset of --rho).",
            "distinct ints, each also in --rho",
            _ints_between(1, 10_000),
        ),
        Param("n_students", int, 20, "Students per teacher and rho (N).", ">= 1", _positive_int),
        Param("n_students_wide", int, 10, "Students per teacher for wide teachers (r >= --wide-from-r).", ">= 1", _positive_int),
        Param("wide_from_r", int, 8, "Teachers this wide get --n-students-wide students.", ">= 1", _positive_int),
        SEED,
        ACTIVATION,
        BACKEND,
        Param("n_train", int, 30_000, "Training queries per teacher.", ">= 1", _positive_int),
        Param("n_test", int, 10_000, "Held-out queries per teacher (test RMSE).", ">= 1", _positive_int),
        Param("ode_steps", int, 5000, "Per student: gradient-flow ODE solver steps.", ">= 0", lambda n: n >= 0),
        Param("ode_time", float, 3600.0, "Per student: gradient-flow seconds (cap).", "> 0", lambda t: t > 0),
        Param("optim_steps", int, 250, "Per student, rho >= 2: second-order steps.", ">= 0", lambda n: n >= 0),
        Param("optim_steps_rho1", int, 5000, "Per student, rho = 1: second-order steps.", ">= 0", lambda n: n >= 0),
        Param("optim_time", float, 3600.0, "Per student: second-order seconds (cap).", "> 0", lambda t: t > 0),
        Param(
            "optim_method",
            str,
            "auto",
            "Second-order method of the flow backend.",
            "auto, newton, lm, bfgs, lbfgs",
            choices=("auto", "newton", "lm", "bfgs", "lbfgs"),
        ),
        Param("min_loss", float, 1e-31, "Stop a student at this loss.", ">= 0", lambda x: x >= 0, cli=False),
        Param("min_grad", float, 1e-16, "Stop a student at this gradient inf-norm.", ">= 0", lambda x: x >= 0, cli=False),
        GAMMA,
        BETA,
        Param("finetune_ode_steps", int, 500, "Reconstruction fine-tuning: gradient-flow steps.", ">= 0", lambda n: n >= 0),
        Param("finetune_steps", int, 2000, "Reconstruction fine-tuning: second-order steps.", ">= 0", lambda n: n >= 0),
        Param("finetune_time", float, 900.0, "Reconstruction fine-tuning: seconds per phase (cap).", "> 0", lambda t: t > 0),
        Param("zero_loss", float, 1e-14, "Report: a student 'reaches zero loss' below this loss.", "> 0", lambda x: x > 0),
        Param(
            "recovered_rmse",
            float,
            1e-14,
            "Report: a teacher is recovered at test RMSE <= this (and the right width).",
            "> 0",
            lambda x: x > 0,
        ),
        JOBS,
        Param("scheduler", check_scheduler, "local", "Where units run.", "local, dask, tcp://host:port", type="str"),
        OUT,
    ),
    cross_checks=(_reconstruct_rho_in_rho,),
)

# -- configuration ---------------------------------------------------------------------------
def bundled_config(name: str) -> Path:
    """The path of a config shipped with the package (``quick``, ``full``)."""
    if name not in BUNDLED:
        raise ConfigError(f"unknown grid config {name!r}; allowed: a TOML file path or one of {', '.join(BUNDLED)}")
    with resources.as_file(resources.files("ec") / "configs" / BUNDLED[name]) as path:
        return Path(path)


def config_source(name_or_path: str | Path) -> Path:
    """A TOML path as given, or a bundled config's path for ``quick`` / ``full``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in BUNDLED:
        return bundled_config(str(name_or_path))
    raise ConfigError(f"--config={str(name_or_path)!r}: no such file; allowed: a TOML file path or one of {', '.join(BUNDLED)}")


def resolve_config(config: str | Path | dict | None = None, cli_values: dict | None = None) -> dict:
    """Defaults < config (name, path or dict) < CLI values, validated by :data:`GRID`."""
    source = config if config is None or isinstance(config, dict) else config_source(config)
    return GRID.resolve(cli_values, source)


def save_config(out: str | Path, cfg: dict) -> Path:
    return atomic_write_json(Path(out) / CONFIG_FILE, cfg)


def load_config(out: str | Path) -> dict:
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"--out={str(out)!r} holds no grid run (no {CONFIG_FILE}); start one with 'ec grid run'")
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{str(path)!r} is corrupt ({type(exc).__name__}: {exc}); it records the grid's parameters: "
                          "rerun 'ec grid run' with the grid's --config and options to write it again") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{str(path)!r} is corrupt (not a JSON object); rerun 'ec grid run' with the grid's "
                          "--config and options to write it again")
    return resolve_config(saved)


# -- seeds and sizes -------------------------------------------------------------------------
def teacher_seed(seed: int, d: int, r: int, index: int) -> int:
    """The seed of teacher ``index`` of cell ``(d, r)`` (see the module docstring)."""
    if not (0 <= d < 100 and 0 <= r < 100 and 0 <= index < 100):
        raise ValueError(f"(d, r, index)=({d}, {r}, {index}): each must be in 0..99 for the seed scheme")
    return 1_000_000 * seed + 10_000 * d + 100 * r + index


def n_students_for(cfg: dict, r: int) -> int:
    return cfg["n_students_wide"] if r >= cfg["wide_from_r"] else cfg["n_students"]


def student_budget(cfg: dict, rho: int) -> dict:
    """The :class:`~ec.train.base.Budget` fields of a student at ``rho`` (paper A.6.1:
    more second-order steps without overparameterisation)."""
    return {
        "ode_steps": cfg["ode_steps"],
        "ode_time": cfg["ode_time"],
        "optim_steps": cfg["optim_steps_rho1"] if rho == 1 else cfg["optim_steps"],
        "optim_time": cfg["optim_time"],
        "min_loss": cfg["min_loss"],
        "min_grad": cfg["min_grad"],
    }


def cells(cfg: dict) -> list[tuple[int, int, int]]:
    """``(d, r, teacher index)`` of every teacher, in grid order."""
    return [(d, r, t) for d in cfg["din"] for r in cfg["r"] for t in range(cfg["n_teachers"])]


# -- units -----------------------------------------------------------------------------------
def _teacher_config(cfg: dict, d: int, r: int, t: int) -> dict:
    return {
        "version": UNIT_VERSION,
        "d": d,
        "r": r,
        "teacher_seed": teacher_seed(cfg["seed"], d, r, t),
        "act": cfg["act"],
        "n_train": cfg["n_train"],
        "backend": cfg["backend"],
    }


def grid_units(cfg: dict) -> list[Unit]:
    """Every unit of the grid: per teacher, its students (rho by rho), then its
    reconstructions (each depends on the students it clusters)."""
    units = []
    for d, r, t in cells(cfg):
        base = _teacher_config(cfg, d, r, t)
        for rho in cfg["rho"]:
            budget = student_budget(cfg, rho)
            label = {"d": d, "r": r, "teacher": t, "teacher_seed": base["teacher_seed"], "rho": rho}
            students = [
                Unit(
                    "student",
                    train_student_unit,
                    {**base, "m": rho * r, "seed": k, "budget": budget, "optim_method": cfg["optim_method"]},
                    {**label, "student": k},
                    seed=k,
                )
                for k in range(n_students_for(cfg, r))
            ]
            units += students
            if rho in cfg["reconstruct_rho"]:
                rcfg = {
                    **base,
                    "m": rho * r,
                    "n_test": cfg["n_test"],
                    "gamma": cfg["gamma"],
                    "beta": cfg["beta"],
                    "finetune_budget": {
                        **budget,
                        "ode_steps": cfg["finetune_ode_steps"],
                        "ode_time": cfg["finetune_time"],
                        "optim_steps": cfg["finetune_steps"],
                        "optim_time": cfg["finetune_time"],
                    },
                }
                units.append(
                    Unit(
                        "reconstruction",
                        reconstruct_unit,
                        rcfg,
                        label,
                        seed=base["teacher_seed"],
                        deps=tuple(u.key for u in students),
                    )
                )
    return units


@lru_cache(maxsize=2)
def _teacher_and_data(d: int, r: int, seed: int, act: str, n_train: int, n_test: int):
    """Teacher and queries; cached because a worker trains many students of one teacher."""
    from ..teachers import make_teacher

    teacher = make_teacher((d, r, 1), seed, act)
    return teacher, teacher.dataset(n_train, n_test)


def train_student_unit(config: dict, inputs: dict) -> UnitOutput:
    """Unit function: train one student from its seeded Glorot initialisation."""
    from ..mlp import MLPSpec
    from ..train import Budget, get_backend

    _, data = _teacher_and_data(config["d"], config["r"], config["teacher_seed"], config["act"], config["n_train"], 1)
    spec = MLPSpec((config["d"], config["m"], 1), config["act"])
    trainer = get_backend(config["backend"], **_backend_options(config))
    res = trainer.fit(spec, data.X_train, data.y_train, spec.init_params(config["seed"]), Budget(**config["budget"]))
    if not (np.all(np.isfinite(res.params)) and np.isfinite(res.loss)):
        raise FloatingPointError(f"student diverged: loss={res.loss}")
    res = replace(res, seed=config["seed"], backend=config["backend"])
    return UnitOutput(
        {
            "loss": res.loss,
            "grad_norm": res.grad_norm,
            "stop_reason": res.stop_reason,
            "train_seconds": res.seconds,
            "phases": [asdict(p) for p in res.phases],
        },
        res.to_arrays(),
    )


def _backend_options(config: dict) -> dict:
    if config["backend"] == "flow" and config.get("optim_method"):
        return {"optim_method": config["optim_method"]}
    return {}


def reconstruct_unit(config: dict, inputs: dict) -> UnitOutput:
    """Unit function: Expand-and-Cluster from the stored students of one teacher and rho.

    A reconstruction that finds no cluster is a result (nothing recovered: ``m_hat = 0``),
    not a failure of the unit.
    """
    from ..metrics import compare_networks
    from ..reconstruct import ExpandAndCluster, ReconstructionError
    from ..train import Budget, TrainResult

    teacher, data = _teacher_and_data(
        config["d"], config["r"], config["teacher_seed"], config["act"], config["n_train"], config["n_test"]
    )
    students = [TrainResult.from_arrays(arrays) for _, arrays in inputs.values()]
    est = ExpandAndCluster(
        student_hidden_sizes=(config["m"],),
        n_students=max(2, len(students)),
        gamma=config["gamma"],
        beta=config["beta"],
        activation=config["act"],
        backend=config["backend"],
        finetune_budget=Budget(**config["finetune_budget"]),
        seed=config["teacher_seed"],
        n_jobs=1,
        backend_options=_backend_options(config),
    )
    base = {"n_students_used": len(students), "students_best_loss": min((s.loss for s in students), default=math.inf)}
    try:
        est.fit(data.X_train, data.y_train, students=students)
    except ReconstructionError as exc:
        return UnitOutput({**base, "m_hat": 0, "excess": 0, "missing": config["r"], "test_rmse": math.inf, "note": str(exc)})
    summary, _ = compare_networks(est.spec_, est.params_, teacher.spec, teacher.params, data.X_test, data.y_test)
    result = {
        **base,
        **summary,
        "train_loss": est.report_["train_loss"]["finetuned"],
        # clusters a student or two short of gamma*N: a failure the noise of training decided
        "near_miss_clusters": len(est.report_["layers"][0]["near_misses"]),
        "stage_seconds": est.report_["seconds"],
    }
    return UnitOutput(result, {"layer_sizes": np.asarray(est.layer_sizes_, dtype=np.int64), "params": est.params_})


# -- tables ----------------------------------------------------------------------------------
def _frame(store: ResultStore, units: list[Unit], kind: str) -> pd.DataFrame:
    rows = []
    for u in units:
        if u.kind != kind:
            continue
        rec = store.valid(u.key)
        row = {**u.label, "key": u.key, "status": "pending" if rec is None else rec.status}
        if rec is not None:
            row.update({k: v for k, v in rec.result.items() if not isinstance(v, (dict, list))})
            row["seconds"] = rec.seconds
        rows.append(row)
    return pd.DataFrame(rows)


def students_frame(store: ResultStore, cfg: dict) -> pd.DataFrame:
    """One row per student of the grid: d, r, teacher, rho, student, status, loss, ..."""
    return _frame(store, grid_units(cfg), "student")


def reconstructions_frame(store: ResultStore, cfg: dict) -> pd.DataFrame:
    """One row per reconstruction: d, r, teacher, rho, status, m_hat, test_rmse, ..."""
    return _frame(store, grid_units(cfg), "reconstruction")


def summary_table(students: pd.DataFrame, recon: pd.DataFrame, zero_loss: float, recovered_rmse: float) -> pd.DataFrame:
    """The per-``(d, r, rho)`` table of the report.

    Columns: ``teachers``, ``students_done``, ``students_failed``, ``frac_zero_loss`` (among
    finished students, loss < ``zero_loss``), ``student_s_median``; where reconstructed:
    ``reconstructed``, ``recovered`` (test RMSE <= ``recovered_rmse`` and m̂ = r),
    ``recovered_rmse_only`` (RMSE criterion alone), ``m_hat_over_r`` (mean),
    ``excess_neurons`` (total), ``missing_neurons`` (total), ``recon_s_median``.
    """
    keys = ["d", "r", "rho"]
    done = students[students["status"] == "done"]
    table = students.groupby(keys).agg(teachers=("teacher", "nunique")).join(
        [
            done.groupby(keys).agg(
                students_done=("loss", "size"),
                frac_zero_loss=("loss", lambda s: float((s < zero_loss).mean())),
                student_s_median=("seconds", "median"),
            ),
            students[students["status"] == "failed"].groupby(keys).agg(students_failed=("status", "size")),
        ]
    )
    if len(recon):
        ok = recon[recon["status"] == "done"].copy()
        if len(ok):
            ok["hit_rmse"] = ok["test_rmse"] <= recovered_rmse
            ok["hit"] = ok["hit_rmse"] & (ok["m_hat"] == ok["r"])
            ok["m_hat_over_r"] = ok["m_hat"] / ok["r"]
            table = table.join(
                ok.groupby(keys).agg(
                    reconstructed=("hit", "size"),
                    recovered=("hit", "sum"),
                    recovered_rmse_only=("hit_rmse", "sum"),
                    m_hat_over_r=("m_hat_over_r", "mean"),
                    excess_neurons=("excess", "sum"),
                    missing_neurons=("missing", "sum"),
                    recon_s_median=("seconds", "median"),
                )
            )
    counts = [c for c in ("students_done", "students_failed", "reconstructed", "recovered", "recovered_rmse_only") if c in table]
    table[counts] = table[counts].fillna(0).astype(int)
    return table.reset_index()


def grid_status(store: ResultStore, cfg: dict) -> pd.DataFrame:
    """Units per kind: total, done, failed, pending (not done or corrupt), computed > once."""
    rows = []
    for kind in ("student", "reconstruction"):
        units = [u for u in grid_units(cfg) if u.kind == kind]
        recs = [store.valid(u.key) for u in units]
        rows.append(
            {
                "kind": kind,
                "total": len(units),
                "done": sum(r is not None and r.done for r in recs),
                "failed": sum(r is not None and not r.done for r in recs),
                "pending": sum(r is None for r in recs),
                "computed_more_than_once": sum(r is not None and r.n_computes > 1 for r in recs),
                "unit_seconds": float(sum(r.seconds or 0.0 for r in recs if r is not None)),
            }
        )
    return pd.DataFrame(rows)


def write_report(out: str | Path, cfg: dict | None = None) -> dict[str, Path]:
    """Write the CSV tables and the Fig. 4B/C and 5B figures under ``out/report``, and
    ``environment.json``: the :func:`ec.provenance.environment` of the report, and under
    ``invocations`` that of the driver of each ``ec grid run`` that filled the store (its
    units' numbers come from those; Dask workers are not recorded)."""
    from ..plots.grid import plot_reconstructions, plot_students

    out = Path(out)
    cfg = cfg or load_config(out)
    rep = out / REPORT_DIR
    rep.mkdir(parents=True, exist_ok=True)
    with ResultStore(out) as store:
        students = students_frame(store, cfg)
        recon = reconstructions_frame(store, cfg)
        invocations = [{"run_id": r["run_id"], "note": r["note"], "status": r["status"],
                        "n_computed": r["n_computed"], "n_skipped": r["n_skipped"],
                        "environment": json.loads(r["environment"]) if r.get("environment") else None}
                       for r in store.runs()]
    table = summary_table(students, recon, cfg["zero_loss"], cfg["recovered_rmse"])
    paths = {
        "table": atomic_write_text(rep / "grid-table.csv", table.to_csv(index=False)),
        "students": atomic_write_text(rep / "students.csv", students.to_csv(index=False)),
    }
    if len(recon):
        paths["reconstructions"] = atomic_write_text(rep / "reconstructions.csv", recon.to_csv(index=False))
    rhos = list(cfg["rho"])
    if 1 in rhos:
        paths["fig4b"] = plot_students(students, [1], cfg, rep / "fig4b-students-rho1.png")
    if [p for p in rhos if p != 1]:
        paths["fig4c"] = plot_students(students, [p for p in rhos if p != 1], cfg, rep / "fig4c-students-overparam.png")
    if len(rhos) > 1:  # the rho contrast side by side
        paths["fig4bc"] = plot_students(students, rhos, cfg, rep / "fig4bc-students-all-rho.png")
    if len(recon):
        paths["fig5b"] = plot_reconstructions(recon, cfg, rep / "fig5b-reconstructions.png")
    paths["environment"] = atomic_write_json(rep / "environment.json", {**environment(), "invocations": invocations})
    return paths


TIMING_FIELDS = ("train_seconds", "cpu_seconds", "phases", "stage_seconds")


def compare_runs(a: str | Path, b: str | Path) -> pd.DataFrame:
    """Compare two run directories of the same grid unit by unit.

    Returns one row per unit of ``a``'s grid: ``kind``, ``key``, ``in_both`` (finished in
    both) and ``identical`` (same result numbers, timings excepted, and bit-identical saved
    parameters).
    """
    cfg = load_config(a)
    rows = []
    with ResultStore(a) as sa, ResultStore(b) as sb:
        for u in grid_units(cfg):
            ra, rb = sa.valid(u.key), sb.valid(u.key)
            row = {"kind": u.kind, "key": u.key, "in_both": ra is not None and rb is not None, "identical": False}
            if row["in_both"]:
                na, nb = ({k: v for k, v in r.result.items() if k not in TIMING_FIELDS} for r in (ra, rb))
                pa, pb = (s.load_arrays(r)["params"].tobytes() if r.params_path else b"" for s, r in ((sa, ra), (sb, rb)))
                row["identical"] = na == nb and pa == pb
            rows.append(row)
    return pd.DataFrame(rows)


# -- cost ------------------------------------------------------------------------------------
def _student_params(d, r, rho) -> int:
    m = rho * r
    return m * (d + 2) + 1


def _step_budget(cfg: dict, rho: int) -> int:
    b = student_budget(cfg, rho)
    return b["ode_steps"] + b["optim_steps"]


def estimate_cost(students: pd.DataFrame, measured: dict, target: dict, cores=(2,)) -> pd.DataFrame:
    """Extrapolate measured student seconds to the students of another grid.

    Model: a student's CPU seconds (wall seconds where not recorded) are proportional to its parameter count times the number of
    training queries (each step is a full-batch pass) times its step budget (ODE + second
    order). The constant is the median of ``seconds / (n_params * n_train * steps)`` over
    the measured students, separately for rho = 1 (Newton's exact Hessian, a longer
    budget) and rho >= 2. Reconstructions are not included (they cost a few students).

    Parameters
    ----------
    students : DataFrame
        :func:`students_frame` of the measured run.
    measured, target : dict
        Grid configs of the measured run and of the grid to estimate.
    cores : sequence of int

    Returns
    -------
    DataFrame
        One row per core count: ``cores``, ``students``, ``student_hours`` (CPU),
        ``wall_hours`` (perfect packing on ``cores`` workers), ``mean_student_s``.
    """
    done = students[students["status"] == "done"].copy()
    if done.empty:
        raise ValueError("no finished student to measure the cost from")
    size = _student_params(done["d"], done["r"], done["rho"]) * float(measured["n_train"])
    steps = done["rho"].map(lambda p: max(1, _step_budget(measured, p)))
    cpu = done["cpu_seconds"] if "cpu_seconds" in done else pd.Series(np.nan, index=done.index)
    done["rate"] = cpu.fillna(done["seconds"]).astype(float) / (size * steps)
    done["square"] = done["rho"] == 1
    rates = done.groupby("square")["rate"].median()
    total, n = 0.0, 0
    for d, r, _ in cells(target):
        for rho in target["rho"]:
            rate = float(rates.get(rho == 1, done["rate"].median()))
            k = n_students_for(target, r)
            total += k * rate * _student_params(d, r, rho) * target["n_train"] * _step_budget(target, rho)
            n += k
    return pd.DataFrame(
        [
            {"cores": c, "students": n, "student_hours": total / 3600, "wall_hours": total / 3600 / c, "mean_student_s": total / n}
            for c in cores
        ]
    )
