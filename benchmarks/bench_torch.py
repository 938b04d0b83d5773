"""Benchmark of the torch backend on the offline 5000-digit MNIST (4000 training images).

1. ``batched``: N students trained as one batched model vs the same N students trained
   one after the other (same process, same epochs, same data): wall time and ratio.
2. ``reach``: epochs and seconds for students of a relu teacher to reach given training
   RMSE levels (Table 1 reports RMSE 8.2e-3 for the relu r = 64 reconstruction, after
   25k-epoch student training on a V100 GPU with the full 60k MNIST).

Prints a table per part and writes CSVs to benchmarks/results/. Timings on a shared CPU are
noisy: compare the ratios, which come from runs in the same process.

Usage::

    python benchmarks/bench_torch.py                 # both parts, CPU-sized defaults
    python benchmarks/bench_torch.py --part batched --n 5 --epochs 40
    python benchmarks/bench_torch.py --part reach --r 64 --time-budget 900
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ec.data import load_dataset
from ec.image_teachers import train_image_teacher
from ec.mlp import MLPSpec
from ec.train import Budget
from ec.train.torch_backend import TorchTrainer

RESULTS = Path(__file__).parent / "results"
PAPER_RELU64_RMSE = 8.2e-3


def teacher_queries(act: str, r: int, seed: int):
    data = load_dataset("mnist")
    teacher = train_image_teacher(data, (r,), act, seed, max_epochs=100, threads=1)
    return data, teacher, data.X_train, teacher.predict(data.X_train)


def bench_batched(n: int, epochs: int, r: int, rho: float, repeats: int) -> pd.DataFrame:
    data, teacher, X, y = teacher_queries("relu", r, 0)
    spec = MLPSpec((X.shape[1], int(rho * r), y.shape[1]), "relu")
    thetas = [spec.init_params(s, "uniform") for s in range(n)]
    budget = Budget(max_epochs=epochs, optim_steps=2**62, optim_time=math.inf)
    trainer = TorchTrainer(threads=1, eval_every=epochs)
    rows = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        batch = trainer.fit_many(spec, X, y, thetas, budget)
        t_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        seq = [trainer.fit(spec, X, y, th, budget) for th in thetas]
        t_seq = time.perf_counter() - t0
        diff = max(np.abs(a.params - b.params).max() for a, b in zip(batch, seq))
        rows.append({"repeat": rep, "n_students": n, "student_width": spec.hidden_sizes[0], "epochs": epochs,
                     "n_samples": len(X), "batched_s": t_batch, "sequential_s": t_seq,
                     "speedup": t_seq / t_batch, "batched_s_per_epoch": t_batch / epochs,
                     "max_param_diff_float32": diff})
    return pd.DataFrame(rows)


def bench_reach(r: int, rho: float, n: int, time_budget: float, levels) -> pd.DataFrame:
    data, teacher, X, y = teacher_queries("relu", r, 0)
    spec = MLPSpec((X.shape[1], int(rho * r), y.shape[1]), "relu")
    thetas = [spec.init_params(s, "uniform") for s in range(n)]
    reached: dict[float, tuple[int, float]] = {}
    t0 = time.perf_counter()

    def progress(d):
        rmse = math.sqrt(d["best"])
        for lv in levels:
            if lv not in reached and rmse <= lv:
                reached[lv] = (d["epoch"], time.perf_counter() - t0)

    trainer = TorchTrainer(threads=1, eval_every=10, progress=progress)
    res = trainer.fit_many(spec, X, y, thetas, Budget(max_epochs=10**7, optim_steps=2**62, optim_time=time_budget))
    epochs = res[0].phases[0].steps
    steps_per_epoch = math.ceil(len(X) / trainer.batch_size)
    rows = []
    for lv in levels:
        ep, sec = reached.get(lv, (None, None))
        rows.append({"teacher": f"relu r={r}", "teacher_test_accuracy": teacher.test_accuracy, "n_students": n,
                     "student_width": spec.hidden_sizes[0], "n_samples": len(X), "rmse_level": lv,
                     "reached": ep is not None, "epochs": ep, "adam_steps": ep * steps_per_epoch if ep else None,
                     "seconds": sec, "epochs_run": epochs, "best_final_rmse": math.sqrt(min(x.loss for x in res)),
                     "time_budget_s": time_budget,
                     "paper_epochs": 25000, "paper_adam_steps": 25000 * math.ceil(60000 / 640)})
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("batched", "reach", "all"), default="all")
    ap.add_argument("--n", type=int, default=5, help="students")
    ap.add_argument("--epochs", type=int, default=40, help="epochs per run of the batched part")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--r", type=int, default=16, help="teacher width of the batched part")
    ap.add_argument("--reach-r", type=int, default=64, help="teacher width of the reach part")
    ap.add_argument("--reach-n", type=int, default=1, help="students of the reach part")
    ap.add_argument("--rho", type=float, default=4.0)
    ap.add_argument("--time-budget", type=float, default=600.0, help="seconds for the reach part")
    args = ap.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)
    if args.part in ("batched", "all"):
        df = bench_batched(args.n, args.epochs, args.r, args.rho, args.repeats)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        df.to_csv(RESULTS / "torch_batched.csv", index=False)
    if args.part in ("reach", "all"):
        levels = (1e-1, 3e-2, 1e-2, PAPER_RELU64_RMSE, 5e-3)
        df = bench_reach(args.reach_r, args.rho, args.reach_n, args.time_budget, levels)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        df.to_csv(RESULTS / "torch_reach.csv", index=False)


if __name__ == "__main__":
    main()
