"""Training runs side by side against agent steps, from their CSVs: validation means, the mean
raw score of the training games (over the last 250,000 steps), and the policy's entropy.

    python benchmarks/plot_runs.py benchmarks/atari/pong_*.csv --title "Pong" --out benchmarks/atari/pong.png

Each run is labelled with its CSV's name. For recipe runs compared at equal agent steps, not
equal wall time (the machine's speed varies from day to day).
"""
import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """(agent steps, value) of each kind of row."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    return {name: [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]
            for name in ("eval_mean", "train_return", "entropy")}


def moving_mean(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """At each point, the mean of the points in the `window` steps up to it."""
    out, start, total = [], 0, 0.0
    for i, (step, value) in enumerate(points):
        total += value
        while points[start][0] <= step - window:
            total -= points[start][1]
            start += 1
        out.append((step, total / (i - start + 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csvs", nargs="+", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for path in args.csvs:
        series = read(path)
        label = path.stem
        for ax, points, style in ((axes[0], series["eval_mean"], "o-"),
                                  (axes[1], moving_mean(series["train_return"], 250_000), "-"),
                                  (axes[2], series["entropy"], "-")):
            ax.plot([p[0] / 1e6 for p in points], [p[1] for p in points], style, ms=3, lw=1, label=label)
    titles = ("validation mean (raw score)", "training games, mean over 250k steps (raw score)",
              "policy entropy (nats)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("agent steps (millions)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(args.title)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.13, top=0.85, wspace=0.25)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
