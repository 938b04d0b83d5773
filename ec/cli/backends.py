"""``ec backends``: which trainer backends can run here, why not, and on which device."""

from __future__ import annotations

import click

from . import cli

# flow and julia (MLPGradientFlow.jl) run on the CPU only.
CPU_ONLY = ("flow", "julia")


def _device(name: str, usable: bool) -> str:
    if not usable:
        return "-"
    if name in CPU_ONLY:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def backend_table() -> list[tuple[str, str, str, str]]:
    """``(backend, usable, device, reason)`` rows for every registered backend."""
    from ..train import backend_availability, backend_names

    rows = []
    for name in backend_names():
        usable, reason = backend_availability(name)
        rows.append((name, "yes" if usable else "no", _device(name, usable), reason))
    return rows


@cli.command()
@click.option(
    "--setup-julia",
    is_flag=True,
    help="Start Julia once: install and compile MLPGradientFlow.jl (minutes), before parallel runs.",
)
def backends(setup_julia):
    """List the trainer backends, whether each is usable here and why not, and its device."""
    if setup_julia:
        from ..train.julia import JuliaTrainer, JuliaUnavailableError, julia_version

        usable, reason = JuliaTrainer.availability()
        if not usable:
            raise click.ClickException(f"the julia backend cannot run here: {reason}")
        click.echo("Starting Julia and installing MLPGradientFlow.jl (the first time takes several minutes)...")
        try:
            click.echo(f"MLPGradientFlow {julia_version()} is ready.")
        except JuliaUnavailableError as exc:
            raise click.ClickException(str(exc)) from None
        return
    header = ("BACKEND", "USABLE", "DEVICE", "DETAILS")
    rows = backend_table()
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
