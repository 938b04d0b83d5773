"""Text summaries of the reports that ``ec synth`` and ``ec cluster`` write."""

from __future__ import annotations

import math

import click


def _fmt(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def print_report(report: dict) -> None:
    """The short human summary of a synth / cluster report."""
    t, s, st = report["teacher"], report["summary"], report["students"]
    finite = sorted(x for x in st["losses"] if math.isfinite(x))
    best = _fmt(finite[0]) if finite else "-"
    med = _fmt(finite[len(finite) // 2]) if finite else "-"
    click.echo(f"teacher {'-'.join(map(str, t['layer_sizes']))} (seed {t['seed']}); "
               f"{st['n']} students of width {st['width']}: best loss {best}, median {med}, failed {st['failed']}")
    if report["status"] == "failed":
        click.echo(f"reconstruction FAILED: {report['error']}")
        _echo_diagnosis(report)
        click.echo(f"results in {report['result_dir']}")
        return
    layer = report["reconstruction"]["layers"][0]
    click.echo(f"clusters: {layer['kept']} kept of {layer['n_big']} with >= {layer['min_size']} neurons "
               f"({layer['rejected_unaligned']} unaligned, {layer['rejected_small']} small), cut at "
               f"{layer['cut_height']:.3g}" + (f", merged {layer['merged']}" if layer["merged"] else "")
               + (f"; {len(layer['pruned'])} constant/zero-type folded into the bias" if layer["pruned"] else "")
               + _voters(layer, st))
    click.echo(f"reconstructed {'-'.join(map(str, report['reconstruction']['layer_sizes']))}: m_hat = {s['m_hat']} "
               f"(r = {s['r']}), excess {s['excess']}, missing {s['missing']}; test RMSE {_fmt(s['test_rmse'])}, "
               f"train RMSE {_fmt(s['train_rmse'])} (best student {_fmt(s['best_student_rmse'])})")
    click.echo("  teacher  rec  angle[deg]  cos dist   |a - a*|  flipped")
    for row in report["neurons"]:
        click.echo(f"  {row['teacher']:7d} {row['reconstructed']:4d}  {row['angle_deg']:10.2e}  {row['cos_dist']:.2e}  "
                   f"{row['a_dist']:.2e}  {'yes' if row['flipped'] else 'no'}")
    verdict = {
        "recovered": "RECOVERED: right width and test RMSE <= 1e-10",
        "inexact": "INEXACT: right width but test RMSE > 1e-10",
        "wrong-size": f"NOT RECOVERED: width {s['m_hat']} instead of {s['r']}",
    }[report["status"]]
    click.echo(verdict)
    _echo_diagnosis(report)
    click.echo(f"results in {report['result_dir']}")


def _voters(layer: dict, students: dict) -> str:
    """Which students the first layer was clustered from, when not all usable ones."""
    voters = layer.get("voter_losses")
    usable = students["n"] - students["failed"]
    if voters is None or len(voters) >= usable:
        return ""
    return (f"; clustered from the {len(voters)} of {usable} students with loss <= {max(voters):.1e}"
            + (", a cluster needing all of them" if layer.get("unanimous") else ""))


def _echo_diagnosis(report: dict) -> None:
    for line in report.get("diagnosis", []):
        click.echo(f"  why: {line}")
