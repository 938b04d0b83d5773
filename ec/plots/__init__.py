"""Figures (PNG, matplotlib's non-interactive Agg backend).

Importing this package selects Agg, so plotting works on machines without a display;
modules below it (e.g. :mod:`ec.plots.synth`) then import ``matplotlib.pyplot``.
"""

import matplotlib

matplotlib.use("Agg")
