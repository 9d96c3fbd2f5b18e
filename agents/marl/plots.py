"""Figures for the cooperation games: heatmaps of who chose / punished whom, and learning curves.

Every function returns a matplotlib ``Figure`` (Agg backend, never a window), which the runner
sends to TensorBoard (``SummaryWriter.add_figure``) and saves as PNG in the run folder.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def heatmap(matrix: np.ndarray, title: str, row_label: str, col_label: str) -> Figure:
    """An agents x agents count matrix with its values written in the cells (up to 12 agents)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=100)
    image = ax.imshow(matrix, cmap="viridis")
    n = matrix.shape[0]
    ticks = np.arange(n) if n <= 12 else np.arange(0, n, max(n // 10, 1))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    if n <= 12:
        top = matrix.max() if matrix.size else 0
        for i in range(n):
            for j in range(n):
                colour = "black" if matrix[i, j] > 0.6 * top else "white"
                ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing rolling mean along the last axis (shorter windows at the start)."""
    values = np.asarray(values, dtype=np.float64)
    csum = np.cumsum(values, axis=-1)
    out = csum.copy()
    out[..., window:] = csum[..., window:] - csum[..., :-window]
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    return out / counts


# Student t 0.975 quantiles for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student t's 0.975 quantile: the table to 30 degrees of freedom, then its Cornish-Fisher
    expansion around the normal's 1.96 (within 1e-4 of the exact value from 30 on)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def curves(series: dict[str, np.ndarray], title: str, ylabel: str, window: int = 20,
           ylim: tuple[float, float] | None = None) -> Figure:
    """One line per entry; an entry of shape (episodes,) is drawn as its rolling mean with a band of
    +-1.96 rolling std, an entry of shape (seeds, episodes) as the mean over seeds of the rolling
    mean with a 95% confidence band across seeds (Student t, as the study's tables)."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            mean = rolling_mean(values, window)
            spread = 1.96 * np.sqrt(np.maximum(rolling_mean(values ** 2, window) - mean ** 2, 0))
        else:
            smoothed = rolling_mean(values, window)
            mean = smoothed.mean(axis=0)
            spread = (t975(len(values) - 1) * smoothed.std(axis=0, ddof=1) / np.sqrt(len(values))
                      if len(values) > 1 else 0 * mean)
        x = np.arange(len(mean))
        ax.plot(x, mean, label=label, linewidth=1.4)
        ax.fill_between(x, mean - spread, mean + spread, alpha=0.2)
    ax.set_xlabel("episode")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path)
    plt.close(fig)
