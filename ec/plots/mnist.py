"""Figures of an ``ec mnist`` run: the pixel mask (paper Fig. A.4B), teacher vs reconstructed
neurons as images, per-neuron alignment (Fig. A.12) and the students' loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import save_png

Array = np.ndarray


def _image(vector: Array, image_shape) -> Array:
    """A flat input vector as an image: (H, W), or (H, W, 3) scaled to [0, 1] for colour."""
    img = np.asarray(vector, dtype=np.float64).reshape(image_shape)
    if img.ndim == 3:  # (C, H, W) -> (H, W, C), symmetric around 0.5
        scale = np.abs(img).max() or 1.0
        return 0.5 + 0.5 * img.transpose(1, 2, 0) / scale
    return img


def plot_mask(mask: Array, image_shape, path) -> Path:
    """The informative-pixel mask (yellow: used for clustering)."""
    fig, ax = plt.subplots(figsize=(2.6, 2.8))
    m = mask.reshape(image_shape)
    ax.imshow(m.any(axis=0) if m.ndim == 3 else m, vmin=0, vmax=1)
    ax.set_title(f"mask: {int(mask.sum())}/{mask.size} inputs", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_png(fig, path)


def plot_neuron_pairs(teacher, spec, theta, rows: list[dict], image_shape, path, max_neurons: int = 16) -> Path:
    """Input weights of matched teacher (top) and reconstructed (bottom) neurons as images."""
    Wt = teacher.spec.unpack(teacher.params)[0][0]
    Wr = spec.unpack(theta)[0][0]
    rows = rows[:max_neurons]
    k = max(len(rows), 1)
    fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 3.0), squeeze=False)
    for j, row in enumerate(rows):
        sign = -1.0 if row["flipped"] else 1.0
        for ax, w in ((axes[0, j], Wt[row["teacher"]]), (axes[1, j], sign * Wr[row["reconstructed"]])):
            lim = np.abs(w).max() or 1.0
            ax.imshow(_image(w, image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"t{row['teacher']}", fontsize=8)
        axes[1, j].set_title(f"d={row['cos_dist']:.1e}", fontsize=7)
    axes[0, 0].set_ylabel("teacher", fontsize=8)
    axes[1, 0].set_ylabel("reconstructed", fontsize=8)
    return save_png(fig, path)


def plot_alignment(rows: list[dict], path) -> Path:
    """Cosine distance of each teacher neuron to its match, teachers by output-weight norm."""
    rows = sorted(rows, key=lambda r: -r["a_teacher"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(rows)), 2.8))
    d = np.array([max(r["cos_dist"], 1e-17) for r in rows])
    colors = ["tab:red" if r["flipped"] else "tab:blue" for r in rows]
    ax.bar(np.arange(len(rows)), d, color=colors)
    ax.set_yscale("log")
    ax.set_xlabel("teacher neuron (by output-weight norm)")
    ax.set_ylabel("cosine distance")
    ax.set_title("alignment of matched neurons (red: opposite sign)", fontsize=9)
    return save_png(fig, path)


def plot_student_curves(students, path) -> Path:
    """Training loss of each student against wall time."""
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    for i, s in enumerate(students):
        c = np.asarray(s.loss_curve)
        if len(c):
            ax.plot(c[:, 0], c[:, 1], lw=1, label=f"student {i}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("training MSE")
    if len(students) <= 10:
        ax.legend(fontsize=7)
    return save_png(fig, path)
