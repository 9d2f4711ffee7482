"""Pictures of attention: which source position each output position read from.

    attention_heatmap(weights, rows, columns, "attention.png")    a PNG (matplotlib, no window needed)
    print(attention_table(weights, rows, columns))                the same numbers as a text table

``weights`` is one (rows, columns) map, e.g. a cross-attention (T, S) averaged over heads: row t says how
much output position t took from each source position, and each row sums to 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def attention_heatmap(weights, rows: list[str], columns: list[str], path: str | Path, title: str = "",
                      xlabel: str = "source", ylabel: str = "output") -> Path:
    """Write ``weights`` (len(rows), len(columns)) as a heatmap PNG to ``path``, labelled with ``rows``
    (top to bottom) and ``columns`` (left to right), dark = little weight, bright = much. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    weights = np.asarray(weights, dtype=np.float64)
    _check(weights, rows, columns)
    height, width = weights.shape
    figure, axes = plt.subplots(figsize=(max(4.0, 0.28 * width + 2.5), max(3.0, 0.28 * height + 1.8)))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(width), columns, fontsize=8)
    axes.set_yticks(range(height), rows, fontsize=8)
    axes.xaxis.tick_top()
    axes.set_xlabel(xlabel)
    axes.xaxis.set_label_position("top")
    axes.set_ylabel(ylabel)
    if title:
        figure.suptitle(title, fontsize=9, y=0.02, va="bottom")
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def attention_table(weights, rows: list[str], columns: list[str]) -> str:
    """``weights`` as text: a row per output position, a column per source position, each weight in tenths
    (``.`` below 0.05, ``#`` from 0.95), so a page shows where each row looks."""
    weights = np.asarray(weights, dtype=np.float64)
    _check(weights, rows, columns)
    label_width = max((len(r) for r in rows), default=0)
    lines = [" " * (label_width + 1) + " ".join(c[:1] or " " for c in columns)]
    for label, row in zip(rows, weights):
        tenths = np.rint(row * 10).astype(int)
        cells = ["." if t == 0 else "#" if t >= 10 else str(t) for t in tenths]
        lines.append(f"{label:>{label_width}} " + " ".join(cells))
    return "\n".join(lines)


def _check(weights: np.ndarray, rows: list[str], columns: list[str]) -> None:
    if weights.shape != (len(rows), len(columns)):
        raise ValueError(f"attention weights of shape {weights.shape} need {weights.shape[0]} row labels and "
                         f"{weights.shape[1] if weights.ndim == 2 else '?'} column labels, got {len(rows)} and "
                         f"{len(columns)}")
