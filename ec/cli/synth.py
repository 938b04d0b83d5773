"""``ec synth``: recover a synthetic teacher (paper A.4)."""

from __future__ import annotations

import click

from ..experiments.synth import SYNTH, default_out, n_students, run_synth, student_widths, teacher_sizes
from . import cli, config_option
from ._format import print_report
from ._progress import Progress


@cli.command()
@config_option(SYNTH.name)
@SYNTH.click_options
def synth(config, **values):
    """Recover a synthetic teacher (paper A.4) with Expand-and-Cluster.

    Draws the teacher d-r-1, trains N students of width rho*r on 30 000 of its
    input-output pairs (deep teachers, --layers: 3000, reconstructed layer by layer),
    clusters their neurons, fine-tunes the reconstruction and reports its width, test
    RMSE and neuron alignment. The run directory keeps every finished
    student: rerunning the same command resumes an interrupted run.
    """
    params = SYNTH.resolve(values, config)
    out = params["out"] or default_out(params)
    click.echo(f"teacher {'-'.join(map(str, teacher_sizes(params)))} ({params['act']}, seed {params['seed']}); "
               f"{n_students(params)} students of width {'-'.join(map(str, student_widths(params)))} "
               f"({params['backend']} backend); run directory {out}")
    with Progress() as progress:
        report = run_synth(params, out, progress)
    print_report(report)
