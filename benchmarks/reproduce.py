"""Re-run the quick items of the committed results and print each committed number beside
the new one, with a verdict under a stated tolerance.

Items (in this order; ``--only`` picks some, ``--quick`` leaves out the grid and the
student benchmark):

- ``versions``: the installed versions against ``constraints.txt`` (one warning row per
  difference; not a failure by itself);
- ``synth``: ``ec synth --din 4 --r 4 --rho 4 --seed 0`` against ``benchmarks/expected.json``:
  status and m_hat exact, test RMSE and best student loss under limits (its student budgets
  are seconds, so its losses are not step-bound);
- ``grid``: ``ec grid run --config quick --jobs 2`` against ``docs/img/grid-table.csv``: per
  cell the recovered teachers, mean m_hat / r and the fraction of students at zero loss,
  exact (the quick grid is bound by step counts);
- ``students``: ``benchmarks/bench_students.py --rhos 4 --students 10 --jobs 2 --ode-time 30
  --optim-time 15`` against the rho = 4 rows of ``benchmarks/results/students.csv``: students
  below 1e-24, within 1 (CPU-second budgets);
- ``kernels``: ``benchmarks/bench_kernels.py --sizes 4x16`` against
  ``benchmarks/results/kernels.csv``: the speed-ups of our gradient and Hessian over torch's,
  measured in the same process, within a factor of 3 (gradient: medians) and 5 (Hessian: one
  cold torch call), never absolute times.

Exact items match only under the versions of ``constraints.txt``: their verdict says so when
the installed versions differ. Runs everything in this process, in a temporary folder;
prints the table ``item | committed | now | tolerance | verdict``, writes it to
``benchmarks/results/reproduce.csv`` (and ``reproduce.env.json`` beside it) and exits 1 if
any verdict is FAIL.

Usage::

    python3 benchmarks/reproduce.py                     # everything, 6-8 minutes on 2 busy cores
    python3 benchmarks/reproduce.py --quick             # versions, synth, kernels
    python3 benchmarks/reproduce.py --only grid,kernels
    python3 benchmarks/reproduce.py --write-constraints  # constraints.txt from this environment
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONSTRAINTS = REPO / "constraints.txt"
EXPECTED = HERE / "expected.json"
GRID_TABLE = REPO / "docs" / "img" / "grid-table.csv"
STUDENTS = HERE / "results" / "students.csv"
KERNELS = HERE / "results" / "kernels.csv"
OUT = HERE / "results" / "reproduce.csv"

ITEMS = ("versions", "synth", "grid", "students", "kernels")
SLOW = ("grid", "students")
COLUMNS = ("item", "committed", "now", "tolerance", "verdict")
OK, WARN, FAIL = "ok", "warn", "FAIL"
UNDER_OTHER_VERSIONS = " (installed versions differ from constraints.txt: exact agreement is expected only under them)"

SYNTH_ARGS = {"din": 4, "r": 4, "rho": 4, "seed": 0}
STUDENT_ARGS = ["--rhos", "4", "--students", "10", "--jobs", "2", "--ode-time", "30", "--optim-time", "15"]
ZERO_LOSS = 1e-24  # the student benchmark's threshold
KERNEL_SIZE = "4x16"
# Bands of the speed-ups over torch. The gradient's are medians of repeated runs; the
# Hessian's torch side is one cold torch.func.hessian call, memory-bound (4.5 GB at 4x16,
# N = 30 000), whose CPU time (page faults) grows with the other jobs' memory traffic.
KERNEL_FACTORS = {"grad_speedup_vs_torch": 3.0, "hess_speedup_vs_torch": 5.0}


# ---------------------------------------------------------------------------- comparisons
def fmt(value) -> str:
    """A number as the table shows it: ints as they are, floats with 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def row(item: str, committed, now, tolerance: str, verdict: str) -> dict:
    return {"item": item, "committed": fmt(committed), "now": fmt(now), "tolerance": tolerance, "verdict": verdict}


