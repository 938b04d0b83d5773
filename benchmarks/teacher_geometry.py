"""How many A.4 grid teachers hold neurons that share a hyperplane direction.

Two hidden neurons whose input weights are parallel (``w_j = +-w_i``, any biases) act on the
same scalar ``w_i . x``: together they are a one-dimensional function of it, which a student
can imitate with many small neurons instead of finding the two. An antipodal pair
(``[w_j; b_j] = -[w_i; b_i]``) is the extreme case. This counts both per grid cell, with the
seeds of ``ec grid`` (teacher ``i`` of cell ``(d, r)`` is ``teacher_seed(seed, d, r, i)``).

Usage::

    python benchmarks/teacher_geometry.py                     # d 2,4,8,16,32 x r 2,4,8, 10 teachers
    python benchmarks/teacher_geometry.py --din 2 --r 4 --teachers 10

Prints a table and writes ``benchmarks/results/teacher_geometry.csv`` (and its environment beside it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ec.config import parse_int_list
from ec.experiments.grid import teacher_seed
from ec.provenance import command_line, write_table
from ec.teachers import make_teacher

RESULTS = Path(__file__).resolve().parent / "results"


def shared_directions(W: np.ndarray, b: np.ndarray, tol: float = 1e-9) -> tuple[int, int]:
    """Pairs of neurons with parallel input weights, and antipodal ``[w; b]`` pairs.

    Parameters
    ----------
    W : ndarray, shape (r, d)
    b : ndarray, shape (r,)

    Returns
    -------
    parallel, antipodal : int
        Numbers of neuron pairs.
    """
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    V = np.c_[W, b]
    Vn = V / np.linalg.norm(V, axis=1, keepdims=True)
    iu = np.triu_indices(len(b), 1)
    parallel = int(np.sum(np.abs(Wn @ Wn.T)[iu] > 1 - tol))
    antipodal = int(np.sum((Vn @ Vn.T)[iu] < -1 + tol))
    return parallel, antipodal


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--din", default="2,4,8,16,32")
    parser.add_argument("--r", default="2,4,8")
    parser.add_argument("--teachers", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "teacher_geometry.csv"))
    args = parser.parse_args(argv)
    rows = []
    for d in parse_int_list(args.din):
        for r in parse_int_list(args.r):
            counts = []
            for i in range(args.teachers):
                t = make_teacher((d, r, 1), teacher_seed(args.seed, d, r, i))
                (W, b), _ = t.spec.unpack(t.params)
                counts.append(shared_directions(W, b))
            par = np.array(counts)
            rows.append({"d": d, "r": r, "teachers": args.teachers,
                         "with_parallel_pair": int((par[:, 0] > 0).sum()),
                         "with_antipodal_pair": int((par[:, 1] > 0).sum()),
                         "parallel_pairs": int(par[:, 0].sum())})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    write_table(args.out, df, command=command_line(__file__, argv))
    return df


if __name__ == "__main__":
    main()
