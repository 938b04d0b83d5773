"""What stops a student: train one, then look at where it ended.

Trains one flow student of an A.4 teacher on CPU seconds and prints: its loss curve
(sampled), the stop reason and gradient norm, the spectrum of the exact Hessian at the end
(negative eigenvalues, the smallest magnitudes: a saddle, a flat valley, or a minimum), and
for every first-layer neuron its nearest teacher neuron (the angle between the ``[w; b]``
lines, and whether the student's vector points the other way: for ``g``, which has no
symmetry, a flipped neuron is not the teacher's), its norm and the norm of its outgoing
weights. A student that holds every teacher neuron plus neurons of small norm and
large outgoing weights is imitating a function with many small neurons (a slow channel), not
stuck in a saddle.

Usage::

    python benchmarks/diagnose_student.py --teacher 3-2-2-1 --seed 0 --rho 4 --n 3000 --cpu 60
    python benchmarks/diagnose_student.py --teacher 2-4-1 --seed 20401 --rho 4 --n 30000 --cpu 45

Writes ``benchmarks/results/diagnose-<teacher>-s<seed>-rho<rho>-n<n>-k<student>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ec.config import parse_int_list
from ec.io import atomic_write_json
from ec.mlp import MLPSpec
from ec.provenance import environment
from ec.teachers import make_teacher
from ec.train import Budget, get_backend
from ec.train.flow.kernels import MSE

RESULTS = Path(__file__).resolve().parent / "results"


def neuron_table(spec: MLPSpec, theta: np.ndarray, teacher_spec: MLPSpec, teacher_theta: np.ndarray) -> list[dict]:
    """First-layer neurons of ``theta`` against the teacher's: nearest angle, norms."""
    (W, b), (A, _) = spec.unpack(theta)[:2]
    (T, tb), _ = teacher_spec.unpack(teacher_theta)[:2]
    V, TV = np.c_[W, b], np.c_[T, tb]
    cos = (V / np.linalg.norm(V, axis=1, keepdims=True)) @ (TV / np.linalg.norm(TV, axis=1, keepdims=True)).T
    angles = np.degrees(np.arccos(np.clip(np.abs(cos), 0.0, 1.0)))
    rows = []
    for i in range(len(b)):
        j = int(angles[i].argmin())
        rows.append({"neuron": i, "nearest_teacher": j, "angle_deg": float(angles[i, j]), "flipped": bool(cos[i, j] < 0),
                     "norm": float(np.linalg.norm(V[i])), "out_norm": float(np.linalg.norm(A[:, i]))})
    return sorted(rows, key=lambda r: -r["out_norm"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="3-2-2-1", help="teacher layer sizes")
    parser.add_argument("--seed", type=int, default=0, help="teacher seed")
    parser.add_argument("--act", default="g")
    parser.add_argument("--rho", type=float, default=4.0)
    parser.add_argument("--n", type=int, default=3000, help="training queries")
    parser.add_argument("--cpu", type=float, default=60.0, help="CPU seconds, half gradient flow, half Newton")
    parser.add_argument("--student", type=int, default=0, help="student seed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = parse_int_list(args.teacher)
    teacher = make_teacher(sizes, args.seed, args.act)
    data = teacher.dataset(args.n, 10_000)
    spec = MLPSpec((sizes[0], *(int(round(args.rho * r)) for r in sizes[1:-1]), sizes[-1]), args.act)
    res = get_backend("flow", clock="cpu").fit(spec, data.X_train, data.y_train, spec.init_params(args.student),
                                               Budget(ode_time=args.cpu / 2, optim_time=args.cpu / 2))
    eig = np.linalg.eigvalsh(MSE(spec, data.X_train, data.y_train).hessian(res.params))
    curve = res.loss_curve[:: max(1, len(res.loss_curve) // 12)]
    test_rmse = float(np.sqrt(np.mean((spec.forward(res.params, data.X_test) - data.y_test) ** 2)))
    report = {
        "teacher": list(sizes), "seed": args.seed, "student": list(spec.layer_sizes), "n": args.n, "cpu": args.cpu,
        "loss": res.loss, "grad_norm": res.grad_norm, "stop_reason": res.stop_reason, "test_rmse": test_rmse,
        "phases": [(p.name, p.steps, p.seconds, p.loss) for p in res.phases],
        "curve": curve.tolist(),
        "hessian": {"n_negative": int((eig < 0).sum()), "most_negative": float(eig[0]),
                    "smallest_abs": np.sort(np.abs(eig))[:5].tolist(), "largest": float(eig[-1])},
        "first_layer": neuron_table(spec, res.params, teacher.spec, teacher.params),
        "environment": environment(),
    }
    print(f"student {spec.layer_sizes} of teacher {sizes} (seed {args.seed}), {args.n} queries, {args.cpu:g} CPU-s: "
          f"loss {res.loss:.2e}, test RMSE {test_rmse:.1e}, gradient {res.grad_norm:.1e} ({res.stop_reason})")
    print("loss curve (CPU-s, loss): " + ", ".join(f"{t:.0f}: {v:.1e}" for t, v in curve))
    h = report["hessian"]
    print(f"Hessian: {h['n_negative']} negative eigenvalues (most negative {h['most_negative']:.1e}), smallest |eig| "
          f"{h['smallest_abs'][0]:.1e}, largest {h['largest']:.1e}")
    print("first layer (by outgoing norm): neuron, nearest teacher neuron, angle [deg], flipped, |[w; b]|, |outgoing|")
    for row in report["first_layer"]:
        print(f"  {row['neuron']:3d}  {row['nearest_teacher']:3d}  {row['angle_deg']:8.3f}  {'yes' if row['flipped'] else 'no ':3s}"
              f"  {row['norm']:7.2f}  {row['out_norm']:8.3f}")
    out = args.out or RESULTS / (f"diagnose-{args.teacher}-s{args.seed}-rho{args.rho:g}-n{args.n}-k{args.student}.json")
    atomic_write_json(out, report)
    return report


if __name__ == "__main__":
    main()