def _same(a, b) -> bool:
    """Equal, with two missing values (None, NaN) equal too."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    return all(missing) or (not any(missing) and a == b)


def exact(item: str, committed, now, versions_differ: bool = False) -> dict:
    """``ok`` when ``now == committed`` (two missing values agree), else ``FAIL``, naming the
    version difference when there is one.

    Parameters
    ----------
    item : str
    committed, now
        Numbers or strings.
    versions_differ : bool
        The installed versions differ from ``constraints.txt``.

    Returns
    -------
    dict
        One table row (:data:`COLUMNS`).
    """
    ok = _same(committed, now)
    return row(item, committed, now, "exact", OK if ok else FAIL + (UNDER_OTHER_VERSIONS if versions_differ else ""))


def at_most(item: str, committed, now, limit: float) -> dict:
    """``ok`` when ``now <= limit`` (``committed`` is shown, not compared)."""
    ok = now is not None and not math.isnan(now) and now <= limit
    return row(item, committed, now, f"<= {limit:.0e}", OK if ok else FAIL)


def within(item: str, committed, now, delta: float) -> dict:
    """``ok`` when ``|now - committed| <= delta``."""
    ok = abs(now - committed) <= delta
    return row(item, committed, now, f"± {fmt(delta)}", OK if ok else FAIL)


def within_factor(item: str, committed: float, now: float, factor: float) -> dict:
    """``ok`` when ``committed / factor <= now <= committed * factor`` (ratios measured in
    one process, so that the machine's speed and load cancel out)."""
    ok = committed > 0 and now > 0 and committed / factor <= now <= committed * factor
    return row(item, committed, now, f"x/÷ {fmt(factor)}", OK if ok else FAIL)


def version_rows(pinned: dict[str, str], installed: dict[str, str | None]) -> list[dict]:
    """One ``warn`` row per package whose installed version differs from its pin (local
    labels such as torch's ``+cpu`` aside), or one ``ok`` row when none does."""
    rows = []
    for name, version in pinned.items():
        have = installed.get(name)
        if have is None or have.split("+")[0] != version.split("+")[0]:
            rows.append(row(f"version {name}", version, have or "not installed", "constraints.txt", WARN))
    if not rows:
        rows.append(row("versions", f"{len(pinned)} pinned", "all as pinned", "constraints.txt", OK))
    return rows


def grid_rows(committed: pd.DataFrame, now: pd.DataFrame, versions_differ: bool = False) -> list[dict]:
    """The quick grid's report table against the committed one, cell by cell, exact:
    ``frac_zero_loss`` for every cell; ``recovered`` (of ``reconstructed``) and
    ``m_hat_over_r`` where the committed cell was reconstructed; then the total recovered."""
    keys = ["d", "r", "rho"]
    new = now.set_index(keys)
    rows = []
    for _, c in committed.iterrows():
        key = tuple(int(c[k]) for k in keys)
        name = "grid d={} r={} rho={}".format(*key)
        n = new.loc[key] if key in new.index else None
        get = (lambda col: None if n is None or col not in n or pd.isna(n[col]) else n[col])
        rows.append(exact(f"{name} frac_zero_loss", float(c["frac_zero_loss"]), _float(get("frac_zero_loss")),
                          versions_differ))
        if c.get("reconstructed", 0) > 0:
            rows.append(exact(f"{name} recovered", f"{int(c['recovered'])}/{int(c['reconstructed'])}",
                              _fraction(get("recovered"), get("reconstructed")), versions_differ))
            rows.append(exact(f"{name} m_hat/r", float(c["m_hat_over_r"]), _float(get("m_hat_over_r")),
                              versions_differ))
    total = lambda t: f"{int(t['recovered'].fillna(0).sum())}/{int(t['reconstructed'].fillna(0).sum())}"  # noqa: E731
    has = all(col in t for t in (committed, now) for col in ("recovered", "reconstructed"))
    rows.append(exact("grid teachers recovered", total(committed) if has else None, total(now) if has else None,
                      versions_differ))
    return rows


def _float(v):
    return None if v is None else float(v)


def _fraction(a, b):
    return None if a is None or b is None else f"{int(a)}/{int(b)}"


def synth_rows(expected: dict, report: dict, versions_differ: bool = False) -> list[dict]:
    """``ec synth``'s report against ``expected.json``'s ``synth`` entry: status and m_hat
    exact, test RMSE and best student loss under the entry's limits."""
    summary = report.get("summary", {})
    losses = report.get("students", {}).get("losses") or [math.nan]
    return [
        exact("synth status", expected["status"], report.get("status"), versions_differ),
        exact("synth m_hat", expected["m_hat"], summary.get("m_hat"), versions_differ),
        at_most("synth test RMSE", expected["test_rmse"], summary.get("test_rmse", math.nan),
                expected["test_rmse_max"]),
        at_most("synth best student loss", expected["best_student_loss"], min(losses),
                expected["best_student_loss_max"]),
    ]


def student_rows(committed: pd.DataFrame, now: pd.DataFrame, rho: int = 4, threshold: float = ZERO_LOSS,
                 slack: int = 1) -> list[dict]:
    """Students of ``rho`` below ``threshold``: count now against the committed rows, within
    ``slack`` (their budgets are CPU seconds, so a loaded machine may cut one short)."""
    c, n = committed[committed["rho"] == rho], now[now["rho"] == rho]
    return [
        exact(f"students rho={rho} trained", len(c), len(n)),
        within(f"students rho={rho} below {threshold:.0e}", int((c["loss"] < threshold).sum()),
               int((n["loss"] < threshold).sum()), slack),
    ]


def kernel_rows(committed: pd.DataFrame, now: pd.DataFrame, size: str = KERNEL_SIZE,
                factors: dict[str, float] | None = None) -> list[dict]:
    """The speed-ups over torch for the student ``size`` (``d x m``) against the committed
    row, each within its factor (``{column: factor}``, default :data:`KERNEL_FACTORS`)."""
    d, m = (int(v) for v in size.lower().split("x"))
    c, n = _kernel_row(committed, d, m), _kernel_row(now, d, m)
    return [within_factor(f"kernels {size} {col}", float(c[col]), float(n[col]), factor)
            for col, factor in (factors or KERNEL_FACTORS).items()]


def _kernel_row(df: pd.DataFrame, d: int, m: int) -> pd.Series:
    """The row of one hidden layer ``d x m``: column ``layers`` (``4-16-1``) or, in files
    written before it existed, ``d`` and ``m``."""
    match = df["layers"] == f"{d}-{m}-1" if "layers" in df else (df["d"] == d) & (df["m"] == m)
    if not match.any():
        raise LookupError(f"no kernel row for {d}x{m}")
    return df[match].iloc[0]


def error_row(item: str, exc: BaseException) -> dict:
    return row(item, None, f"error: {type(exc).__name__}: {exc}", "–", FAIL)


# ---------------------------------------------------------------------------- constraints
def read_constraints(path: str | Path = CONSTRAINTS) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines (comments and blanks skipped)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def installed_versions(names) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def dependency_closure(root: str = "ec", extras=("test",)) -> dict[str, str]:
    """Installed version of every distribution that ``root[extras]`` needs here, recursively
    (requirements from the installed metadata, markers evaluated for this interpreter).

    Returns
    -------
    dict
        ``{canonical name: version}`` sorted by name, without ``root`` itself.

    Raises
    ------
    importlib.metadata.PackageNotFoundError
        A required distribution is not installed.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, seen, todo = {}, set(), [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        dist = metadata.distribution(name)
        if canonicalize_name(name) != canonicalize_name(root):
            found[canonicalize_name(name)] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
                todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(found.items()))


def write_constraints(path: str | Path = CONSTRAINTS) -> Path:
    """Pin :func:`dependency_closure` of ``ec[test]`` in ``path`` (local version labels such
    as torch's ``+cpu`` left out, so that the same release from another index satisfies it)."""
    pins = dependency_closure()
    lines = [
        "# The versions the committed results were measured with: every package that",
        "#   python3 -m pip install torch==2.13.0 -e \".[test]\"",
        f"# installs (the dependency closure of ec[test]), as installed on "
        f"{datetime.now(timezone.utc):%Y-%m-%d} (Python {sys.version.split()[0]}, {sys.platform}).",
        "# Used by the README's install command (-c constraints.txt). Regenerate from an environment",
        "# that measured the committed tables: python3 benchmarks/reproduce.py --write-constraints",
        *(f"{name}=={version.split('+')[0]}" for name, version in pins.items()),
    ]
    from ec.io import atomic_write_text

    return atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- the items
def run_synth_item(work: Path, versions_differ: bool) -> list[dict]:
    from ec.experiments.synth import run_synth

    expected = json.loads(EXPECTED.read_text())["synth"]
    report = run_synth(SYNTH_ARGS, work / "synth")
    return synth_rows(expected, report, versions_differ)


def run_grid_item(work: Path, versions_differ: bool) -> list[dict]:
    from ec.cli import cli

    out = work / "grid-quick"
    cli.main(["grid", "run", "--config", "quick", "--jobs", "2", "--out", str(out), "--no-progress"],
             prog_name="ec", standalone_mode=False)
    return grid_rows(pd.read_csv(GRID_TABLE), pd.read_csv(out / "report" / "grid-table.csv"), versions_differ)


def _bench(name: str):
    sys.path.insert(0, str(HERE))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(HERE))


def run_students_item(work: Path, versions_differ: bool) -> list[dict]:
    now = _bench("bench_students").main([*STUDENT_ARGS, "--out", str(work / "students.csv")])
    committed = pd.read_csv(STUDENTS)
    return student_rows(committed[committed["teacher_seed"] == 0], now)


def run_kernels_item(work: Path, versions_differ: bool) -> list[dict]:
    now = _bench("bench_kernels").main(["--sizes", KERNEL_SIZE, "--repeats", "5", "--out", str(work / "kernels.csv")])
    return kernel_rows(pd.read_csv(KERNELS), now)


RUNNERS = {"synth": run_synth_item, "grid": run_grid_item, "students": run_students_item, "kernels": run_kernels_item}
COMMANDS = {
    "versions": "installed versions vs constraints.txt",
    "synth": "ec synth --din 4 --r 4 --rho 4 --seed 0",
    "grid": "ec grid run --config quick --jobs 2",
    "students": "python benchmarks/bench_students.py " + " ".join(STUDENT_ARGS),
    "kernels": f"python benchmarks/bench_kernels.py --sizes {KERNEL_SIZE} --repeats 5",
}


def table_text(rows: list[dict]) -> str:
    """The rows as a plain text table with a header."""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    lines = [" | ".join(c.ljust(widths[c]) for c in COLUMNS), "-|-".join("-" * widths[c] for c in COLUMNS)]
    lines += [" | ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


def environment_text(env: dict) -> str:
    """One paragraph: commit, Python, the main packages, BLAS, machine, date."""
    commit = env["commit"]
    sha = "not a git checkout" if commit is None else commit["sha"][:10] + (" (dirty)" if commit["dirty"] else "")
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    blas = "; ".join(f"{b['internal_api']} {b['version']} {b['architecture']} x{b['num_threads']} ({b['library']})"
                     for b in env["blas"])
    m = env["machine"]
    load = ", ".join(f"{v:.2f}" for v in m["load_avg"]) if m["load_avg"] else "?"
    return (f"date {env['date']}, commit {sha}\nPython {env['python']}, {packages}\nBLAS: {blas}\n"
            f"machine: {m['platform']}, {m['cpu_count']} cores, load {load}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"leave out {' and '.join(SLOW)} (a smoke test)")
    parser.add_argument("--only", default="", metavar="ITEM[,ITEM]", help=f"items to run, of {', '.join(ITEMS)}")
    parser.add_argument("--out", default=str(OUT), help="CSV of the table")
    parser.add_argument("--write-constraints", action="store_true",
                        help="write constraints.txt from the installed versions and stop")
    args = parser.parse_args(argv)
    if args.write_constraints:
        print(f"wrote {write_constraints()}")
        return 0
    items = [i.strip() for i in args.only.split(",") if i.strip()] or list(ITEMS)
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        parser.error(f"--only: unknown items {unknown}; allowed: {', '.join(ITEMS)}")
    if args.quick:
        items = [i for i in items if i not in SLOW]

    from ec.provenance import command_line, environment, write_table

    env = environment()
    print(environment_text(env), flush=True)
    pins = read_constraints()
    versions = version_rows(pins, installed_versions(pins))
    differ = any(r["verdict"] == WARN for r in versions)
    rows = versions if "versions" in items else []
    with tempfile.TemporaryDirectory(prefix="ec-reproduce-") as tmp:
        for item in (i for i in ITEMS if i in items and i in RUNNERS):
            print(f"\n== {item}: {COMMANDS[item]}", flush=True)
            t0 = time.perf_counter()
            try:
                new = RUNNERS[item](Path(tmp), differ)
            except Exception as exc:  # one broken item must not hide the others
                new = [error_row(item, exc)]
            print(f"   ({time.perf_counter() - t0:.0f} s wall)", flush=True)
            rows += new
    text = table_text(rows)
    counts = {v: sum(r["verdict"].startswith(v) for r in rows) for v in (OK, WARN, FAIL)}
    print(f"\n{text}\n\n{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} FAIL")
    write_table(args.out, pd.DataFrame(rows, columns=list(COLUMNS)), env, command_line(__file__, argv))
    print(f"wrote {args.out}")
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    sys.exit(main())
