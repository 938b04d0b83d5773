"""Deep students of a synthetic A.4 teacher: how low, and how fast, their loss gets with each
second-order finish of the flow backend: ``newton`` (trust region with the exact Hessian),
``lm`` (Levenberg-Marquardt with the exact Gauss-Newton matrix, the default for deep students
since 2026-12-07), ``lm+reduce`` (the same with the symmetry reduction of deep students,
``reduce_deep``, the default since 2026-12-07, session 9, tried once a student's loss is below
``reduce_deep_below`` of the output variance, since 2026-12-08) and ``lm+reduce-always`` (the
reduction tried at every round whatever the loss, as before 2026-12-08). Levenberg-Marquardt
stops a student whose loss fell less than 2x in 200 steps (``stall_steps``, since
2026-12-08); ``+nostall`` after a method turns that off (``lm+reduce+nostall``).

The same initialisations (seeds 0, 1, ...) and the same gradient-flow phase feed every
method; budgets and times are CPU seconds of one core (``clock="cpu"``), so a loaded machine
changes the wall time, not what a student can do. Besides the loss, each row says how
close the student's first layer came to the teacher's (the largest, over teacher neurons,
of the angle to the nearest student neuron) and how many student neurons lie within 1
degree of a teacher neuron: what the layer-wise clustering needs.

``--setups`` compares student populations in one run, each ``queries:ode:optim:students``
(``30000:30:30:10,3000:6:6:20``: ten students of 30 + 30 CPU-s on 30 000 queries, the deep
default before 2026-12-08 later, against twenty of 6 + 6 on 3000, the default after); then
the same student seeds start every setup.

Writes one row per student, setup and method to ``benchmarks/results/deep_students-<tag>.csv``
(atomically, after each student; ``--resume`` skips the rows already there) and prints a
summary per setup and method: fraction below 1e-20 and 1e-14, how many students hold every
first-layer teacher neuron within 0.1 degree, median loss, median and total CPU-s.

Usage::

    python benchmarks/deep_students.py --layers 3-2-2-1 --rho 4 --students 10
    python benchmarks/deep_students.py --layers 8-4-2-1 --rho 8 --students 6 --ode-cpu 30 --optim-cpu 120
    python benchmarks/deep_students.py --teacher-seed 3 --setups 30000:30:30:10,3000:6:6:20 --methods lm+reduce
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ec.config import parse_int_list
from ec.io import atomic_write_text
from ec.mlp import MLPSpec
from ec.provenance import command_line, write_sidecar
from ec.teachers import make_teacher
from ec.train import Budget
from ec.train.flow.backend import FlowTrainer

RESULTS = Path(__file__).parent / "results"
THRESHOLDS = (1e-20, 1e-14)
# A student "holds the teacher's first layer" when every teacher neuron has one within this angle.
ALIGNED_DEG = 0.1
METHODS = ("newton", "lm", "lm+reduce", "lm+reduce-always")


def parse_method(method: str) -> tuple[str, dict] | None:
    """``"lm+reduce+nostall"`` -> ``("lm", FlowTrainer options)``; None for an unknown name."""
    base = method.removesuffix("+nostall")
    if base not in METHODS:
        return None
    optim_method, _, reduce = base.partition("+")
    options = {"reduce_deep": reduce.startswith("reduce")}
    if reduce == "reduce-always":
        options["reduce_deep_below"] = np.inf
    if base != method:
        options["stall_steps"] = 0
    return optim_method, options


def first_layer_angles(spec: MLPSpec, theta: np.ndarray, teacher) -> tuple[float, int]:
    """Worst angle (degrees) from a teacher neuron of layer 1 to its nearest student neuron
    (sign-agnostic, on ``[w; b]``), and the number of student neurons within 1 degree of one."""
    def rows(s, t):
        W, b = s.unpack(t)[0]
        A = np.c_[W, b]
        return A / np.linalg.norm(A, axis=1, keepdims=True)

    cos = np.abs(rows(spec, theta) @ rows(teacher.spec, teacher.params).T).clip(0.0, 1.0)
    angles = np.degrees(np.arccos(cos))  # (student, teacher)
    return float(angles.min(axis=0).max()), int(np.sum(angles.min(axis=1) < 1.0))


def parse_setups(text: str) -> list[tuple[int, float, float, int]]:
    """``"30000:30:30:10,3000:6:6:20"`` -> [(queries, ode CPU-s, optim CPU-s, students), ...]."""
    allowed = "queries:ode:optim:students, e.g. 3000:6:6:20 (queries >= 10, CPU-s >= 0, students >= 1)"
    setups = []
    for item in text.split(","):
        fields = item.split(":")
        try:
            n, ode, opt, students = int(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
        except (ValueError, IndexError):
            raise ValueError(f"--setups item {item!r}; allowed: {allowed}") from None
        if len(fields) != 4 or n < 10 or not ode >= 0 or not opt >= 0 or students < 1:
            raise ValueError(f"--setups item {item!r}; allowed: {allowed}")
        setups.append((n, ode, opt, students))
    return setups


def setup_name(n: int, ode: float, opt: float) -> str:
    return f"n{n}-ode{ode:g}-opt{opt:g}"


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(setup=df["setup"] if "setup" in df else "")
    g = df.groupby(["setup", "method"], sort=False)
    out = pd.DataFrame({"students": g.size()})
    for t in THRESHOLDS:
        out[f"below_{t:.0e}"] = g.loss.apply(lambda v, t=t: float(np.mean(v < t)))
    out[f"aligned_{ALIGNED_DEG:g}deg"] = g.worst_angle_deg.apply(lambda v: int(np.sum(v < ALIGNED_DEG)))
    out["median_loss"] = g.loss.median()
    out["median_worst_angle_deg"] = g.worst_angle_deg.median()
    out["median_cpu_s"] = g.cpu_s.median()
    out["total_cpu_s"] = g.cpu_s.sum()
    return out.reset_index()


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=parse_int_list, default=(3, 2, 2, 1), help="teacher sizes, e.g. 8-4-2-1")
    parser.add_argument("--rho", type=int, default=4)
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--students", type=int, default=10)
    parser.add_argument("--n", type=int, default=30_000, help="training queries (ec synth's default)")
    parser.add_argument("--ode-cpu", type=float, default=30.0, help="CPU-s of gradient flow (shared by the methods)")
    parser.add_argument("--optim-cpu", type=float, default=30.0, help="CPU-s of each second-order finish")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--resume", action="store_true", help="keep rows already in the CSV")
    parser.add_argument("--tag", default="", help="appended to the CSV's name (keeps an earlier table's file)")
    parser.add_argument("--setups", default="", help="compare student populations, queries:ode:optim:students,... "
                        "(replaces --n, --ode-cpu, --optim-cpu, --students)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    for m in methods:
        if parse_method(m) is None:
            parser.error(f"--methods: {m!r}; allowed: {', '.join(METHODS)}, each optionally followed by +nostall")
    try:
        setups = parse_setups(args.setups) if args.setups else [(args.n, args.ode_cpu, args.optim_cpu, args.students)]
    except ValueError as exc:
        parser.error(str(exc))

    sizes = tuple(args.layers)
    tag = f"{'-'.join(map(str, sizes))}-s{args.teacher_seed}-rho{args.rho}"
    tag += "-setups" if args.setups else f"-ode{args.ode_cpu:g}-opt{args.optim_cpu:g}"
    tag += f"-{args.tag}" if args.tag else ""
    out = RESULTS / f"deep_students-{tag}.csv"
    teacher = make_teacher(sizes, args.teacher_seed)
    spec = MLPSpec((sizes[0], *(args.rho * r for r in sizes[1:-1]), sizes[-1]), teacher.spec.activation)
    rows = pd.read_csv(out).to_dict("records") if args.resume and out.exists() else []
    write_sidecar(out, command=command_line(__file__, argv))
    unbounded = 10**9

    numba.set_num_threads(1)
    with threadpool_limits(1):
        for n, ode_cpu, optim_cpu, n_students in setups:
            data = teacher.dataset(n, 1000)
            setup = setup_name(n, ode_cpu, optim_cpu)
            for seed in range(n_students):
                todo = [m for m in methods
                        if not any(r["seed"] == seed and r["method"] == m and r.get("setup", setup) == setup for r in rows)]
                if not todo:
                    continue
                flow = FlowTrainer(clock="cpu", exp_euler_max_params=2000, reduce_deep=False)
                start = flow.fit(spec, data.X_train, data.y_train, spec.init_params(seed),
                                 Budget(ode_steps=unbounded, ode_time=ode_cpu, optim_steps=0))
                for method in todo:
                    optim_method, options = parse_method(method)
                    res = FlowTrainer(clock="cpu", optim_method=optim_method, **options).fit(
                        spec, data.X_train, data.y_train, start.params,
                        Budget(ode_steps=0, optim_steps=unbounded, optim_time=optim_cpu))
                    worst, near = first_layer_angles(spec, res.params, teacher)
                    rows.append({"teacher": "-".join(map(str, sizes)), "teacher_seed": args.teacher_seed,
                                 "rho": args.rho, "setup": setup, "queries": n, "seed": seed, "method": method,
                                 "ode_loss": start.loss, "loss": res.loss,
                                 "steps": sum(p.steps for p in res.phases), "stop_reason": res.stop_reason,
                                 "cpu_s": start.seconds + res.seconds, "worst_angle_deg": worst,
                                 "neurons_within_1deg": near, "load_avg": os.getloadavg()[0]})
                    print(f"{setup} seed {seed} {method:6s}: {start.loss:.2e} -> {res.loss:.2e}, worst layer-1 "
                          f"angle {worst:.3f} deg, {near} neurons within 1 deg", flush=True)
                atomic_write_text(out, pd.DataFrame(rows).to_csv(index=False))
    df = pd.DataFrame(rows)
    print(f"teacher {tag}, students {spec.layer_sizes}; setups (queries, CPU-s flow, CPU-s finish, students): {setups}")
    print(summarise(df).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}")
    return df


if __name__ == "__main__":
    main()
