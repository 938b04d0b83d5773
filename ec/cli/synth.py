"""``ec synth`` (recover a synthetic teacher) and ``ec cluster RUN_DIR`` (re-cluster it)."""

from __future__ import annotations

import math

import click

from . import cli, config_option
from ..synth import CLUSTER, SYNTH, default_out, n_students, recluster, run_synth, student_widths, teacher_sizes

class Progress:
    """A tqdm bar over the students plus one line per later stage."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: str, **info):
        from tqdm import tqdm

        if event == "stage" and info.get("name") == "students":
            self.bar = tqdm(total=info["total"], initial=info["done"], desc="students", unit="student",
                            dynamic_ncols=True)
        elif event == "student" and self.bar is not None and not info.get("resumed"):
            res = info["result"]
            self.bar.set_postfix_str("failed" if res.failed else f"last loss {res.loss:.1e}")
            self.bar.update(1)
        elif event == "stage":
            self.close()
            click.echo(f"{info['name']}...")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
        click.echo(f"results in {report['result_dir']}")
        return
    layer = report["reconstruction"]["layers"][0]
    click.echo(f"clusters: {layer['kept']} kept of {layer['n_big']} with >= {layer['min_size']} neurons "
               f"({layer['rejected_unaligned']} unaligned, {layer['rejected_small']} small), cut at "
               f"{layer['cut_height']:.3g}" + (f", merged {layer['merged']}" if layer["merged"] else "")
               + (f"; {len(layer['pruned'])} constant/zero-type folded into the bias" if layer["pruned"] else ""))
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
    click.echo(f"{verdict}\nresults in {report['result_dir']}")


@cli.command()
@config_option(SYNTH.name)
@SYNTH.click_options
def synth(config, **values):
    """Recover a synthetic teacher (paper A.4) with Expand-and-Cluster.

    Draws the teacher d-r-1, trains N students of width rho*r on 30 000 of its
    input-output pairs, clusters their neurons, fine-tunes the reconstruction and reports
    its width, test RMSE and neuron alignment. The run directory keeps every finished
    student: rerunning the same command resumes an interrupted run.
    """
    params = SYNTH.resolve(values, config)
    out = params["out"] or default_out(params)
    click.echo(f"teacher {'-'.join(map(str, teacher_sizes(params)))} ({params['act']}, seed {params['seed']}); "
               f"{n_students(params)} students of width {'-'.join(map(str, student_widths(params)))} "
               f"({params['backend']} backend); run directory {out}")
    progress = Progress()
    try:
        report = run_synth(params, out, progress)
    finally:
        progress.close()
    print_report(report)


@cli.command("cluster")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@config_option(CLUSTER.name)
@CLUSTER.click_options
def cluster_command(run_dir, config, **values):
    """Re-cluster the saved students of RUN_DIR (an `ec synth` run) with other gamma / beta.

    No student is retrained; results go to RUN_DIR/recluster/<name>/.
    """
    options = CLUSTER.resolve(values, config)
    progress = Progress()
    try:
        report = recluster(run_dir, options, progress)
    finally:
        progress.close()
    print_report(report)
