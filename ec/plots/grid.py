"""Figures of the teacher grid: Fig. 4B/C (students' final loss) and Fig. 5B (loss after
Expand-and-Cluster), one row of dots per teacher, colour = log10 of the loss.

Cells ``(d, r)`` are laid out as in the paper: input dimension ``d`` along x, teacher width
``r`` along y; inside a cell, one row per teacher and one dot per student seed (Fig. 4) or
per rho (Fig. 5B). Dark blue is at or below the zero-loss threshold, yellow is high loss;
missing (pending or failed) units are drawn as hollow grey circles.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from . import save_png  # noqa: E402

LOG_FLOOR = -16.0  # log10 loss shown at the bottom of the colour scale
CMAP = "viridis"
_GAP = 1.5  # blank columns / rows between cells


def _log_values(values: pd.Series) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.maximum(v, 10.0**LOG_FLOOR))
    return out


def _positions(df: pd.DataFrame, cfg: dict, col: str, n_cols: int):
    """x: cell column (by d) plus ``df[col]``; y: cell row (by r) plus teacher row (first on top)."""
    ds, rs, nt = list(cfg["din"]), list(cfg["r"]), cfg["n_teachers"]
    x = df["d"].map(ds.index) * (n_cols + _GAP) + df[col]
    y = df["r"].map(rs.index) * (nt + _GAP) + (nt - 1 - df["teacher"])
    return x, y


def _panel_size(cfg: dict, n_cols: int) -> tuple[float, float]:
    """Inches of one panel: about 0.07 in per dot column and 0.13 in per teacher row."""
    cols = len(cfg["din"]) * (n_cols + _GAP)
    rows = len(cfg["r"]) * (cfg["n_teachers"] + _GAP)
    return float(np.clip(0.07 * cols, 2.5, 8.0)), float(np.clip(0.13 * rows, 2.0, 5.0))


def _marker_area(cfg: dict, n_cols: int, size: tuple[float, float]) -> float:
    """Marker area (points^2) that fills most of one dot's cell of the panel."""
    cols = len(cfg["din"]) * (n_cols + _GAP)
    rows = len(cfg["r"]) * (cfg["n_teachers"] + _GAP)
    side = 0.8 * min(72 * size[0] / cols, 72 * size[1] / rows)
    return side * side


def _dot_panel(ax, df: pd.DataFrame, cfg: dict, col: str, value: str, n_cols: int, norm, size):
    """Scatter ``df`` on one axis: cell (d, r) blocks, teacher rows, ``col`` columns."""
    ds, rs, nt = list(cfg["din"]), list(cfg["r"]), cfg["n_teachers"]
    width, height = n_cols + _GAP, nt + _GAP
    marker_size = _marker_area(cfg, n_cols, size)
    x, y = _positions(df, cfg, col, n_cols)
    val = _log_values(df[value]) if value in df else np.full(len(df), np.nan)
    ok = np.isfinite(val)
    sc = ax.scatter(x[ok], y[ok], c=val[ok], cmap=CMAP, norm=norm, s=marker_size, marker="s", linewidths=0)
    ax.scatter(x[~ok], y[~ok], s=marker_size, facecolors="none", edgecolors="0.6", linewidths=0.5)
    ax.set_xticks([i * width + (n_cols - 1) / 2 for i in range(len(ds))], [str(d) for d in ds])
    ax.set_yticks([j * height + (nt - 1) / 2 for j in range(len(rs))], [str(r) for r in rs])
    ax.set_xlim(-1, len(ds) * width - _GAP)
    ax.set_ylim(-1, len(rs) * height - _GAP)
    ax.set_xlabel("input dimension d")
    ax.set_ylabel("teacher width r")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return sc


def _colourbar(fig, sc, axes, label):
    cb = fig.colorbar(sc, ax=axes, shrink=0.8, pad=0.02)
    cb.set_label(label)


def plot_students(students: pd.DataFrame, rhos, cfg: dict, path) -> Path:
    """Fig. 4B (``rhos=[1]``) / 4C: final training loss of every student, one panel per rho.

    Parameters
    ----------
    students : DataFrame
        Columns ``d, r, teacher, rho, student, status, loss`` (:func:`ec.grid.students_frame`).
    rhos : list of int
    cfg : dict
        The grid config (cell layout, ``n_teachers``, ``zero_loss``).
    path : path of the PNG
    """
    norm = Normalize(np.log10(cfg["zero_loss"]), 0.0)
    n_cols = max(cfg["n_students"], cfg["n_students_wide"])
    size = _panel_size(cfg, n_cols)
    fig, axes = plt.subplots(1, len(rhos), figsize=(1.5 + (size[0] + 0.8) * len(rhos), size[1] + 1.0), squeeze=False)
    sc = None
    for ax, rho in zip(axes[0], rhos):
        df = students[students["rho"] == rho].copy()
        if "loss" in df:
            df.loc[df["status"] != "done", "loss"] = np.nan
        sc = _dot_panel(ax, df, cfg, "student", "loss", n_cols, norm, size)
        ax.set_title(f"students, rho = {rho} (m = {rho}r)")
    _colourbar(fig, sc, axes[0].tolist(), f"log10 training loss (<= {np.log10(cfg['zero_loss']):.0f}: zero loss)")
    return save_png(fig, path, dpi=130)


def plot_reconstructions(recon: pd.DataFrame, cfg: dict, path) -> Path:
    """Fig. 5B: test RMSE after Expand-and-Cluster, one short bar per (teacher, rho);
    a red outline marks a reconstruction of the wrong width (m̂ != r)."""
    rhos = list(cfg["reconstruct_rho"])
    norm = Normalize(np.log10(cfg["recovered_rmse"]), 0.0)
    df = recon.copy()
    df["slot"] = df["rho"].map(rhos.index)
    if "test_rmse" in df:
        df.loc[df["status"] != "done", "test_rmse"] = np.nan
    size = _panel_size(cfg, len(rhos))
    size = (max(size[0], 3.0), size[1])
    fig, ax = plt.subplots(figsize=(size[0] + 2.0, size[1] + 1.0))
    sc = _dot_panel(ax, df, cfg, "slot", "test_rmse", len(rhos), norm, size)
    if "m_hat" in df:
        wrong = df[(df["status"] == "done") & (df["m_hat"] != df["r"])]
        x, y = _positions(wrong, cfg, "slot", len(rhos))
        area = _marker_area(cfg, len(rhos), size)
        ax.scatter(x, y, s=area, marker="s", facecolors="none", edgecolors="red", linewidths=1.2)
    ax.set_title(f"after Expand-and-Cluster, rho = {', '.join(map(str, rhos))}\n(red outline: wrong width m̂ != r)")
    _colourbar(fig, sc, ax, f"log10 test RMSE (<= {np.log10(cfg['recovered_rmse']):.0f}: recovered)")
    return save_png(fig, path, dpi=130)
