"""Deep synthetic teacher (paper A.5, Fig. A.1): layer-wise Expand-and-Cluster with
retraining vs direct training at the teacher's size, with the same per-student budget.

Trains N overparameterised students (rho x each hidden width) with the flow backend, then
reconstructs layer by layer (:class:`ec.layerwise.LayerwiseExpandAndCluster`: retraining
with the reconstructed layers' weights fixed, bias filter, folding, fine-tune), and N
students of the teacher's own size. Budgets are CPU seconds per student (the flow
backend's ``clock="cpu"``), so runs on a loaded machine stay comparable. The original and
the direct students are cached in ``--cache`` (one folder per teacher, data and budget, the
flow options recorded in its ``trainer.json``) so that a rerun with other gamma / beta only
redoes the reconstruction.

Prints a per-layer table and writes ``benchmarks/results/deep_synth-<tag>.csv`` (per layer)
and ``deep_synth-<tag>.json`` (everything, with the commit, versions, BLAS and machine under
``environment``; the CSV has them in ``deep_synth-<tag>.env.json``), the tag naming teacher,
data, budget, gamma, beta.

Usage::

    python benchmarks/deep_synth.py --layers 8-4-2-1 --rho 8 --n 6 --student-cpu 60
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ec.config import parse_angle, parse_float_list, parse_int_list
from ec.io import atomic_write_json
from ec.provenance import command_line, environment, write_table
from ec.metrics import compare_layers
from ec.reconstruct import LayerwiseExpandAndCluster
from ec.reconstruct import ReconstructionError
from ec.metrics import rmse
from ec.mlp import MLPSpec
from ec.teachers import make_teacher
from ec.train import Budget, TrainResult
from ec.train.cached import train_students_cached

RESULTS = Path(__file__).parent / "results"
# Exponential Euler and Newton with the exact Hessian for every student (an 8-32-16-1
# student's 833-parameter Hessian takes ~0.15 s on 3000 queries); budgets in CPU seconds.
FLOW = {"clock": "cpu", "exp_euler_max_params": 2000}


def budget(cpu: float) -> Budget:
    """Half gradient flow, half second-order, in CPU seconds (steps unbounded)."""
    return Budget(ode_steps=10**9, ode_time=cpu / 2, optim_steps=10**9, optim_time=cpu / 2)


def check_cache_trainer(cache: Path) -> None:
    """The folder's tag names teacher, data and budget, not the trainer's options: these are
    recorded in ``trainer.json`` beside the students, and students trained with other
    options are never reused silently."""
    record = cache / "trainer.json"
    if not record.exists():
        if any(cache.glob("*.npz")):
            raise SystemExit(f"{cache} holds students saved before the trainer options were recorded: delete the "
                             f"folder, or, if they were trained with {FLOW}, write that into {record}")
        atomic_write_json(record, FLOW)
        return
    have = json.loads(record.read_text())
    if have != FLOW:
        raise SystemExit(f"{cache} holds students trained with flow options {have}, this script uses {FLOW}: "
                         "pass another --cache or delete that folder")


def cached_students(cache: Path, name: str, spec: MLPSpec, X, y, seeds, cpu: float, jobs: int,
                    theta0s=None) -> list[TrainResult]:
    """Train (or load) one flow student per seed (from ``theta0s`` when given: continued
    training); each is saved as soon as it finishes (failed ones too, for the record, but a
    rerun trains those again)."""
    check_cache_trainer(cache)

    def report(i, res):
        print(f"  {name} {i}: loss {res.loss:.2e} ({res.stop_reason}, {res.seconds:.0f} s)", flush=True)

    results, _ = train_students_cached(cache, spec, X, y, seeds, "flow", budget(cpu), n_jobs=jobs, on_result=report,
                                       name=name, theta0s=theta0s, **FLOW)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=parse_int_list, default=(8, 4, 2, 1))
    ap.add_argument("--seed", type=int, default=0, help="teacher seed")
    ap.add_argument("--rho", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=10, help="students N (and direct-training runs)")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--student-cpu", type=float, default=60.0, help="CPU seconds per original / direct student")
    ap.add_argument("--extra-cpu", type=parse_float_list, default=(),
                    help="continue the original students for this many more CPU seconds each (cached apart); "
                         "a list 300,1000 continues twice, the second time from the first continuation")
    ap.add_argument("--retrain-cpu", type=float, default=30.0, help="CPU seconds per retrained student")
    ap.add_argument("--finetune-cpu", type=float, default=60.0)
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--beta", type=parse_angle, default="pi/5")
    ap.add_argument("--reexpand", type=int, default=0,
                    help="free neurons per student to look for missed neurons after each bias filter (0: off)")
    ap.add_argument("--reexpand-cpu", type=float, default=None,
                    help="CPU seconds per re-expansion student (default: --retrain-cpu)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("runs") / "deep_synth_cache")
    ap.add_argument("--no-direct", action="store_true", help="skip direct training at the teacher's size")
    args = ap.parse_args()
    env = environment()  # commit, versions, BLAS, machine and load at the start

    teacher = make_teacher(args.layers, args.seed)
    data = teacher.dataset(args.n_train, args.n_test)
    X, y = data.X_train, data.y_train
    widths = tuple(int(round(args.rho * r)) for r in teacher.spec.hidden_sizes)
    arch = "-".join(map(str, args.layers))
    students_tag = f"{arch}-s{args.seed}-rho{args.rho:g}-n{args.n_train}-cpu{args.student_cpu:g}"
    extra_tags = [students_tag + "".join(f"+{e:g}" for e in args.extra_cpu[:k + 1]) for k in range(len(args.extra_cpu))]
    extra_tag = extra_tags[-1] if extra_tags else students_tag
    tag = f"{extra_tag}-N{args.n}-g{args.gamma:g}-b{math.degrees(args.beta):.3g}deg"
    if args.reexpand:
        tag += f"-rx{args.reexpand}" + (f"-cpu{args.reexpand_cpu:g}" if args.reexpand_cpu else "")
    cache = args.cache / students_tag
    cache.mkdir(parents=True, exist_ok=True)

    est = LayerwiseExpandAndCluster(
        widths, n_students=args.n, gamma=args.gamma, beta=args.beta, backend="flow", n_jobs=args.jobs,
        budget=budget(args.student_cpu), retrain_budget=budget(args.retrain_cpu),
        finetune_budget=Budget(ode_steps=0, ode_time=0.0, optim_steps=10**9, optim_time=args.finetune_cpu),
        backend_options=FLOW, retrain_dir=args.cache / extra_tag / "retrained", reexpand=args.reexpand,
        reexpand_budget=budget(args.reexpand_cpu) if args.reexpand_cpu else None,
        progress=lambda event, **info: print(f"[{info['name']}]", flush=True) if event == "stage" else None,
    )
    spec = est.student_spec(teacher.spec.d_in, teacher.spec.d_out)
    print(f"teacher {teacher.spec.layer_sizes} seed {args.seed}; {args.n} students {spec.layer_sizes}", flush=True)
    students = cached_students(cache, "student", spec, X, y, est.student_seeds(), args.student_cpu, args.jobs)
    original_cpu = sum(s.seconds for s in students)
    for extra, folder in zip(args.extra_cpu, extra_tags):
        print(f"continuing the students for {extra:g} CPU-s each ({folder})", flush=True)
        students = cached_students(args.cache / folder, "student", spec, X, y, est.student_seeds(), extra,
                                   args.jobs, theta0s=[s.params for s in students])
        original_cpu += sum(s.seconds for s in students)
    error, summary, table = None, None, pd.DataFrame()
    try:
        est.fit(X, y, students=students)
    except ReconstructionError as exc:
        error = str(exc)

    direct = []
    if not args.no_direct:
        print(f"direct training: {args.n} students {teacher.spec.layer_sizes}", flush=True)
        direct = cached_students(cache, "direct", teacher.spec, X, y, est.student_seeds(), args.student_cpu, args.jobs)
    direct_loss = [float(s.loss) for s in direct]
    direct_test = [rmse(s.spec.forward(s.params, data.X_test), data.y_test) for s in direct]

    losses = sorted(s.loss for s in students)
    angles = first_layer_angles(students, teacher)
    print(f"\noriginal students {spec.layer_sizes}: best loss {losses[0]:.2e}, median {losses[len(losses) // 2]:.2e}; "
          f"angle of each teacher first-layer neuron to its closest student neuron, median over students: "
          f"{np.round(np.median(angles, axis=0), 1).tolist()} deg")
    retrained = getattr(est, "retrained_", [])
    for stage, group in enumerate(retrained, start=1):
        g = sorted(s.loss for s in group)
        print(f"retrained students, {stage} fixed layer(s) {group[0].spec.layer_sizes}: best loss {g[0]:.2e}, "
              f"median {g[len(g) // 2]:.2e}")
    if error:
        print(f"reconstruction FAILED: {error}")
    else:
        summary, _ = compare_layers(est.spec_, est.params_, teacher.spec, teacher.params, data.X_test, data.y_test)
        rows = [{"layer": l + 1, **L} for l, L in enumerate(summary["layers"])]
        for row, L in zip(rows, est.report_["layers"]):
            row["removed_by_bias_filter"] = len(L.get("bias_filter", {}).get("removed", []))
            row["added_by_reexpand"] = sum(L.get("reexpand", {}).get("added", []))
        table = pd.DataFrame(rows)
        print("per hidden layer:")
        print(table.to_string(index=False))
        print(f"reconstructed {est.layer_sizes_}: train loss (MSE) {est.report_['train_loss']['finetuned']:.2e}, "
              f"test RMSE {summary['test_rmse']:.2e}")
    if direct:
        best = int(np.argmin(direct_loss))
        print(f"direct training {teacher.spec.layer_sizes}: best train loss {direct_loss[best]:.2e} "
              f"(test RMSE {direct_test[best]:.2e}), median {sorted(direct_loss)[len(direct) // 2]:.2e}")
    direct_cpu = sum(s.seconds for s in direct)
    rec_seconds = getattr(est, "report_", {}).get("seconds", {})
    print(f"CPU seconds of the original students (every continuation; cached ones included): {original_cpu:.0f}; "
          f"of direct training: {direct_cpu:.0f}; wall seconds of this run's retraining and re-expansion "
          f"(rounds loaded from the cache count ~0): {rec_seconds.get('retrain', 0.0):.0f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_table(RESULTS / f"deep_synth-{tag}.csv", table, env, command_line(__file__))
    atomic_write_json(RESULTS / f"deep_synth-{tag}.json", {
        "environment": env,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "teacher": list(teacher.spec.layer_sizes),
        "students": list(spec.layer_sizes),
        "student_losses": [float(s.loss) for s in students],
        "student_first_layer_angles_deg": angles.tolist(),
        "error": error,
        "summary": summary,
        "reconstruction": getattr(est, "report_", None),
        "retrained_losses": [[float(s.loss) for s in g] for g in retrained],
        "direct": {"losses": direct_loss, "test_rmse": direct_test},
        "original_students_cpu_seconds": original_cpu,
        "direct_cpu_seconds": direct_cpu,
    })


def first_layer_angles(students, teacher) -> np.ndarray:
    """``(n_students, r_1)``: angle (degrees) between each teacher first-layer ``[w; b]`` and
    the closest first-layer neuron of each student."""
    def unit(W, b):
        V = np.hstack([W, b[:, None]])
        return V / np.linalg.norm(V, axis=1, keepdims=True)

    T = unit(*teacher.spec.unpack(teacher.params)[0])
    cos = [np.clip((T @ unit(*s.spec.unpack(s.params)[0]).T).max(axis=1), -1, 1) for s in students]
    return np.degrees(np.arccos(np.array(cos)))


if __name__ == "__main__":
    main()
