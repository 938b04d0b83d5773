"""Peak memory of one flow student of image scale (issue 17): the flow backend must train a
510-64-10 student (33 354 parameters) without forming its Hessian.

Trains one student on random queries for a few CPU seconds in a fresh process and reports
the phases it ran and its peak resident memory (``ru_maxrss``).

Usage::

    python benchmarks/flow_memory.py                       # 510-64-10, 4000 queries, 5 + 5 CPU-s
    python benchmarks/flow_memory.py --sizes 784-128-10 --n 10000

Writes ``benchmarks/results/flow_memory.csv`` (and its environment beside it).
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import numpy as np
import pandas as pd

from ec.config import parse_int_list
from ec.mlp import MLPSpec
from ec.provenance import command_line, write_table
from ec.train import Budget, get_backend

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="510-64-10")
    parser.add_argument("--act", default="relu")
    parser.add_argument("--n", type=int, default=4000, help="queries")
    parser.add_argument("--cpu", type=float, default=5.0, help="CPU seconds per phase")
    parser.add_argument("--out", default=str(RESULTS / "flow_memory.csv"))
    args = parser.parse_args(argv)
    spec = MLPSpec(parse_int_list(args.sizes), args.act)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(args.n, spec.d_in)), rng.normal(size=(args.n, spec.d_out))
    res = get_backend("flow", clock="cpu").fit(spec, X, y, spec.init_params(0),
                                               Budget(ode_time=args.cpu, optim_time=args.cpu))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    df = pd.DataFrame([{"sizes": args.sizes, "n_params": spec.n_params, "queries": args.n,
                        "phases": " ".join(f"{p.name}:{p.steps}" for p in res.phases), "loss": res.loss,
                        "failed": res.failed, "peak_rss_mb": round(peak / 2**20, 1),
                        "hessian_gib": round(8 * spec.n_params**2 / 2**30, 2)}])
    print(df.to_string(index=False))
    write_table(args.out, df, command=command_line(__file__, argv))
    return df


if __name__ == "__main__":
    main()
