"""Table 1 of the paper, activation by activation: ``ec mnist`` runs beside the published rows.

Each ``DATASET:ACT`` item is the run directory ``<root>/<dataset>-<act>``: finished runs are
read, the others are run (or resumed: ``ec mnist`` keeps its students) with ``ec mnist``'s
defaults plus ``--extra`` options. Prints the table and writes
``benchmarks/results/mnist_table1.csv`` (one row per item, the paper's row beside it, and
the run's configuration: seed, epochs, queries), with ``mnist_table1.env.json`` beside it.

Usage::

    python benchmarks/mnist_table1.py --root runs/table1                        # MNIST, 7 activations
    python benchmarks/mnist_table1.py --root runs/table1 --items fashion:g --extra "--max-epochs 3000"
    python benchmarks/mnist_table1.py --root runs/table1 --collect-only         # read what has finished
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

import pandas as pd

from ec.io import atomic_write_text
from ec.provenance import command_line, write_sidecar

RESULTS = Path(__file__).parent / "results"
ACTIVATIONS = ("relu", "g", "tanh", "sigmoid", "softplus", "gelu", "leaky_relu")
# The paper's Table 1 rows (``paper-results.csv``): dataset, activation -> r, RMSE, m_hat/r, <d>.
PAPER_TABLE1 = {
    ("mnist", "g"): (256, 1.5e-3, 1.008, 2.1e-4), ("mnist", "sigmoid"): (256, 8.4e-4, 1.08, 3.8e-4),
    ("mnist", "tanh"): (128, 1.7e-3, 1.04, 1.3e-4), ("mnist", "softplus"): (64, 2.3e-3, 1.08, 1.4e-4),
    ("mnist", "relu"): (64, 8.2e-3, 1.12, 4.6e-4), ("mnist", "gelu"): (64, 1.8e-3, 1.08, 1.4e-4),
    ("mnist", "leaky_relu"): (64, 3.3e-3, 1.01, 1.8e-4), ("fashion", "g"): (64, 4.7e-4, 1.04, 3.3e-5),
    ("fashion", "sigmoid"): (64, 2.5e-3, 1.17, 6.8e-3), ("fashion", "softplus"): (64, 3.7e-3, 1.28, 1.5e-3),
    ("fashion", "tanh"): (64, 3.3e-4, 1.11, 4.8e-5),
}


def parse_items(text: str) -> list[tuple[str, str]]:
    items = []
    for part in text.split(","):
        dataset, _, act = part.strip().rpartition(":")
        items.append((dataset or "mnist", act))
    return items


def row(dataset: str, act: str, run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    config = json.loads((run / "config.json").read_text())
    t, s = report["table1"], report["students"]
    paper = PAPER_TABLE1.get((dataset, act), (None,) * 4)
    return {
        "dataset": dataset, "activation": act, "r": t["r"], "m_hat": t["m_hat"], "excess": t["excess"],
        "missing": t["missing"], "test_rmse": t["test_rmse"], "mean_cos_dist": t["mean_cos_dist"],
        "agreement": t["agreement"], "student_train_mse": statistics.median(s["train_mse"]),
        "student_test_rmse": statistics.median(s["test_rmse"]), "wall_min": report["seconds"]["total"] / 60,
        "seed": config["seed"], "n_students": config["n_students"], "max_epochs": config["max_epochs"],
        "queries": report["queries"], "finetune_backend": report["finetune_backend"],
        "paper_r": paper[0], "paper_rmse": paper[1], "paper_m_hat_over_r": paper[2], "paper_cos_dist": paper[3],
        "run": str(run),
    }


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/table1", help="folder of the run directories")
    parser.add_argument("--items", default=",".join(ACTIVATIONS), help="DATASET:ACT (dataset default mnist), ...")
    parser.add_argument("--extra", default="", help="further ec mnist options for the runs started here")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs")
    parser.add_argument("--out", default=str(RESULTS / "mnist_table1.csv"))
    args = parser.parse_args(argv)
    items = parse_items(args.items)
    for dataset, act in items:
        if act not in ACTIVATIONS:
            parser.error(f"--items: activation {act!r}; allowed: {', '.join(ACTIVATIONS)}")

    from ec.cli import cli

    rows = pd.read_csv(args.out).to_dict("records") if Path(args.out).exists() else []
    for dataset, act in items:
        run = Path(args.root) / f"{dataset}-{act}"
        if not (run / "report.json").is_file():
            if args.collect_only:
                print(f"{dataset}:{act}: no finished run in {run}")
                continue
            command = ["mnist", "--dataset", dataset, "--act", act, "--out", str(run), *shlex.split(args.extra)]
            cli.main(command, standalone_mode=False)
        rows = [r for r in rows if (r["dataset"], r["activation"]) != (dataset, act)] + [row(dataset, act, run)]
        atomic_write_text(args.out, pd.DataFrame(rows).to_csv(index=False))
    write_sidecar(args.out, command=command_line(__file__, argv))
    df = pd.DataFrame(rows)
    cols = ["dataset", "activation", "m_hat", "r", "test_rmse", "mean_cos_dist", "wall_min", "paper_r", "paper_rmse"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
