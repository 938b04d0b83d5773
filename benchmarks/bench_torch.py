"""Benchmark of the torch backend on the offline 5000-digit MNIST (4000 training images).

1. ``batched``: N students trained as one batched model vs the same N students trained
   one after the other (same process, same epochs, same data): wall time and ratio.
2. ``reach``: epochs and seconds for students of a relu teacher to reach given training
   RMSE levels (Table 1 reports RMSE 8.2e-3 for the relu r = 64 reconstruction, after
   25k-epoch student training on a V100 GPU with the full 60k MNIST).
3. ``devices`` (needs CUDA): seconds per epoch of N batched students on the CPU and on the
   GPU of the same machine, same process, for several N; the ratio is the GPU's speed-up.
   Seconds per epoch are differences of a short and a long run, so the fixed costs of a
   ``fit_many`` call (first and last full evaluation, float64 gradient) cancel out.
4. ``profile``: torch.profiler's table of the operations of a few epochs of N batched
   students on ``--device`` (where the time of an Adam step goes).

Prints a table per part and writes CSVs to benchmarks/results/ (file names carry the
device), each with a ``<name>.env.json`` beside it (commit, versions, BLAS, machine:
:func:`ec.provenance.write_sidecar`). Timings on a shared CPU are noisy: compare the ratios, which come from runs in the
same process.

Usage::

    python benchmarks/bench_torch.py                 # batched and reach, CPU-sized defaults
    python benchmarks/bench_torch.py --part batched --n 5 --epochs 40
    python benchmarks/bench_torch.py --part reach --r 64 --time-budget 900
    python benchmarks/bench_torch.py --part devices --device cuda --r 64 --n-list 1,5,20,50
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ec.io import atomic_write_text
from ec.provenance import command_line, environment, write_sidecar, write_table
from ec.queries import load_dataset
from ec.teachers.images import train_image_teacher
from ec.mlp import MLPSpec
from ec.train import Budget
from ec.train.torch_backend import TorchTrainer

RESULTS = Path(__file__).parent / "results"
PAPER_RELU64_RMSE = 8.2e-3


def teacher_queries(act: str, r: int, seed: int):
    data = load_dataset("mnist")
    # On the CPU wherever the students train: the same teacher, so the same problem, on every device.
    teacher = train_image_teacher(data, (r,), act, seed, max_epochs=100, device="cpu", threads=1)
    return data, teacher, data.X_train, teacher.predict(data.X_train)


def epochs_budget(epochs: int) -> Budget:
    return Budget(max_epochs=epochs, optim_steps=2**62, optim_time=math.inf)


def threads_for(device: str):
    return 1 if device == "cpu" else None


def bench_batched(n: int, epochs: int, r: int, rho: float, repeats: int, device: str) -> pd.DataFrame:
    data, teacher, X, y = teacher_queries("relu", r, 0)
    spec = MLPSpec((X.shape[1], int(rho * r), y.shape[1]), "relu")
    thetas = [spec.init_params(s, "uniform") for s in range(n)]
    budget = epochs_budget(epochs)
    trainer = TorchTrainer(device=device, threads=threads_for(device), eval_every=epochs)
    if device != "cpu":
        trainer.fit_many(spec, X, y, thetas, epochs_budget(1))  # CUDA context and kernels
    rows = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        batch = trainer.fit_many(spec, X, y, thetas, budget)
        t_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        seq = [trainer.fit(spec, X, y, th, budget) for th in thetas]
        t_seq = time.perf_counter() - t0
        diff = max(np.abs(a.params - b.params).max() for a, b in zip(batch, seq))
        rows.append({"device": device, "repeat": rep, "n_students": n, "student_width": spec.hidden_sizes[0], "epochs": epochs,
                     "n_samples": len(X), "batched_s": t_batch, "sequential_s": t_seq,
                     "speedup": t_seq / t_batch, "batched_s_per_epoch": t_batch / epochs,
                     "max_param_diff_float32": diff})
    return pd.DataFrame(rows)


def bench_reach(r: int, rho: float, n: int, time_budget: float, levels, device: str) -> pd.DataFrame:
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

    trainer = TorchTrainer(device=device, threads=threads_for(device), eval_every=10, progress=progress)
    res = trainer.fit_many(spec, X, y, thetas, Budget(max_epochs=10**7, optim_steps=2**62, optim_time=time_budget))
    epochs = res[0].phases[0].steps
    steps_per_epoch = math.ceil(len(X) / trainer.batch_size)
    rows = []
    for lv in levels:
        ep, sec = reached.get(lv, (None, None))
        rows.append({"device": device, "teacher": f"relu r={r}", "teacher_test_accuracy": teacher.test_accuracy, "n_students": n,
                     "student_width": spec.hidden_sizes[0], "n_samples": len(X), "rmse_level": lv,
                     "reached": ep is not None, "epochs": ep, "adam_steps": ep * steps_per_epoch if ep else None,
                     "seconds": sec, "epochs_run": epochs, "best_final_rmse": math.sqrt(min(x.loss for x in res)),
                     "time_budget_s": time_budget,
                     "paper_epochs": 25000, "paper_adam_steps": 25000 * math.ceil(60000 / 640)})
    return pd.DataFrame(rows)


def seconds_per_epoch(trainer, spec, X, y, thetas, short: int, long: int):
    """(seconds per epoch, results of the short run): the difference of two run lengths."""
    t0 = time.perf_counter()
    res = trainer.fit_many(spec, X, y, thetas, epochs_budget(short))
    t_short = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.fit_many(spec, X, y, thetas, epochs_budget(long))
    return (time.perf_counter() - t0 - t_short) / (long - short), res


def bench_devices(n_list, epochs: int, cpu_epochs: int, r: int, rho: float, device: str) -> pd.DataFrame:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise SystemExit("--part devices compares the CPU with a CUDA GPU: none is visible here")
    data, teacher, X, y = teacher_queries("relu", r, 0)
    spec = MLPSpec((X.shape[1], int(rho * r), y.shape[1]), "relu")
    rows = []
    for n in n_list:
        thetas = [spec.init_params(s, "uniform") for s in range(n)]
        # The CPU runs with all of its cores (torch's default), the fairest baseline.
        cpu = TorchTrainer(device="cpu", eval_every=10**9)
        gpu = TorchTrainer(device=device, eval_every=10**9)
        gpu.fit_many(spec, X, y, thetas, epochs_budget(1))  # CUDA context and kernels
        cpu_s, cpu_res = seconds_per_epoch(cpu, spec, X, y, thetas, 1, 1 + cpu_epochs)
        gpu_s, gpu_res = seconds_per_epoch(gpu, spec, X, y, thetas, 1, 1 + epochs)
        diff = max(np.abs(a.params - b.params).max() for a, b in zip(cpu_res, gpu_res))
        rows.append({"device": torch.cuda.get_device_name(device), "cpu_threads": torch.get_num_threads(),
                     "n_students": n, "student": "-".join(map(str, spec.layer_sizes)), "n_samples": len(X),
                     "batch_size": gpu.batch_size, "cpu_s_per_epoch": cpu_s, "gpu_s_per_epoch": gpu_s,
                     "gpu_speedup": cpu_s / gpu_s, "gpu_s_per_student_epoch": gpu_s / n,
                     "max_param_diff_after_1_epoch_float32": diff})
    return pd.DataFrame(rows)


def profile_table(n: int, epochs: int, r: int, rho: float, device: str) -> str:
    from torch.profiler import ProfilerActivity, profile

    data, teacher, X, y = teacher_queries("relu", r, 0)
    spec = MLPSpec((X.shape[1], int(rho * r), y.shape[1]), "relu")
    thetas = [spec.init_params(s, "uniform") for s in range(n)]
    trainer = TorchTrainer(device=device, threads=threads_for(device), eval_every=10**9)
    trainer.fit_many(spec, X, y, thetas, epochs_budget(1))
    gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        trainer.fit_many(spec, X, y, thetas, epochs_budget(epochs))
    sort = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    head = f"{n} students {spec.layer_sizes}, {epochs} epochs of {math.ceil(len(X) / trainer.batch_size)} steps on {device}\n"
    return head + prof.key_averages().table(sort_by=sort, row_limit=25)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("batched", "reach", "devices", "profile", "all"), default="all",
                    help="all: batched and reach")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    ap.add_argument("--n-list", default="1,5,20,50", help="students per run of the devices part")
    ap.add_argument("--cpu-epochs", type=int, default=3, help="timed CPU epochs of the devices part")
    ap.add_argument("--n", type=int, default=5, help="students")
    ap.add_argument("--epochs", type=int, default=40, help="epochs per run of the batched part")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--r", type=int, default=16, help="teacher width of the batched part")
    ap.add_argument("--reach-r", type=int, default=64, help="teacher width of the reach part")
    ap.add_argument("--reach-n", type=int, default=1, help="students of the reach part")
    ap.add_argument("--rho", type=float, default=4.0)
    ap.add_argument("--time-budget", type=float, default=600.0, help="seconds for the reach part")
    args = ap.parse_args()
    env, command = environment(), command_line(__file__)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)
    tag = args.device.replace(":", "")
    tables = []
    if args.part in ("batched", "all"):
        tables.append((f"torch_batched-{tag}", bench_batched(args.n, args.epochs, args.r, args.rho, args.repeats, args.device)))
    if args.part in ("reach", "all"):
        levels = (1e-1, 3e-2, 1e-2, PAPER_RELU64_RMSE, 5e-3)
        tables.append((f"torch_reach-{tag}",
                       bench_reach(args.reach_r, args.rho, args.reach_n, args.time_budget, levels, args.device)))
    if args.part == "devices":
        n_list = [int(v) for v in args.n_list.split(",")]
        tables.append(("torch_devices", bench_devices(n_list, args.epochs, args.cpu_epochs, args.r, args.rho, args.device)))
    for name, df in tables:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        write_table(RESULTS / f"{name}.csv", df, env, command)
    if args.part == "profile":
        text = profile_table(args.n, args.epochs, args.r, args.rho, args.device)
        print(text)
        atomic_write_text(RESULTS / f"torch_profile-{tag}.txt", text)
        write_sidecar(RESULTS / f"torch_profile-{tag}.txt", env, command=command)


if __name__ == "__main__":
    main()
