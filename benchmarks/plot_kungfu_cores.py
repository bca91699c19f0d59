"""The feed-forward and the LSTM KungFuMaster agents side by side: validation mean (8 sampled
games each) against wall time and against frames, from two training CSVs of a3c_kungfu.py.

    python benchmarks/plot_kungfu_cores.py benchmarks/kungfu/ff_2h.csv benchmarks/kungfu/lstm_2h.csv \\
        --out benchmarks/kungfu/cores.png
"""
import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from a3c_kungfu import FRAME_SKIP  # noqa: E402  (an agent step is FRAME_SKIP frames)


def validations(csv_path: Path) -> list[tuple[int, float, float, float]]:
    """(agent steps, wall seconds, mean, std) of every validation row."""
    with open(csv_path) as f:
        return [(int(r["step"]), float(r["wall_seconds"]), float(r["eval_mean"]), float(r["eval_std"]))
                for r in csv.DictReader(f) if r.get("eval_mean")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ff_csv", type=Path)
    parser.add_argument("lstm_csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/kungfu/cores.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path, label in ((args.ff_csv, "--core ff"), (args.lstm_csv, "--core lstm")):
        rows = validations(path)
        for ax, x in ((axes[0], [r[1] / 3600 for r in rows]), (axes[1], [r[0] * FRAME_SKIP / 1e6 for r in rows])):
            ax.errorbar(x, [r[2] for r in rows], yerr=[r[3] for r in rows], fmt="o-", capsize=2, label=label)
    for ax, xlabel in zip(axes, ("wall time (hours), 2 cores", "frames (millions)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation mean, raw score (8 games, +- std)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    fig.suptitle("A3C on KungFuMaster: feed-forward vs LSTM core, the same defaults otherwise")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
