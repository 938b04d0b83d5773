"""``ec cluster RUN_DIR``: re-cluster the saved students of an ``ec synth`` run."""

from __future__ import annotations

import click

from ..experiments.synth import CLUSTER, recluster
from . import cli, config_option
from ._format import print_report
from ._progress import Progress


@cli.command("cluster")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@config_option(CLUSTER.name)
@CLUSTER.click_options
def cluster_command(run_dir, config, **values):
    """Re-cluster the saved students of RUN_DIR (an `ec synth` run) with other gamma / beta.

    No student is retrained; results go to RUN_DIR/recluster/<name>/.
    """
    options = CLUSTER.resolve(values, config)
    with Progress() as progress:
        report = recluster(run_dir, options, progress)
    print_report(report)
