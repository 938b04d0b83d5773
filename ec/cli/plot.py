"""``ec plot``: figures that need no run directory (``ec plot teacher``: Fig. 4A)."""

from __future__ import annotations

import click

from ..config import ACTIVATION, SEED, ConfigError, parse_int_list
from . import cli


@cli.group()
def plot():
    """Figures that need no run directory."""


@plot.command("teacher")
@click.option("--din", default=2, type=int, help="Input dimension (the plot needs 2). [default: 2]")
@click.option("--r", "widths", default="2,4,8", metavar="R[,R...]", help="Teacher widths, one panel each. [default: 2,4,8]")
@click.option("--index", default=0, type=int, help="Teacher index in its grid cell (seed scheme of ec grid). [default: 0]")
@click.option("--seed", default=None, type=int, help=f"{SEED.help} [default: 0]")
@click.option("--act", default="g", help="Hidden activation. [default: g]")
@click.option("--out", "path", default="fig4a-teachers.png", type=click.Path(dir_okay=False), help="PNG path.")
def plot_teacher(din, widths, index, seed, act, path):
    """Fig. 4A: contour plot of d = 2 grid teachers with their hyperplanes and arrows."""
    from ..experiments.grid import teacher_seed
    from ..plots.teacher import plot_teachers
    from ..teachers import make_teacher

    if din != 2:
        raise ConfigError(f"--din={din}: the contour plot needs 2 inputs; allowed: 2")
    seed = SEED.validate(0 if seed is None else seed)
    act = ACTIVATION.validate(act)
    try:
        rs = parse_int_list(widths)
    except ValueError as exc:
        raise ConfigError(f"--r={widths!r}: cannot parse ({exc}); allowed: widths 1..99 such as 2,4,8") from None
    if not rs or min(rs) < 1 or max(rs) > 99:
        raise ConfigError(f"--r={widths!r}: a width is outside 1..99; allowed: widths 1..99 such as 2,4,8")
    if not 0 <= index <= 99:
        raise ConfigError(f"--index={index}: allowed: 0..99 (the grid's seed scheme)")
    seeds = [teacher_seed(seed, din, r, index) for r in rs]
    teachers = [make_teacher((din, r, 1), s, act) for r, s in zip(rs, seeds)]
    titles = [f"d = {din}, r = {r} (teacher seed {s})" for r, s in zip(rs, seeds)]
    click.echo(f"wrote {plot_teachers(teachers, path, titles)}")
