"""benchmarks/reproduce.py's comparisons on small frames (the re-runs themselves are not
run here: that is `python3 benchmarks/reproduce.py`, docs/reproduce.md)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
rp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rp)


def _grid(recovered=(0, 1, 2), frac=(0.0, 0.5, 1.0)):
    """A quick-grid-like table: 3 cells at rho 1 (not reconstructed), 3 at rho 4 (2 teachers)."""
    rows = []
    for i, d in enumerate((2, 4, 8)):
        rows.append({"d": d, "r": 4, "rho": 1, "frac_zero_loss": 0.0, "reconstructed": 0, "recovered": 0,
                     "m_hat_over_r": math.nan})
        rows.append({"d": d, "r": 4, "rho": 4, "frac_zero_loss": frac[i], "reconstructed": 2,
                     "recovered": recovered[i], "m_hat_over_r": 0.5 + recovered[i] / 4})
    return pd.DataFrame(rows)


def _verdicts(rows):
    return {r["item"]: r["verdict"] for r in rows}


def test_exact_and_limits():
    assert rp.exact("a", 3, 3)["verdict"] == rp.OK
    assert rp.exact("a", math.nan, None)["verdict"] == rp.OK  # both missing
    assert rp.exact("a", 1.0, math.nan)["verdict"] == rp.FAIL
    assert rp.exact("a", "3/6", "4/6", versions_differ=True)["verdict"] == rp.FAIL + rp.UNDER_OTHER_VERSIONS
    assert rp.at_most("a", 2e-16, 3e-12, 1e-10)["verdict"] == rp.OK
    assert rp.at_most("a", 2e-16, 3e-9, 1e-10)["verdict"] == rp.FAIL
    assert rp.at_most("a", 2e-16, math.nan, 1e-10)["verdict"] == rp.FAIL
    assert rp.within("a", 10, 9, 1)["verdict"] == rp.OK and rp.within("a", 10, 8, 1)["verdict"] == rp.FAIL
    assert rp.within_factor("a", 300.0, 120.0, 3)["verdict"] == rp.OK
    assert rp.within_factor("a", 300.0, 90.0, 3)["verdict"] == rp.FAIL
    assert rp.within_factor("a", 3.0, 9.5, 3)["verdict"] == rp.FAIL
    row = rp.exact("a", 0.08333333333333333, 0.08333333333333333)
    assert set(row) == set(rp.COLUMNS) and row["now"] == "0.08333"


def test_versions_warn_per_difference_and_ignore_local_labels():
    pins = {"numpy": "2.4.6", "torch": "2.13.0", "gone": "1.0"}
    rows = rp.version_rows(pins, {"numpy": "2.4.5", "torch": "2.13.0+cpu", "gone": None})
    assert _verdicts(rows) == {"version numpy": rp.WARN, "version gone": rp.WARN}
    assert [r["now"] for r in rows] == ["2.4.5", "not installed"]
    assert _verdicts(rp.version_rows(pins, {**pins, "torch": "2.13.0+cpu"})) == {"versions": rp.OK}


def test_grid_same_table_passes_and_one_changed_cell_fails_there_only():
    committed = _grid()
    rows = rp.grid_rows(committed, committed.copy())
    assert all(r["verdict"] == rp.OK for r in rows)
    assert len(rows) == 6 + 2 * 3 + 1  # frac everywhere, recovered and m_hat where reconstructed, the total
    changed = rp.grid_rows(committed, _grid(recovered=(0, 0, 2), frac=(0.0, 0.25, 1.0)), versions_differ=True)
    failed = {k for k, v in _verdicts(changed).items() if v != rp.OK}
    assert failed == {"grid d=4 r=4 rho=4 frac_zero_loss", "grid d=4 r=4 rho=4 recovered",
                      "grid d=4 r=4 rho=4 m_hat/r", "grid teachers recovered"}
    total = next(r for r in changed if r["item"] == "grid teachers recovered")
    assert (total["committed"], total["now"]) == ("3/6", "2/6")
    assert total["verdict"].endswith(rp.UNDER_OTHER_VERSIONS)


def test_grid_missing_cell_fails():
    committed = _grid()
    rows = rp.grid_rows(committed, committed[committed["d"] != 8])
    assert _verdicts(rows)["grid d=8 r=4 rho=4 recovered"] == rp.FAIL
    assert _verdicts(rows)["grid d=8 r=4 rho=1 frac_zero_loss"] == rp.FAIL


def test_synth_checks_against_expected():
    expected = {"status": "recovered", "m_hat": 4, "test_rmse": 2e-16, "test_rmse_max": 1e-10,
                "best_student_loss": 4e-32, "best_student_loss_max": 1e-24}
    report = {"status": "recovered", "summary": {"m_hat": 4, "test_rmse": 5e-14}, "students": {"losses": [1e-3, 1e-30]}}
    assert set(_verdicts(rp.synth_rows(expected, report)).values()) == {rp.OK}
    worse = {"status": "wrong-size", "summary": {"m_hat": 5, "test_rmse": 1e-3}, "students": {"losses": [1e-20]}}
    assert set(_verdicts(rp.synth_rows(expected, worse)).values()) == {rp.FAIL}
    failed = {"status": "failed", "summary": {"m_hat": 0, "test_rmse": math.nan}, "students": {"losses": [1e-30]}}
    assert _verdicts(rp.synth_rows(expected, failed))["synth test RMSE"] == rp.FAIL


def test_students_count_below_threshold_within_one():
    committed = pd.DataFrame({"rho": [4] * 10 + [1] * 3, "loss": [1e-30] * 10 + [1e-3] * 3})
    now = pd.DataFrame({"rho": [4] * 10, "loss": [1e-30] * 9 + [1e-20]})
    assert set(_verdicts(rp.student_rows(committed, now)).values()) == {rp.OK}
    now2 = pd.DataFrame({"rho": [4] * 10, "loss": [1e-30] * 8 + [1e-20] * 2})
    assert _verdicts(rp.student_rows(committed, now2))["students rho=4 below 1e-24"] == rp.FAIL


@pytest.mark.parametrize("old_format", [True, False])
def test_kernel_ratios_within_a_factor(old_format):
    base = {"n_params": 97, "grad_speedup_vs_torch": 4.8, "hess_speedup_vs_torch": 343.0}
    committed = pd.DataFrame([{"d": 4, "m": 16, **base}] if old_format else [{"layers": "4-16-1", **base}])
    now = pd.DataFrame([{"layers": "8-32-1", "grad_speedup_vs_torch": 1.0, "hess_speedup_vs_torch": 1.0},
                        {"layers": "4-16-1", "grad_speedup_vs_torch": 2.0, "hess_speedup_vs_torch": 1500.0}])
    factors = {"grad_speedup_vs_torch": 3.0, "hess_speedup_vs_torch": 3.0}
    assert _verdicts(rp.kernel_rows(committed, now, factors=factors)) == {
        "kernels 4x16 grad_speedup_vs_torch": rp.OK, "kernels 4x16 hess_speedup_vs_torch": rp.FAIL}
    assert set(_verdicts(rp.kernel_rows(committed, now)).values()) == {rp.OK}  # the Hessian's band is wider
    with pytest.raises(LookupError):
        rp.kernel_rows(committed, now, size="32x32")


def test_constraints_pin_only_what_ec_test_needs(tmp_path):
    pins = rp.read_constraints(rp.CONSTRAINTS)
    assert {"numpy", "scipy", "numba", "torch", "pytest", "dask"} <= set(pins)
    assert set(pins) <= set(rp.dependency_closure())  # no unrelated package of this machine
    assert "ec" not in pins and all("+" not in v for v in pins.values())
    (tmp_path / "c.txt").write_text("# comment\n\nnumpy==1.0  # why\ntorch==2.0\n")
    assert rp.read_constraints(tmp_path / "c.txt") == {"numpy": "1.0", "torch": "2.0"}


def test_table_text_and_unknown_item(capsys):
    text = rp.table_text([rp.exact("grid teachers recovered", "3/6", "3/6")])
    assert text.splitlines()[0].split(" | ")[0].strip() == "item" and "3/6" in text.splitlines()[2]
    with pytest.raises(SystemExit):
        rp.main(["--only", "nope"])
    assert "unknown items" in capsys.readouterr().err
