"""Pictures of attention: which source position each output position read from; and of positions.

    attention_heatmap(weights, rows, columns, "attention.png")    one map as a PNG (matplotlib, no window needed)
    print(attention_table(weights, rows, columns))                the same numbers as a text table
    attention_grid([AttentionMaps(...), ...], "attention.png")    every layer and head of a model: a panel each
    print(attention_tables(weights, rows, columns))               a layer's heads as tables side by side
    with recorded_attention(modules) as recorded: model(...)      the weights of every head, as the model ran

``weights`` is one (rows, columns) map, e.g. a cross-attention (T, S): row t says how much output position t
took from each source position, and each row sums to 1.

    python -m stage3_transformer.plots positions --out positions.png

draws the position codes of exercise 3.3 (your ``F.sinusoidal_positions`` and ``F.rope_angles``): the
sinusoidal table, the rotary frequencies, and what the rotation does to a score as the distance grows.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no window and no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------- one map
def attention_heatmap(weights, rows: list[str], columns: list[str], path: str | Path, title: str = "",
                      xlabel: str = "source", ylabel: str = "output") -> Path:
    """Write ``weights`` (len(rows), len(columns)) as a heatmap PNG to ``path``, labelled with ``rows``
    (top to bottom) and ``columns`` (left to right), dark = little weight, bright = much. Returns the path."""
    plt = _pyplot()
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
    (``.`` below 0.05, ``#`` from 0.95), so a page shows where each row looks. A column is headed by the
    first character of its label."""
    weights = np.asarray(weights, dtype=np.float64)
    _check(weights, rows, columns)
    label_width = max((len(r) for r in rows), default=0)
    lines = [" " * (label_width + 1) + " ".join(c[:1] or " " for c in columns)]
    for label, row in zip(rows, weights):
        tenths = np.rint(row * 10).astype(int)
        cells = ["." if t == 0 else "#" if t >= 10 else str(t) for t in tenths]
        lines.append(f"{label:>{label_width}} " + " ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------- every layer and head
class AttentionMaps(NamedTuple):
    """One kind of attention in a model, at every layer and head: ``weights`` (layers, heads, len(rows),
    len(columns)), e.g. a decoder's cross-attention, whose rows are the positions that write and whose columns
    are the source's tokens. ``name`` heads its panels in ``attention_grid``."""

    name: str
    weights: np.ndarray
    rows: list[str]
    columns: list[str]
    xlabel: str = "source"
    ylabel: str = "output"


def attention_grid(maps: AttentionMaps | Sequence[AttentionMaps], path: str | Path, title: str = "") -> Path:
    """Write one PNG with a heatmap per layer and head: for each ``AttentionMaps`` a block of panels, a row of
    panels per layer and a column per head, each labelled like ``attention_heatmap`` (same colours: 0 dark,
    1 bright). Blocks are stacked top to bottom in the order given. Returns the path."""
    plt = _pyplot()
    maps = [maps] if isinstance(maps, AttentionMaps) else list(maps)
    for block in maps:
        if np.ndim(block.weights) != 4:
            raise ValueError(f"{block.name}: weights must be (layers, heads, rows, columns), got shape "
                             f"{np.shape(block.weights)}")
        _check(np.asarray(block.weights)[0, 0], block.rows, block.columns)
    heads = max(np.shape(block.weights)[1] for block in maps)
    # Inches per cell, so that a label fits beside each row and under each column.
    panel_width = max(np.shape(block.weights)[3] for block in maps) * 0.24 + 0.5
    heights = [np.shape(block.weights)[0] * (np.shape(block.weights)[2] * 0.24 + 0.75) + 0.6 for block in maps]
    figure = plt.figure(figsize=(heads * panel_width + 1.4, sum(heights) + (0.4 if title else 0.0)),
                        layout="constrained")
    if title:
        figure.suptitle(title, fontsize=9)
    blocks = figure.subfigures(len(maps), 1, height_ratios=heights, squeeze=False)[:, 0]
    for block, subfigure in zip(maps, blocks):
        weights = np.asarray(block.weights, dtype=np.float64)
        layers, block_heads = weights.shape[:2]
        axes = subfigure.subplots(layers, heads, squeeze=False, sharex=True, sharey=True)
        subfigure.suptitle(block.name, fontsize=9, fontweight="bold")
        image = None
        for layer in range(layers):
            for head in range(heads):
                panel = axes[layer, head]
                if head >= block_heads:
                    panel.set_visible(False)
                    continue
                image = panel.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
                panel.set_title(f"layer {layer}, head {head}", fontsize=7)
                panel.set_xticks(range(len(block.columns)), block.columns, fontsize=7)
                panel.set_yticks(range(len(block.rows)), block.rows, fontsize=7)
                panel.tick_params(length=0, labelbottom=layer == layers - 1)
        subfigure.supxlabel(block.xlabel, fontsize=8)
        subfigure.supylabel(block.ylabel, fontsize=8)
        subfigure.colorbar(image, ax=axes, fraction=0.04 if heads > 1 else 0.08, pad=0.02)
    path = Path(path)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def attention_tables(weights, rows: list[str], columns: list[str], names: Sequence[str] | None = None,
                     gap: int = 4) -> str:
    """The ``attention_table`` of each map of ``weights`` (heads, len(rows), len(columns)), side by side, under
    a line of ``names`` (default ``head 0``, ``head 1``, ...): a layer's heads on one screen."""
    weights = np.asarray(weights, dtype=np.float64)
    names = [f"head {h}" for h in range(len(weights))] if names is None else list(names)
    if len(names) != len(weights):
        raise ValueError(f"{len(weights)} maps need {len(weights)} names, got {len(names)}")
    tables = [[name, *attention_table(w, rows, columns).split("\n")] for name, w in zip(names, weights)]
    width = max(len(line) for table in tables for line in table)
    return "\n".join((" " * gap).join(line.ljust(width) for line in lines).rstrip() for lines in zip(*tables))


@contextlib.contextmanager
def recorded_attention(modules: Sequence) -> Iterator[list[np.ndarray]]:
    """While inside, every call of one of ``modules`` (``nn.MultiheadAttention`` layers) also records its
    attention weights of every head: a (B, heads, L, S) array appended to the list this yields, in the order
    of the calls. The callers get what they asked for as before (a layer that calls with
    ``need_weights=False`` still gets None), so the model runs unchanged.

        with recorded_attention([layer.multihead_attn for layer in model.transformer.decoder.layers]) as maps:
            model.decode(decoder_input, memory, source)      # maps: one (B, heads, T, S) array per layer
    """
    recorded: list[np.ndarray] = []

    def recording(forward):
        def forward_with_weights(*args, need_weights: bool = True, average_attn_weights: bool = True, **kwargs):
            out, weights = forward(*args, need_weights=True, average_attn_weights=False, **kwargs)
            recorded.append(np.array(weights.data))
            if not need_weights:
                return out, None
            return out, weights.mean(axis=-3) if average_attn_weights else weights
        return forward_with_weights

    # An attribute on the instance comes before the class's method: Module.__call__ then runs the recording.
    try:
        for module in modules:
            module.forward = recording(module.forward)
        yield recorded
    finally:
        for module in modules:
            vars(module).pop("forward", None)  # the class's forward again


# ---------------------------------------------------------------------- positions (exercise 3.3)
def positions_figure(path: str | Path, length: int = 64, dim: int = 64, head_dim: int = 32,
                     theta: float = 10000.0) -> Path:
    """Three panels, from ``F.sinusoidal_positions`` and ``F.rope_angles``: the sinusoidal table (length, dim);
    the angle by which RoPE turns each pair of a head's features per position, and its wavelength; and the
    score of a query with an identical key as the distance between them grows (with every pair of the head
    equal, the sum of cos(distance * w_i), divided by the number of pairs). Returns the path."""
    from stage3_transformer import functional as F

    table = F.sinusoidal_positions(length, dim).data  # (length, dim)
    cos, sin = F.rope_angles(np.array([1]), head_dim, theta)  # the angles of position 1: one step's turn
    frequencies = np.arctan2(sin[0], cos[0])  # (head_dim/2,) radians per position, all in (0, 1]
    distances = np.arange(4 * length)
    cos_by_distance, _ = F.rope_angles(distances, head_dim, theta)  # (distances, head_dim/2)

    plt = _pyplot()
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained",
                                                 gridspec_kw={"width_ratios": [1.2, 1, 1]})
    image = left.imshow(table, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    left.set_title(f"sinusoidal positions: P ({length} x {dim})", fontsize=9)
    left.set_xlabel("feature (even: sin, odd: cos; the pairs turn slower to the right)", fontsize=8)
    left.set_ylabel("position p", fontsize=8)
    figure.colorbar(image, ax=left, fraction=0.05, pad=0.02)

    pairs = np.arange(len(frequencies))
    middle.semilogy(pairs, frequencies, "o-", markersize=3)
    middle.set_title(f"RoPE: turn of pair i per position (head_dim {head_dim})", fontsize=9)
    middle.set_xlabel("pair i of a head's features", fontsize=8)
    middle.set_ylabel(f"w_i = {theta:g}^(-2i/{head_dim}), radians", fontsize=8)
    def turn_length(w):  # radians per position <-> positions per turn; matplotlib also asks about 0
        return 2 * np.pi / np.maximum(w, 1e-12)

    wavelength = middle.secondary_yaxis("right", functions=(turn_length, turn_length))
    wavelength.set_ylabel("positions per full turn, 2 pi / w_i", fontsize=8)
    wavelength.tick_params(labelsize=7)
    middle.grid(True, which="major", alpha=0.3)

    right.plot(distances, cos_by_distance.mean(axis=1))
    right.axhline(0.0, color="grey", lw=0.5)
    right.set_title("RoPE: a query with the same key, by distance", fontsize=9)
    right.set_xlabel("distance m - n between query and key (positions)", fontsize=8)
    right.set_ylabel("mean over pairs of cos((m - n) w_i)", fontsize=8)
    for axes in (left, middle, right):
        axes.tick_params(labelsize=7)
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _check(weights: np.ndarray, rows: list[str], columns: list[str]) -> None:
    if weights.shape != (len(rows), len(columns)):
        raise ValueError(f"attention weights of shape {weights.shape} need {weights.shape[0]} row labels and "
                         f"{weights.shape[1] if weights.ndim == 2 else '?'} column labels, got {len(rows)} and "
                         f"{len(columns)}")


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``positions``: write the figure of the position codes; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stage3_transformer.plots", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{positions}")
    positions = commands.add_parser("positions", help="the sinusoidal table and RoPE's frequencies, as a PNG")
    positions.add_argument("--out", default="positions.png", help="the PNG to write (default: %(default)s)")
    positions.add_argument("--length", type=int, default=64, help="positions in the table (default: %(default)s)")
    positions.add_argument("--dim", type=int, default=64, help="width of the sinusoidal table (default: %(default)s)")
    positions.add_argument("--head-dim", type=int, default=32, help="features of one head, for RoPE "
                                                                    "(default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("length", "dim", "head_dim"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2, got {getattr(args, name)}")
    try:
        path = positions_figure(args.out, args.length, args.dim, args.head_dim)
    except NotImplementedError as error:
        print(f"The figure is drawn by your code of exercise 3.3, which is not written yet ({error}).")
        return 1
    except ValueError as error:  # an odd width: the functions of 3.3 say which
        parser.error(str(error))
    except OSError as error:  # a folder that does not exist, a file that may not be written
        print(f"Cannot write the figure to {args.out}: {error.strerror or error}")
        return 1
    print(f"positions: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
