"""Benchmark of the flow backend's kernels against torch float64, same net, data and process.

For each student size (``d x m``: one hidden layer, one output; or layer sizes such as
``8-32-16-1``), N samples, activation g:

* loss + gradient: ours (``ec.train.flow.kernels.MSE.loss_grad``) vs ``torch.autograd.grad``;
* exact Hessian: ours vs ``torch.func.hessian``; above ``--torch-hessian-max`` parameters
  (``torch.func.hessian`` vmaps over all parameters at once and was killed for memory at
  (8, 32), N = 30 000, on a 24 GB machine) vs ``jacrev(jacrev(loss), chunk_size=--torch-chunk)``,
  a memory-bounded torch.func Hessian (column ``torch_hess_method``);
* the ``J^T J`` part of our Hessian (``dsyrk``): its flop rate against this machine's float64
  matrix-multiply rate, measured in the same run with a square ``numpy`` product.

Both libraries get the same number of threads (``--threads``). The machine is shared, so
timings are noisy: each number is the median of ``--repeats`` runs of process CPU time
(``--clock cpu``, the default; ``--clock wall`` for elapsed time), and the ratios (from the
same process) are what to compare; the J^T J time inside the Hessian uses the same clock. Prints a table, writes
``benchmarks/results/kernels.csv`` and beside it ``kernels.env.json`` (commit, versions, BLAS, machine:
:func:`ec.provenance.write_sidecar`).

Usage::

    python benchmarks/bench_kernels.py                     # the four sizes of issue 3
    python benchmarks/bench_kernels.py --threads 2 --repeats 15
    python benchmarks/bench_kernels.py --sizes 4x16 --n 10000
    python benchmarks/bench_kernels.py --sizes 8-32-16-1,3-8-8-1 --n 3000 --out benchmarks/results/kernels_deep.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from ec.config import parse_int_list
from ec.mlp import MLPSpec
from ec.provenance import command_line, environment, write_table
from ec.train.flow import _shallow
from ec.train.flow.kernels import MSE
from ec.train.torch_backend import flat_mse

RESULTS = Path(__file__).parent / "results"


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def median_seconds(f, repeats: int) -> float:
    f()  # warm-up (numba compilation, caches)
    times = []
    for _ in range(repeats):
        t0 = clock()
        f()
        times.append(clock() - t0)
    return float(np.median(times))


def matmul_rate(repeats: int, n: int = 2000) -> float:
    """float64 GFLOP/s of an ``n x n`` matrix product."""
    A = np.random.default_rng(0).random((n, n))
    return 2 * n**3 / median_seconds(lambda: A @ A, repeats) / 1e9


def bench_size(sizes: tuple[int, ...], n: int, repeats: int, torch_hessian_max: int, torch_chunk: int) -> dict:
    rng = np.random.default_rng(0)
    spec = MLPSpec(sizes, "g")
    d = sizes[0]
    X = rng.uniform(-np.sqrt(3), np.sqrt(3), (n, d))
    y = rng.normal(size=(n, 1))
    theta = spec.init_params(0)
    ours = MSE(spec, X, y)
    loss_fn, p = flat_mse(spec, X, y), torch.tensor(theta, requires_grad=True)
    assert abs(ours.loss_grad(theta)[0] - loss_fn(p).item()) < 1e-12  # same function

    row = {"layers": "-".join(map(str, sizes)), "n_params": spec.n_params, "N": n}
    row["grad_ms"] = 1e3 * median_seconds(lambda: ours.loss_grad(theta), repeats)
    row["torch_grad_ms"] = 1e3 * median_seconds(lambda: torch.autograd.grad(loss_fn(p), p), repeats)
    h_repeats = max(3, repeats // 3)
    row["hess_ms"] = 1e3 * median_seconds(lambda: ours.hessian(theta), h_repeats)
    row["jtj_ms"] = row["jtj_gflops"] = np.nan  # the deep Hessian has no separate J^T J product to time
    if ours.shallow:
        timings: dict = {"syrk": 0.0, "clock": clock}
        for _ in range(h_repeats):
            _shallow.hessian(spec, theta, ours.data, timings)
        row["jtj_ms"] = 1e3 * timings["syrk"] / h_repeats
        row["jtj_gflops"] = n * spec.n_params**2 / (timings["syrk"] / h_repeats) / 1e9
    if spec.n_params <= torch_hessian_max:
        hess_fn, row["torch_hess_method"] = torch.func.hessian(loss_fn), "func.hessian"
    else:
        hess_fn = torch.func.jacrev(torch.func.jacrev(loss_fn), chunk_size=torch_chunk)
        row["torch_hess_method"] = f"jacrev(jacrev, chunk_size={torch_chunk})"
    t0 = clock()  # one run: it takes seconds to minutes
    ref = hess_fn(p.detach()).numpy()
    row["torch_hess_ms"] = 1e3 * (clock() - t0)
    assert np.allclose(ours.hessian(theta), ref, rtol=1e-9, atol=1e-11 * np.abs(ref).max())
    return row


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4x16,8x32,32x32,8x128",
                        help="comma-separated d x m (one hidden layer, one output) or layer sizes such as 8-32-16-1")
    parser.add_argument("--n", type=int, default=30_000, help="samples")
    parser.add_argument("--threads", type=int, default=1, help="threads for both libraries")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clock", default="cpu", choices=list(CLOCKS),
                        help="cpu: process CPU time (robust to the load of a shared machine; "
                        "sums over threads), wall: elapsed time")
    parser.add_argument("--torch-hessian-max", type=int, default=100, help="largest n_params for torch.func.hessian")
    parser.add_argument("--torch-chunk", type=int, default=16, help="chunk size of the memory-bounded torch Hessian")
    parser.add_argument("--out", default=str(RESULTS / "kernels.csv"))
    args = parser.parse_args(argv)

    global clock
    clock = CLOCKS[args.clock]
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rows = []
    env = environment()  # load and date at the start
    with threadpool_limits(args.threads):
        for size in args.sizes.split(","):
            sizes = parse_int_list(size) if "-" in size else (*map(int, size.lower().split("x")), 1)
            row = bench_size(tuple(sizes), args.n, args.repeats, args.torch_hessian_max, args.torch_chunk)
            row["matmul_gflops"] = matmul_rate(args.repeats)  # right after, under the same load
            rows.append(row)
    df = pd.DataFrame(rows)
    df["threads"] = args.threads
    df["clock"] = args.clock
    df["grad_speedup_vs_torch"] = df.torch_grad_ms / df.grad_ms
    df["hess_speedup_vs_torch"] = df.torch_hess_ms / df.hess_ms
    df["jtj_fraction_of_matmul"] = df.jtj_gflops / df.matmul_gflops
    write_table(args.out, df, env, command_line(__file__, argv), float_format="%.4g")
    cols = ["layers", "n_params", "grad_ms", "torch_grad_ms", "grad_speedup_vs_torch", "hess_ms", "torch_hess_ms",
            "hess_speedup_vs_torch", "jtj_gflops", "matmul_gflops", "jtj_fraction_of_matmul", "torch_hess_method"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
