"""Figures of one reconstruction: the students' similarity matrix and the dendrogram with
the chosen cut (paper Fig. 3B/C), and the alignment of reconstructed vs teacher neurons
(paper Fig. A.12)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # ec/plots/__init__.py, imported first, selected Agg
import numpy as np
from matplotlib.colors import LogNorm
from scipy.cluster.hierarchy import dendrogram
from scipy.spatial.distance import squareform

from ..cluster import LayerClusters
from . import save_png

KEPT, SMALL, UNALIGNED, ABOVE = "tab:green", "tab:blue", "tab:red", "0.6"
# Above this many neurons the similarity image shows every k-th neuron only.
_MAX_IMAGE = 2000
_FLOOR = 1e-17  # log axes: exact zeros are drawn at this value


def _status_colour(clusters: LayerClusters, label: int) -> str:
    if label in clusters.kept:
        return KEPT
    return UNALIGNED if clusters.rejected.get(label) == "unaligned" else SMALL


def plot_dendrogram(clusters: LayerClusters, path: str | Path, title: str = "") -> Path:
    """Average-linkage dendrogram, links coloured by the fate of their cluster, cut in orange."""
    Z, n = clusters.linkage, len(clusters.labels)
    first_leaf = np.arange(2 * n - 1)
    for k in range(n - 1):
        first_leaf[n + k] = first_leaf[int(Z[k, 0])]

    def colour(node: int) -> str:
        if node - n > clusters.cut_index:
            return ABOVE
        return _status_colour(clusters, int(clusters.labels[first_leaf[node]]))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    # log heights: duplicates merge at ~1e-15, stray neurons (zero output weight, huge [w; b])
    # at 1e4; on a linear axis the second hide the first
    Z = Z.copy()
    Z[:, 2] = np.maximum(Z[:, 2], _FLOOR)
    dendrogram(Z, ax=ax, link_color_func=colour, no_labels=True, count_sort="descending")
    ax.set_yscale("log")
    ax.set_ylim(_FLOOR / 3, 3 * Z[:, 2].max())
    ax.axhline(clusters.cut_height, color="tab:orange", ls="--", lw=1.2, label=f"cut h = {clusters.cut_height:.3g}")
    for c, lab in ((KEPT, "kept"), (SMALL, f"small (< {clusters.min_size})"), (UNALIGNED, "unaligned")):
        ax.plot([], [], color=c, label=lab)
    ax.set_ylabel(f"{clusters.metric} distance" + (" (up to sign)" if clusters.sign_invariant else "")
                  + f", 0 drawn at {_FLOOR:.0e}")
    ax.set_xlabel(f"{n} student neurons")
    pruned = len(clusters.info.get("pruned", []))  # constant/zero-type clusters folded after the cut
    kept = f"{clusters.n_kept} clusters kept" + (f", {pruned} of them folded into the bias" if pruned else "")
    ax.set_title(title or f"{kept} (gamma={clusters.gamma:g}, beta={clusters.beta:.3g} rad)")
    ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path)


def plot_similarity(clusters: LayerClusters, path: str | Path, title: str = "") -> Path:
    """Pairwise distances between all student neurons, in dendrogram order; kept clusters boxed."""
    n = len(clusters.labels)
    order = dendrogram(clusters.linkage, no_plot=True, count_sort="descending")["leaves"]
    order = np.asarray(order)
    step = max(1, int(np.ceil(n / _MAX_IMAGE)))
    shown = order[::step]
    D = squareform(clusters.distances())[np.ix_(shown, shown)]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    # Log colours: duplicates sit many decades closer than distinct neurons.
    positive = D[D > 0]
    lo = max(positive.min(), _FLOOR) if positive.size else _FLOOR
    hi = max(D.max(), 10 * lo)
    im = ax.imshow(np.maximum(D, lo), cmap="OrRd_r", interpolation="nearest", norm=LogNorm(vmin=lo, vmax=hi))
    fig.colorbar(im, ax=ax, label=f"{clusters.metric} distance")
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    for c in clusters.kept:
        p = pos[clusters.labels == c] / step
        lo, hi = p.min() - 0.5, p.max() + 0.5
        ax.add_patch(plt.Rectangle((lo, lo), hi - lo, hi - lo, fill=False, ec=KEPT, lw=1.2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"student neurons ({n}" + (f", every {step}th" if step > 1 else "") + ")")
    return save_png(fig, path)


def plot_alignment(rows: list[dict], path: str | Path, excess: int = 0, title: str = "") -> Path:
    """Per teacher neuron: cosine distance of ``[w; b]`` and output-weight distance to its
    matched reconstructed neuron (log scale; red: matched with the opposite sign)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    idx = np.array([r["teacher"] for r in rows])
    colours = [UNALIGNED if r["flipped"] else "tab:blue" for r in rows]
    for ax, key, label in ((axes[0], "cos_dist", "cosine distance of [w; b]"), (axes[1], "a_dist", "|a - a*|")):
        vals = np.maximum([r[key] for r in rows], _FLOOR)
        ax.bar(idx, vals, color=colours)
        ax.set_yscale("log")
        ax.set_xlabel("teacher neuron")
        ax.set_ylabel(f"{label} (0 drawn at {_FLOOR:.0e})")
        ax.set_xticks(idx)
    fig.suptitle(title or f"{len(rows)} matched neurons, {excess} in excess")
    return save_png(fig, path)
