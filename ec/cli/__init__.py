"""The ``ec`` command line. It only parses, validates through ``ec.config`` and calls the
pipelines of :mod:`ec.experiments`; each command lives in the module named after it and is
added to the group here. Progress is rendered by :mod:`._progress`."""

from __future__ import annotations

import click

from ..config import ConfigError


class ECGroup(click.Group):
    """Turns :class:`ConfigError` and ``ValueError`` from validation into clean usage errors."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from None


@click.group(cls=ECGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ec")
def cli():
    """Expand-and-Cluster: recover a neural network's weights and layer sizes from its
    input-output pairs.

    \b
    Typical use:
      ec synth --din 4 --r 4 --rho 4     recover a synthetic teacher (paper A.4)
      ec grid run --config quick         the paper's teacher grid, resumable
      ec mnist --act relu                recover a teacher trained on MNIST
      ec recover model.pt                recover your own network, width unknown
      ec backends                        which trainer backends work here
    """


def config_option(section: str):
    """The ``--config FILE.toml`` option of a command whose parameters form the schema ``section``."""
    return click.option(
        "--config", "config", type=click.Path(dir_okay=False), default=None,
        help=f"TOML file of parameters (top-level keys or a [{section}] table); options given here win.",
    )


def fail_cleanly(func, *args, **kwargs):
    """Known failure modes become one-line errors (exit 1); bad parameters stay usage errors."""
    from ..config import ConfigError
    from ..queries import DatasetUnavailable
    from ..reconstruct import ReconstructionError
    from ..runs import RunDirError
    from ..teachers.external import ModelError

    try:
        return func(*args, **kwargs)
    except ConfigError:
        raise
    except (ModelError, DatasetUnavailable, RunDirError, ReconstructionError, FileNotFoundError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None


def main():
    """Console-script entry point."""
    cli()


# Each command module registers itself on ``cli`` when imported.
from . import backends, cluster, grid, mnist, plot, recover, synth, teacher  # noqa: E402,F401
