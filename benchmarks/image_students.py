"""Image-scale students: the float64 Gauss-Newton trainer (``gn``) against torch Adam.

One teacher (``ec mnist``'s default: relu 784-16-10 on the offline digits, seed 0), one query
set (``ec mnist``'s ``auto`` queries), the same Glorot-uniform initialisations; each student
is trained by both trainers in this process, one thread each (so wall seconds are CPU
seconds), for the same number of seconds. Prints training MSE reached at a ladder of
seconds and the final training MSE and test RMSE (the 1000 held-out digits); writes the
curves to ``benchmarks/results/image-students.csv`` (with its ``.env.json``) and a plot to
``docs/img/image-students.png``.

Usage::

    python benchmarks/image_students.py                      # 2 students, 300 s each per trainer
    python benchmarks/image_students.py --students 1 --seconds 60
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ec.experiments.mnist import MNIST, TEACHER, train_teacher
from ec.mlp import MLPSpec
from ec.provenance import command_line, environment, write_table
from ec.queries import load_dataset
from ec.queries.mix import query_mix, resolve_auto
from ec.train import Budget, train_students

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LADDER = (10, 30, 60, 120, 300, 600, 1200)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=300.0, help="per student and trainer")
    ap.add_argument("--rho", type=float, default=4.0)
    ap.add_argument("--out", default=str(RESULTS / "image-students.csv"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "image-students.png"))
    args = ap.parse_args(argv)
    env = environment()

    p = MNIST.resolve({})
    data = load_dataset(p["dataset"])
    teacher = train_teacher(TEACHER.resolve({k: p[k] for k in ("seed", "act", "r", "dataset")}), data=data)
    mix = query_mix(resolve_auto(p["dataset"], p["n_train"]), data, p["seed"])
    X, y = mix.X, teacher.predict(mix.X)
    X_test, y_test = data.X_test, teacher.predict(data.X_test)
    spec = MLPSpec((X.shape[1], int(round(args.rho * p["r"][0])), y.shape[1]), p["act"])
    print(f"teacher {teacher.spec.layer_sizes} {p['act']}; students {spec.layer_sizes}; {len(X)} queries "
          f"({mix.spec}); {args.seconds:g} s per student and trainer, one thread")

    rows, finals = [], []
    for seed in range(args.students):
        theta0 = spec.init_params(seed, "uniform")
        runs = {
            "gn": dict(backend="gn", budget=Budget(ode_steps=0, ode_time=0, optim_steps=10**9,
                                                   optim_time=args.seconds), clock="wall"),
            "torch-adam": dict(backend="torch", budget=Budget(max_epochs=10**9, optim_steps=2**62,
                                                              optim_time=args.seconds),
                               device="cpu", dtype="float32", batch_size=p["batch_size"], lr=p["lr"],
                               patience=p["patience"], seed=seed, threads=1),
        }
        for name, kw in runs.items():
            with threadpool_limits(1):
                res = train_students(spec, X, y, [seed], theta0s=[theta0], n_jobs=1, **kw)[0]
            if res.failed:
                raise RuntimeError(res.error)
            test = float(np.sqrt(np.mean((spec.forward(res.params, X_test) - y_test) ** 2)))
            curve = np.asarray(res.loss_curve)
            rows += [{"trainer": name, "student": seed, "seconds": s, "train_mse": l} for s, l in curve]
            finals.append({"trainer": name, "student": seed, "train_mse": res.loss, "test_rmse": test,
                           "seconds": res.seconds})
            print(f"  student {seed} {name:10s} train MSE {res.loss:.3g}  test RMSE {test:.3g}  "
                  f"({res.seconds:.0f} s)", flush=True)

    curves = pd.DataFrame(rows)
    write_table(args.out, curves, env, command_line(__file__, argv))
    final = pd.DataFrame(finals)
    write_table(Path(args.out).with_name(Path(args.out).stem + "-final.csv"), final, env, command_line(__file__, argv))
    print(_ladder(curves, args.seconds).to_string(index=False))
    print(final.groupby("trainer")[["train_mse", "test_rmse"]].median().to_string())
    _plot(curves, args.plot)


def _ladder(curves: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """Median over students of the best training MSE reached by each time of :data:`LADDER`."""
    out = []
    for t in [t for t in LADDER if t <= seconds] or [seconds]:
        row = {"seconds": t}
        for name, g in curves.groupby("trainer"):
            best = [s.loc[s.seconds <= t, "train_mse"].min() for _, s in g.groupby("student")]
            row[name] = float(np.median([b if np.isfinite(b) else math.nan for b in best]))
        out.append(row)
    return pd.DataFrame(out)


def _plot(curves: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {"gn": "C0", "torch-adam": "C1"}
    for (name, student), g in curves.groupby(["trainer", "student"]):
        ax.plot(g.seconds, g.train_mse.cummin(), color=colours.get(name, "k"), lw=1,
                label=name if student == 0 else None)
    ax.set(xlabel="seconds (one thread)", ylabel="training MSE", yscale="log",
           title="784-64-10 relu students of the default ec mnist teacher")
    ax.legend()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
