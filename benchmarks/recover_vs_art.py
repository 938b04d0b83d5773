"""`ec recover` side by side with the Adversarial Robustness Toolbox's
FunctionallyEquivalentExtraction (Jagielski et al. 2020) on the same teachers.

Teachers d-r-k with one hidden layer, random weights (``W1 ~ N(0, 1/d)``, ``b1, W2, b2 ~
N(0, 1)``, ``default_rng(seed)``), relu unless ``--acts`` adds others; ART extracts one hidden
relu layer only, so for other activations its row says so instead of running. Per teacher and
method: success (the right width and every parameter within 1e-6 after matching symmetries,
:func:`ec.metrics.parameter_error`), the largest parameter error, the output agreement in bits
on 10^5 fresh standard-normal inputs (:func:`ec.metrics.output_error_bits`, the same inputs for
both methods), the teacher queries each method made (ART: every row it evaluated; ec: Step 1,
training and test queries, ``--max-queries`` unset), and wall seconds. ec runs with the
defaults of ``ec recover`` (``--queries gaussian``, width unknown) except ``--jobs``.

Writes one row per (method, teacher) to ``--out`` as each finishes (atomically), with the
environment beside it; ``--resume`` skips the rows already there.

Usage::

    python benchmarks/recover_vs_art.py --sizes 10-4-10,10-16-10 --seeds 0,1,2
    python benchmarks/recover_vs_art.py --sizes 784-4-10,784-16-10,784-64-10 --methods art --seeds 0,1,2,3,4
    python benchmarks/recover_vs_art.py --sizes 10-4-10 --acts tanh,g --methods ec,art
    python benchmarks/recover_vs_art.py --sizes 10-4-10 --methods ec --ec-max-queries 5000   # ec at ART's query count
    python benchmarks/recover_vs_art.py --sizes 10-4-10,10-16-10 --methods ec --ec-backend flow  # the flow trainer
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from ec.config import parse_int_list  # noqa: E402
from ec.io import atomic_write_text  # noqa: E402
from ec.metrics import output_error_bits, parameter_error  # noqa: E402
from ec.mlp import MLPSpec  # noqa: E402
from ec.provenance import command_line, environment, write_sidecar  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SUCCESS = 1e-6  # every parameter within this after matching (the criterion)
N_EVAL = 100_000
KEY = ["method", "act", "d", "r", "k", "seed"]


def teacher(d: int, r: int, k: int, act: str, seed: int) -> tuple[MLPSpec, np.ndarray]:
    rng = np.random.default_rng(seed)
    spec = MLPSpec((d, r, k), act)
    layers = [(rng.standard_normal((r, d)) / math.sqrt(d), rng.standard_normal(r)),
              (rng.standard_normal((k, r)), rng.standard_normal(k))]
    return spec, spec.pack(layers)


def run_art(spec: MLPSpec, theta: np.ndarray, seed: int) -> dict:
    if spec.activation != "relu":
        return {"ok": False, "note": "not applicable: ART extracts one hidden relu layer"}
    from _art import art_extract

    (W1, b1), (W2, b2) = spec.unpack(theta)
    out = art_extract(W1, b1, W2, b2, seed)
    row = {"ok": out["ok"], "queries": out["queries"], "seconds": out["seconds"], "note": out["error"][:120]}
    if out["ok"]:
        row["network"] = (spec, spec.pack([(out["W1"], out["b1"]), (out["W2"], out["b2"])]))
    return row


def run_ec(spec: MLPSpec, theta: np.ndarray, seed: int, jobs: int, folder: Path, max_queries: int | None,
           backend: str | None) -> dict:
    import torch

    import ec
    from ec.reconstruct import ReconstructionError

    (W1, b1), (W2, b2) = spec.unpack(theta)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "gelu": torch.nn.GELU,
           "softplus": torch.nn.Softplus}[spec.activation]
    model = torch.nn.Sequential(torch.nn.Linear(spec.d_in, W1.shape[0]), act(),
                                torch.nn.Linear(W1.shape[0], spec.d_out)).double()  # the teacher's float64 weights
    with torch.no_grad():
        for layer, (W, b) in zip((model[0], model[2]), ((W1, b1), (W2, b2))):
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))
    t0 = time.perf_counter()
    out = folder / (f"{spec.activation}-{'-'.join(map(str, spec.layer_sizes))}-s{seed}-q{max_queries or 'default'}"
                    f"-{backend or 'default'}")
    try:
        result = ec.recover(model, out=out, queries="gaussian", jobs=jobs, seed=seed, plots=False,
                            n_eval=0, max_queries=max_queries, backend=backend)
    except ReconstructionError as exc:
        return {"ok": False, "seconds": time.perf_counter() - t0, "note": str(exc)[:120]}
    report = result.report
    return {"ok": True, "queries": report["queries"]["total"], "seconds": time.perf_counter() - t0,
            "network": (result.spec, result.params), "note": report["status"]}


def evaluate(row: dict, spec: MLPSpec, theta: np.ndarray, seed: int) -> dict:
    network = row.pop("network", None)
    if network is None:
        return {**row, "m_hat": None, "param_error": math.inf, "output_bits": None, "success": False}
    rec_spec, rec_theta = network
    X = np.random.default_rng((seed, 99)).standard_normal((N_EVAL, spec.d_in))
    err = parameter_error(rec_spec, rec_theta, spec, theta)
    return {**row, "m_hat": rec_spec.hidden_sizes[0], "param_error": err,
            "output_bits": output_error_bits(rec_spec.forward(rec_theta, X), spec.forward(theta, X)),
            "success": bool(rec_spec.layer_sizes == spec.layer_sizes and err <= SUCCESS)}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10-4-10,10-16-10", help="teachers d-r-k, comma separated")
    parser.add_argument("--acts", default="relu", help="hidden activations, comma separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="art,ec")
    parser.add_argument("--jobs", type=int, default=2, help="ec: worker processes")
    parser.add_argument("--ec-backend", default=None,
                        help="ec: --backend (the method is then named ec-BACKEND; default: ec recover's own)")
    parser.add_argument("--ec-max-queries", type=int, default=None,
                        help="ec: --max-queries (the method is then named ec-qN; default: ec's 30 000 + 10 000)")
    parser.add_argument("--runs", default="runs/recover-vs-art", help="ec: folder of the run directories")
    parser.add_argument("--out", default=str(RESULTS / "recover_vs_art.csv"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    env = environment()
    rows = pd.read_csv(out).to_dict("records") if args.resume and out.is_file() else []
    done = {tuple(str(r[k]) for k in KEY) for r in rows}
    for size in args.sizes.split(","):
        d, r, k = parse_int_list(size)
        for act in args.acts.split(","):
            for seed in parse_int_list(args.seeds):
                spec, theta = teacher(d, r, k, act, seed)
                for method in args.methods.split(","):
                    name = method
                    if method == "ec":
                        name += (f"-{args.ec_backend}" if args.ec_backend else "") + (
                            f"-q{args.ec_max_queries}" if args.ec_max_queries else "")
                    key = dict(method=name, act=act, d=d, r=r, k=k, seed=seed)
                    if tuple(str(key[c]) for c in KEY) in done:
                        continue
                    if method == "art":
                        row = run_art(spec, theta, seed)
                    elif method == "ec":
                        row = run_ec(spec, theta, seed, args.jobs, Path(args.runs), args.ec_max_queries,
                                     args.ec_backend)
                    else:
                        parser.error(f"--methods: {method!r}; allowed: art, ec")
                    row = {**key, **evaluate(row, spec, theta, seed)}
                    rows.append(row)
                    print(" ".join(f"{c}={row.get(c)}" for c in (*KEY, "success", "m_hat", "param_error",
                                                                 "output_bits", "queries", "seconds")), flush=True)
                    atomic_write_text(out, pd.DataFrame(rows).to_csv(index=False))
                    write_sidecar(out, env, command=command_line(__file__, argv))
    table = pd.DataFrame(rows)
    if not table.empty:
        summary = table.groupby(["method", "act", "d", "r", "k"]).agg(
            success=("success", "sum"), teachers=("success", "size"), median_queries=("queries", "median"),
            median_seconds=("seconds", "median"), max_param_error=("param_error", "max"))
        print(summary.to_string())
    return table


if __name__ == "__main__":
    main()
