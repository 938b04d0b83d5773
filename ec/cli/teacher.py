"""``ec teacher``: train an MLP teacher on an image dataset."""

from __future__ import annotations

import click

from ..experiments.mnist import TEACHER
from . import cli, config_option, fail_cleanly
from ._progress import Progress


@cli.command()
@config_option(TEACHER.name)
@TEACHER.click_options
def teacher(config, **values):
    """Train an MLP teacher on an image dataset (cross-entropy, Adam, early stopping).

    \b
    Example:
      ec teacher --dataset mnist --act relu --r 64
    """
    from ..experiments.mnist import teacher_path, train_teacher

    params = TEACHER.resolve(values, config)
    with Progress() as progress:
        t = fail_cleanly(train_teacher, params, progress)
    click.echo(
        f"teacher {'-'.join(map(str, t.spec.layer_sizes))} {t.spec.activation} on {t.trained_on} ({t.source}): "
        f"test accuracy {t.test_accuracy:.4f}, validation accuracy {t.val_accuracy:.4f}, {t.epochs} epochs\n"
        f"saved to {teacher_path(params)}"
    )
