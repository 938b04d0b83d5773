"""Fig. 4A: contour plot of a teacher with two inputs, with its hidden neurons' hyperplanes.

Each hidden neuron ``i`` defines the line ``w_i . x + b_i = 0`` (dashed); an arrow starting
on the line points along ``w_i`` (the side where the neuron is active), coloured by the
sign of its output weight ``a_i`` (red: positive, blue: negative).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..queries.uniform import INPUT_HALF_WIDTH  # noqa: E402
from ..teachers import Teacher  # noqa: E402
from . import save_png  # noqa: E402

SIGN_COLOURS = {1.0: "tab:red", -1.0: "tab:blue"}


def _line_in_box(w, b, half):
    """End points of ``w . x + b = 0`` clipped to the square ``[-half, half]^2`` (or None)."""
    pts = []
    for t in (-half, half):
        if abs(w[1]) > 1e-12:  # x = t, solve for y
            y = -(b + w[0] * t) / w[1]
            if -half <= y <= half:
                pts.append((t, y))
        if abs(w[0]) > 1e-12:  # y = t, solve for x
            x = -(b + w[1] * t) / w[0]
            if -half <= x <= half:
                pts.append((x, t))
    pts = np.unique(np.round(pts, 12), axis=0) if pts else np.zeros((0, 2))
    return (pts[0], pts[-1]) if len(pts) >= 2 else None


def draw_teacher(ax, teacher: Teacher, resolution: int = 200, title: str | None = None):
    """Draw a ``2-r-1`` teacher's output contours, hyperplanes and arrows on ``ax``."""
    spec = teacher.spec
    if spec.d_in != 2 or spec.n_layers != 2 or spec.d_out != 1:
        raise ValueError(f"the teacher plot needs a 2-r-1 network; got layer sizes {spec.layer_sizes}")
    half = INPUT_HALF_WIDTH
    g = np.linspace(-half, half, resolution)
    xx, yy = np.meshgrid(g, g)
    z = teacher.predict(np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
    cs = ax.contourf(xx, yy, z, levels=20, cmap="Greys")
    ax.contour(xx, yy, z, levels=20, colors="k", linewidths=0.3, alpha=0.5)
    (W, b), (A, _) = spec.unpack(teacher.params)
    for w, bi, a in zip(W, b, A[0]):
        colour = SIGN_COLOURS[float(np.sign(a)) or 1.0]
        seg = _line_in_box(w, bi, half)
        if seg is None:
            continue  # the hyperplane misses the input square
        (x0, y0), (x1, y1) = seg
        ax.plot([x0, x1], [y0, y1], ls="--", color=colour, lw=1.2)
        mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        step = 0.35 * w / np.linalg.norm(w)
        ax.annotate("", xy=mid + step, xytext=mid, arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5})
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"r = {spec.hidden_sizes[0]}, seed {teacher.seed}", fontsize=9)
    return cs


def plot_teachers(teachers: list[Teacher], path, titles: list[str] | None = None) -> Path:
    """One panel per teacher, left to right (the paper's Fig. 4A: r = 2, 4, 8)."""
    fig, axes = plt.subplots(1, len(teachers), figsize=(3.0 * len(teachers), 3.2), squeeze=False)
    for i, (ax, t) in enumerate(zip(axes[0], teachers)):
        draw_teacher(ax, t, title=titles[i] if titles else None)
    handles = [plt.Line2D([], [], color=c, ls="--", label=f"a {'> 0' if s > 0 else '< 0'}") for s, c in SIGN_COLOURS.items()]
    fig.subplots_adjust(bottom=0.14)
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return save_png(fig, path, dpi=130)
