"""Figures for runs and sweeps, drawn headless (Agg) so Ray workers and CI need no display.

Every function returns a matplotlib Figure; `save_figure` (or RunLogger.log_figure) writes it and closes it,
so long runs do not accumulate open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on workers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ARC_COLORS = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 light blue
    "#870C25",  # 9 maroon
)
# PAD / OUTSIDE (10) cells of a canvas, should one be drawn, show as white rather than as a colour.
ARC_CMAP = ListedColormap(ARC_COLORS, name="arc").with_extremes(over="#FFFFFF")
ARC_NORM = BoundaryNorm(np.arange(-0.5, 10.5, 1.0), ARC_CMAP.N)  # colour c is exactly ARC_COLORS[c]
_ACCURACY_WORDS = ("acc", "pass", "exact", "correct", "solved")


def draw_grid(ax: Any, grid: np.ndarray | None, title: str = "") -> None:
    """One ARC grid in the palette, with thin cell lines and no ticks; None or empty reads 'no grid'."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if grid is None or np.asarray(grid).size == 0:
        ax.text(0.5, 0.5, "no grid", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        return
    grid = np.atleast_2d(np.asarray(grid))
    h, w = grid.shape
    ax.imshow(grid, cmap=ARC_CMAP, norm=ARC_NORM, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, w, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1.0), minor=True)
    ax.grid(which="minor", color="#555555", linewidth=0.5)
    ax.tick_params(which="minor", length=0)


def _metric_group(key: str) -> str:
    lowered = key.lower()
    if "loss" in lowered:
        return "loss"
    return "accuracy" if any(word in lowered for word in _ACCURACY_WORDS) else "other"


def plot_learning_curves(
    history: dict[str, list[tuple[int, float]]], keys: list[str] | None = None, title: str = ""
) -> Figure:
    """One subplot per group of keys (loss-like, accuracy-like, the rest); x is the epoch."""
    keys = [k for k in (keys if keys is not None else sorted(history)) if history.get(k)]
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(_metric_group(key), []).append(key)
    names = [g for g in ("loss", "accuracy", "other") if g in groups] or ["no data"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        for key in groups.get(name, []):
            steps, values = zip(*sorted(history[key]), strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=key)
        if name in groups:
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_predictions(rows: list[dict[str, Any]]) -> Figure:
    """Per row: query input | target | prediction, titled with the task id and a tick or a cross."""
    fig, axes = plt.subplots(max(len(rows), 1), 3, figsize=(7.5, 2.6 * max(len(rows), 1)), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=False):
        mark = "\u2713" if row.get("correct") else "\u2717"
        draw_grid(ax_row[0], row.get("query_input"), f"{row.get('task_id', '?')} input")
        draw_grid(ax_row[1], row.get("target"), "target")
        draw_grid(ax_row[2], row.get("prediction"), f"prediction {mark}")
    if not rows:
        for ax in axes[0]:
            draw_grid(ax, None)
    fig.tight_layout()
    return fig


def plot_attention(query_input: np.ndarray, attention_maps: np.ndarray, centroids: np.ndarray) -> Figure:
    """The query grid, then one heat-map per clue, each centroid marked: (row, col) in cells."""
    maps = np.asarray(attention_maps, dtype=float)
    points = np.asarray(centroids, dtype=float).reshape(-1, 2)
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.4 * (len(maps) + 1), 2.6), squeeze=False)
    draw_grid(axes[0, 0], query_input, "query")
    for k, (ax, heat) in enumerate(zip(axes[0, 1:], maps, strict=True)):
        ax.imshow(heat, cmap="viridis", interpolation="nearest")
        if k < len(points):
            ax.plot(points[k, 1], points[k, 0], "r+", markersize=10, markeredgewidth=2)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"clue {k}", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write fig as PNG (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)  # our figures are laid out tight already
    plt.close(fig)
    return path
