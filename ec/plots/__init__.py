"""Figures (PNG, matplotlib's non-interactive Agg backend).

Importing this package selects Agg, so plotting works on machines without a display;
modules below it (e.g. :mod:`ec.plots.synth`) then import ``matplotlib.pyplot``.
"""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")


def save_png(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically (a figure is never half written), and close it."""
    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
