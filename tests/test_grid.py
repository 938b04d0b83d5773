"""The teacher grid: configs, unit keys, report numbers from a known store, CLI errors, and the
same tiny grid on the local pool and on a 2-worker Dask LocalCluster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ec.cli import cli
from ec.config import ConfigError
from ec.experiments.grid import (
    BUNDLED,
    bundled_config,
    compare_runs,
    estimate_cost,
    grid_units,
    resolve_config,
    save_config,
    students_frame,
    summary_table,
    teacher_seed,
    write_report,
)
from ec.runs.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

MINI = {"din": [2, 4], "r": [2], "n_teachers": 2, "rho": [1, 4], "reconstruct_rho": [4], "n_students": 3}


def keys(cfg, kind):
    return {u.key for u in grid_units(cfg) if u.kind == kind}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_configs_resolve_and_have_no_second_copy(name):
    assert bundled_config(name).is_file()
    resolve_config(name)  # valid
    assert not (REPO / "configs" / BUNDLED[name]).exists(), "one copy only: ec/configs/ ships with the package"


def test_full_config_is_the_paper_grid():
    cfg = resolve_config("full")
    students = [u for u in grid_units(cfg) if u.kind == "student"]
    recon = [u for u in grid_units(cfg) if u.kind == "reconstruction"]
    assert len(recon) == 150
    assert len(students) == 5 * 10 * 4 * (20 + 20 + 10)
    assert math.isclose(cfg["beta"], math.pi / 24) and cfg["gamma"] == 0.8
    seeds = {u.config["teacher_seed"] for u in recon}
    assert len(seeds) == 150 and teacher_seed(0, 8, 4, 3) == 80403


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="reconstruct-rho"):
        resolve_config(MINI, {"reconstruct_rho": "2"})
    with pytest.raises(ConfigError, match="--rho"):
        resolve_config(MINI, {"rho": "0,4"})
    with pytest.raises(ConfigError, match="scheduler"):
        resolve_config(MINI, {"scheduler": "yarn"})
    with pytest.raises(ConfigError, match="allowed: a TOML file path or one of"):
        resolve_config("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nn_teachers = 3\nwidth = 4\n")
    with pytest.raises(ConfigError, match="'width' is not a parameter"):
        resolve_config(bad)
    runner = CliRunner()
    for args, msg in [
        (["grid", "run", "--config", "quick", "--rho", "0"], "--rho"),
        (["grid", "run", "--config", "quick", "--scheduler", "yarn"], "scheduler"),
        (["grid", "run", "--config", str(tmp_path / "missing.toml")], "no such file"),
        (["grid", "status", "--out", str(tmp_path / "none")], "holds no grid store"),
        (["plot", "teacher", "--din", "3"], "--din=3"),
    ]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2 and msg in res.output, (args, res.output)


def test_a_changed_parameter_changes_only_the_units_it_affects():
    cfg = resolve_config(MINI)
    s, r = keys(cfg, "student"), keys(cfg, "reconstruction")
    assert len(s) == 2 * 2 * 2 * 3 and len(r) == 4
    same = resolve_config(MINI, {"jobs": "7", "scheduler": "dask", "out": "x", "zero_loss": "1e-9"})
    assert keys(same, "student") == s and keys(same, "reconstruction") == r
    gamma = resolve_config(MINI, {"gamma": "0.5"})
    assert keys(gamma, "student") == s and not keys(gamma, "reconstruction") & r
    rho1 = resolve_config(MINI, {"optim_steps_rho1": "10"})  # only the rho = 1 students change
    changed = s - keys(rho1, "student")
    assert len(changed) == 2 * 2 * 3 and keys(rho1, "reconstruction") == r
    more = resolve_config(MINI, {"n_students": "4"})
    assert s < keys(more, "student") and not keys(more, "reconstruction") & r


def _fill_store(tmp_path):
    """A store with known results: losses 10^-(k*8) per student k, and known reconstructions."""
    cfg = resolve_config(MINI)
    save_config(tmp_path, cfg)
    store = ResultStore(tmp_path)
    recon = {  # (d, teacher) -> (m_hat, test_rmse)
        (2, 0): (2, 1e-15),
        (2, 1): (3, 1e-15),  # right loss, wrong size
        (4, 0): (2, 1e-3),
    }  # (4, 1) stays pending
    for u in grid_units(cfg):
        lab = u.label
        if u.kind == "student":
            loss = 10.0 ** -(lab["student"] * 8) if lab["rho"] == 4 else 1e-3  # rho 4: 1, 1e-8, 1e-16
            status = "failed" if (lab["d"], lab["teacher"], lab["rho"], lab["student"]) == (4, 1, 1, 2) else "done"
            store.record(u.key, u.kind, status=status, label=lab, config=u.config, result={"loss": loss},
                         arrays={"params": np.zeros(3)}, seconds=2.0 if lab["rho"] == 1 else 8.0)
        elif (lab["d"], lab["teacher"]) in recon:
            m_hat, rmse = recon[(lab["d"], lab["teacher"])]
            store.record(u.key, u.kind, status="done", label=lab, config=u.config,
                         result={"m_hat": m_hat, "test_rmse": rmse, "excess": max(m_hat - 2, 0), "missing": 0},
                         arrays={"params": np.zeros(3)}, seconds=5.0)
    return cfg, store


def test_report_numbers_from_a_known_store(tmp_path):
    cfg, store = _fill_store(tmp_path)
    paths = write_report(tmp_path)
    table = pd.read_csv(paths["table"]).set_index(["d", "r", "rho"])
    assert table.loc[(2, 2, 1), "frac_zero_loss"] == 0.0
    assert table.loc[(2, 2, 4), "frac_zero_loss"] == pytest.approx(1 / 3)  # only 1e-16 < 1e-14
    assert table.loc[(4, 2, 1), "students_done"] == 5 and table.loc[(4, 2, 1), "students_failed"] == 1
    assert table.loc[(2, 2, 4), "reconstructed"] == 2
    assert table.loc[(2, 2, 4), "recovered"] == 1 and table.loc[(2, 2, 4), "recovered_rmse_only"] == 2
    assert table.loc[(2, 2, 4), "m_hat_over_r"] == pytest.approx(1.25)
    assert table.loc[(2, 2, 4), "excess_neurons"] == 1
    assert table.loc[(4, 2, 4), "reconstructed"] == 1 and table.loc[(4, 2, 4), "recovered"] == 0
    assert np.isnan(table.loc[(2, 2, 1), "recovered"]) or table.loc[(2, 2, 1), "recovered"] == 0
    assert table.loc[(2, 2, 1), "student_s_median"] == 2.0
    for name in ("fig4b", "fig4c", "fig5b"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    env = json.loads(paths["environment"].read_text())  # beside the CSVs: what they were computed with
    assert paths["environment"].parent == paths["table"].parent and {"commit", "packages", "blas"} <= set(env)
    # cost: 8 s per rho=4 student of 2-8-1 (33 params) -> a 4-8-1 student (49 params) costs 8*49/33 s
    measured = students_frame(store, cfg).query("d == 2")
    est = estimate_cost(measured, cfg, resolve_config(MINI, {"din": "4", "rho": "4"}), cores=(1, 4))
    assert est["students"].tolist() == [6, 6]
    assert est["mean_student_s"][0] == pytest.approx(8.0 * 49 / 33)
    assert est["wall_hours"][1] == pytest.approx(est["student_hours"][0] / 4)
    # the CLI prints the same table
    res = CliRunner().invoke(cli, ["grid", "status", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "reconstruction" in res.output
    table2 = summary_table(students_frame(store, cfg), pd.read_csv(paths["reconstructions"]), 1e-14, 1e-14)
    assert table2["recovered"].sum() == 1


def test_plot_teacher_cli(tmp_path):
    out = tmp_path / "fig4a.png"
    res = CliRunner().invoke(cli, ["plot", "teacher", "--r", "2,4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89PNG"


TINY = [
    "--config", "quick", "--d-in", "2", "--r", "2", "--n-teachers", "1", "--rho", "1,2", "--reconstruct-rho", "2",
    "--n-students", "2", "--n-train", "200", "--n-test", "200", "--ode-steps", "40", "--optim-steps-rho1", "20",
    "--optim-steps", "20", "--finetune-ode-steps", "10", "--finetune-steps", "20", "--jobs", "2", "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_grid_local_pool_and_dask_cluster_agree(tmp_path):
    runner = CliRunner()
    local = runner.invoke(cli, ["grid", "run", *TINY, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    assert "5 computed, 0 already stored" in local.output
    dask = runner.invoke(cli, ["grid", "run", *TINY, "--out", str(tmp_path / "dask"), "--scheduler", "dask"])
    assert dask.exit_code == 0, dask.output
    table = compare_runs(tmp_path / "local", tmp_path / "dask")
    assert len(table) == 5 and table["identical"].all()  # numbers and parameters bit for bit
    res = runner.invoke(cli, ["grid", "compare", "--out", str(tmp_path / "local"), "--other", str(tmp_path / "dask")])
    assert res.exit_code == 0 and "identical" in res.output
    # the comparison can fail: a damaged unit file no longer counts
    next((tmp_path / "dask" / "units" / "student").rglob("*.npz")).write_bytes(b"garbled")
    res = runner.invoke(cli, ["grid", "compare", "--out", str(tmp_path / "local"), "--other", str(tmp_path / "dask")])
    assert res.exit_code == 1 and "1 units differ or are missing" in res.output
    assert (tmp_path / "dask" / "report" / "fig5b-reconstructions.png").exists()


def test_old_spellings_still_work_and_name_the_same_parameter(tmp_path):
    """`d_in` (config key and `--d-in`) and `activation` / `--activation` are aliases."""
    toml = tmp_path / "old.toml"
    toml.write_text('[grid]\nd_in = [2, 4]\nr = [2]\nactivation = "tanh"\n')
    cfg = resolve_config(toml)
    assert cfg["din"] == (2, 4) and cfg["act"] == "tanh"
    assert resolve_config(None, {"d_in": "8"})["din"] == (8,)
    result = CliRunner().invoke(cli, ["grid", "run", "--d-in", "0", "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "--din" in result.output
