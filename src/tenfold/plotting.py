"""Figures for experiments: a mean line with a band over seeds, saved as PNG into the run folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402


def band(ax, x, per_seed, label: str | None = None, color=None, spread: str = "std", **line_kwargs):
    """Plot the mean over seeds of ``per_seed`` (shaped (seeds, len(x))) with a shaded band.

    ``spread`` is ``"std"`` (mean ± one standard deviation) or ``"minmax"`` (the range over seeds).
    """
    values = np.asarray(per_seed, dtype=float)
    if values.ndim == 1:
        values = values[None]
    if values.shape[-1] != len(x):
        raise ValueError(f"per_seed must be shaped (seeds, {len(x)}), got {values.shape}")
    mean = np.nanmean(values, axis=0)
    if spread == "std":
        low, high = mean - np.nanstd(values, axis=0), mean + np.nanstd(values, axis=0)
    elif spread == "minmax":
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    else:
        raise ValueError(f"spread must be 'std' or 'minmax', got {spread!r}")
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kwargs)
    if values.shape[0] > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def plain_log_axis(axis, ticks=None) -> None:
    """Readable labels on a log-scaled ``axis`` (``ax.xaxis`` or ``ax.yaxis``): plain numbers at
    ``ticks`` (e.g. the measured x values) or at 1, 2, 3, 5 per decade, and no labels on minor ticks
    (which matplotlib adds, crowded and in 10^x notation, when the axis spans less than a decade)."""
    if ticks is not None:
        axis.set_major_locator(ticker.FixedLocator(list(ticks)))
        axis.set_minor_locator(ticker.NullLocator())
    else:
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    """A new figure with ``nrows x ncols`` axes of the given size each."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, (axes[0, 0] if axes.size == 1 else axes.ravel())


def save(fig, out_dir: Path, name: str) -> str:
    """Save ``fig`` as ``out_dir/name`` (PNG), close it, and return ``name`` for ``Evaluation.figures``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name
