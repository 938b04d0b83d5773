"""``ec grid run|status|report|estimate|compare``: the paper's teacher grid."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from ..config import ConfigError, parse_int_list
from ..experiments.grid import BUNDLED, GRID
from . import cli
from ._progress import Progress

_CONFIG_HELP = f"Grid config: one of {', '.join(BUNDLED)} (bundled) or a TOML file. [default: full]"


def _out_dir(cfg: dict, config: str) -> Path:
    """``--out``, else ``runs/grid-<name>`` (``quick`` and ``grid-quick.toml`` alike)."""
    stem = Path(str(config)).stem
    return Path(cfg["out"] or ("runs/" + (stem if stem.startswith("grid") else f"grid-{stem}")))


def _echo_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3g}".format):
        click.echo(df.to_string(index=False))


@cli.group()
def grid():
    """The paper's 150-teacher benchmark (section 6.1, Fig. 4 and 5), resumable and parallel.

    \b
      ec grid run --config quick --jobs 2      a small grid (about 15 min on 2 cores)
      ec grid run --config full --scheduler tcp://host:8786
      ec grid status --out runs/grid-quick
      ec grid report --out runs/grid-quick     CSV table + Fig. 4B/C, 5B
    """


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that the run is recorded as interrupted."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@grid.command("run")
@click.option("--config", "config", default="full", metavar="NAME|PATH", help=_CONFIG_HELP)
@click.option("--retry-failed", is_flag=True, help="Compute again the units recorded as failed.")
@click.option("--report/--no-report", default=True, help="Write the report when the run ends. [default: on]")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar. [default: on]")
@GRID.click_options
def grid_run(config, retry_failed, report, progress, **values):
    """Run (or resume) every unit of a grid that the store does not hold yet.

    Units already recorded intact are skipped; a killed run loses at most the units in
    flight; changing a parameter recomputes only the units it affects.
    """
    from ..experiments.grid import grid_units, resolve_config, save_config
    from ..runs.executors import execute, make_executor
    from ..runs.store import ResultStore, StoreError

    cfg = resolve_config(config, values)
    out = _out_dir(cfg, config)
    units = grid_units(cfg)
    jobs = cfg["jobs"] or os.cpu_count() or 1
    try:
        store = ResultStore(out)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    save_config(out, cfg)
    click.echo(f"grid '{config}': {len(units)} units -> {out} ({cfg['scheduler']}, {jobs} workers)")
    try:
        executor = make_executor(cfg["scheduler"], jobs)
    except (RuntimeError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    bar = Progress(enabled=progress)

    def on_event(event, unit, rec):
        bar("unit", status=event, total=len(units))

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        summary = execute(units, store, executor, retry_failed=retry_failed, on_event=on_event, note=str(config))
    except (KeyboardInterrupt, _Terminated):
        bar.close()
        store.close()
        click.echo(
            f"\ninterrupted: {bar.units['done']} units computed and recorded in this run, {bar.units['skip']} were "
            "already stored; rerun the same command to resume.",
            err=True,
        )
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    executor.close()
    bar.close()
    store.close()
    click.echo(
        f"run {summary.run_id}: {summary.n_computed} computed, {summary.n_skipped} already stored (skipped), "
        f"{summary.n_failed} failed, {summary.n_redone} redone (corrupt, partial or stale entries)"
    )
    if report:
        _report(out, cfg)


def _report(out: Path, cfg: dict) -> None:
    from ..experiments.grid import REPORT_DIR, write_report

    paths = write_report(out, cfg)
    import pandas as pd

    _echo_table(pd.read_csv(paths["table"]))
    click.echo(f"report: {out / REPORT_DIR}: " + ", ".join(p.name for p in paths.values()))


_OUT = click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory of the grid.")


def _open(out):
    from ..experiments.grid import load_config
    from ..runs.store import STORE_FILE, ResultStore

    if not (Path(out) / STORE_FILE).is_file():
        raise ConfigError(f"--out={out!r} holds no grid store ({STORE_FILE}); start one with 'ec grid run'")
    return load_config(out), ResultStore(out)


@grid.command("status")
@_OUT
def grid_status_cmd(out):
    """Units done / failed / pending, and what each invocation computed or skipped."""
    import pandas as pd

    from ..experiments.grid import grid_status

    cfg, store = _open(out)
    with store:
        click.echo(
            f"grid: din={list(cfg['din'])} r={list(cfg['r'])} teachers={cfg['n_teachers']} rho={list(cfg['rho'])} "
            f"reconstruct_rho={list(cfg['reconstruct_rho'])}"
        )
        _echo_table(grid_status(store, cfg))
        runs = pd.DataFrame(store.runs())
    if len(runs):
        runs["started"] = pd.to_datetime(runs["started_at"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
        runs["minutes"] = (runs["ended_at"] - runs["started_at"]) / 60
        # a driver killed with SIGKILL never records its end
        runs["status"] = runs["status"].replace({"running": "running or killed"})
        click.echo("\ninvocations:")
        _echo_table(runs[["run_id", "started", "minutes", "status", "n_units", "n_skipped", "n_computed", "n_failed", "n_redone"]])


@grid.command("report")
@_OUT
def grid_report_cmd(out):
    """Write the per-(d, r, rho) table (CSV) and the Fig. 4B/C and 5B figures (PNG)."""
    cfg, store = _open(out)
    store.close()
    _report(Path(out), cfg)


@grid.command("estimate")
@_OUT
@click.option("--target", default="full", metavar="NAME|PATH", help="Grid to estimate. [default: full]")
@click.option("--cores", default="2", metavar="K[,K...]", help="Core counts to estimate for. [default: 2]")
def grid_estimate_cmd(out, target, cores):
    """Extrapolate the measured cost per student of a run to another grid."""
    from ..experiments.grid import estimate_cost, resolve_config, students_frame

    try:
        cores = parse_int_list(cores)
    except ValueError:
        raise ConfigError(f"--cores={cores!r}: allowed: comma-separated positive ints") from None
    if not cores or min(cores) < 1:
        raise ConfigError(f"--cores={cores!r}: allowed: comma-separated positive ints")
    cfg, store = _open(out)
    with store:
        students = students_frame(store, cfg)
    try:
        table = estimate_cost(students, cfg, resolve_config(target), cores)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_table(table)


@grid.command("compare")
@_OUT
@click.option("--other", required=True, type=click.Path(file_okay=False), help="Second run directory.")
def grid_compare_cmd(out, other):
    """Check that two runs of one grid (e.g. local pool vs Dask) gave identical results."""
    from ..experiments.grid import compare_runs

    _open(out)[1].close()
    _open(other)[1].close()
    table = compare_runs(out, other)
    summary = table.groupby("kind").agg(units=("key", "size"), in_both=("in_both", "sum"), identical=("identical", "sum"))
    _echo_table(summary.reset_index())
    if not table["identical"].all():
        raise click.ClickException(f"{int((~table['identical']).sum())} units differ or are missing")
    click.echo("identical: every unit's numbers and saved parameters agree bit for bit")
