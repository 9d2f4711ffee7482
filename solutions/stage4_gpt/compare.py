"""Compare training runs: ``python -m stage4_gpt.compare RUN_DIR RUN_DIR ... [--out compare.png]``.

    python -m stage4_gpt.train --out runs/base
    python -m stage4_gpt.train --out runs/no-pos --pos none
    python -m stage4_gpt.compare runs/base runs/no-pos --out compare.png

Each run folder holds the ``curve.csv`` that ``python -m stage4_gpt.train --out RUN_DIR`` writes (one row per
evaluation: step, train_loss, val_loss, elapsed_seconds). This prints one line per run (its final and best
validation loss, its steps and its time) and, with ``--out``, draws the validation curves of every run in
one plot: the lesson's Experiments section is read off these.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from stage4_gpt.train import CURVE_NAME, read_curve


def load_runs(folders: list[str]) -> dict[str, list[dict[str, float]]]:
    """Each folder's name -> the rows of its curve.csv. A folder without one is a ValueError in one line."""
    runs = {}
    for folder in folders:
        path = Path(folder) / CURVE_NAME
        if not path.is_file():
            raise ValueError(f"{folder} has no {CURVE_NAME}: give the folders that python -m stage4_gpt.train "
                             f"--out FOLDER wrote")
        rows = read_curve(path)
        if not rows:
            raise ValueError(f"{path} has no evaluations yet")
        runs[label_of(folder, runs)] = rows
    return runs


def label_of(folder: str, taken) -> str:
    """The run's name in the table and the legend: its folder's name, or the whole path if that is taken."""
    name = Path(folder).name or str(folder)
    return str(folder) if name in taken else name


def summary_table(runs: dict[str, list[dict[str, float]]]) -> str:
    """One line per run: final val loss, best val loss, steps and time (elapsed seconds at the last row)."""
    width = max(len("run"), *(len(name) for name in runs))
    lines = [f"{'run':<{width}}  final val  best val  steps   time"]
    for name, rows in runs.items():
        losses = [row["val_loss"] for row in rows if not math.isnan(row["val_loss"])]
        best = min(losses) if losses else math.nan
        last = rows[-1]
        lines.append(f"{name:<{width}}  {last['val_loss']:9.4f}  {best:8.4f}  {last['step']:5d}  "
                     f"{format_seconds(last['elapsed_seconds']):>5}")
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def plot_runs(runs: dict[str, list[dict[str, float]]], path) -> None:
    """The validation loss of every run against the step, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, rows in runs.items():
        axes.plot([row["step"] for row in rows], [row["val_loss"] for row in rows], "o-", ms=3, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("validation loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stage4_gpt.compare",
                                     description="Compare the validation curves of training runs.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="folders written by python -m stage4_gpt.train --out")
    parser.add_argument("--out", metavar="PNG", help="also draw the validation curves into this image")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_table(runs))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        plot_runs(runs, args.out)
        print(f"validation curves: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
