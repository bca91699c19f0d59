"""The balance of a run's loss terms over its length, from its CSV: one row per window of agent steps.

    python benchmarks/loss_balance.py pretrained/carracing_discrete.csv --every 200000

Each row: the mean raw return of the training episodes that ended in the window, and the loss
terms averaged over the window's log rows. "advantage scale" is the advantages' std before any
normalising, the size of the policy gradient that the entropy bonus pulls against with its fixed
weight. CSVs from before that column was logged get sqrt(value loss) instead (marked *) when the
checkpoint beside the CSV says GAE lambda 1: then the advantage R_t - V(s_t) is the critic's
error, and the two are the same thing up to the error's mean. Markdown, for benchmarks/*.md.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def gae_lambda(csv_path: Path) -> float | None:
    """The run's GAE lambda, from model.pt beside model.csv (it saves the arguments)."""
    checkpoint = csv_path.with_suffix(".pt")
    return torch.load(checkpoint, weights_only=True)["args"].get("gae_lambda") if checkpoint.is_file() else None


def windows(csv_path: Path, every: int) -> list[list[str]]:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    critic_error_is_advantage = gae_lambda(csv_path) == 1.0
    last = max(int(r["step"]) for r in rows)
    digits = 1 if every % 100_000 == 0 else 2  # 0.05M windows need two decimals
    table = []
    for start in range(0, last + 1, every):
        inside = [r for r in rows if start <= int(r["step"]) < start + every]
        games = [float(r["train_return"]) for r in inside if r.get("train_return")]
        logged = [r for r in inside if r.get("entropy")]
        if not logged:
            continue

        def term(name: str) -> float:
            return mean([float(r[name]) for r in logged if r.get(name)])

        scale = term("advantage_std")
        if math.isfinite(scale):
            scale_text = f"{scale:.2f}"
        else:
            scale_text = f"{math.sqrt(term('value_loss')):.2f}*" if critic_error_is_advantage else "-"
        episodes = f"{mean(games):.1f}" if games else "-"  # a window may hold only loss rows
        table.append([f"{start / 1e6:.{digits}f}-{(start + every) / 1e6:.{digits}f}M", episodes, scale_text,
                      f"{term('entropy'):.2f}", f"{term('value_loss'):.3g}", f"{term('policy_loss'):.3f}",
                      f"{term('grad_norm'):.3g}"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--every", type=int, default=200_000, help="agent steps per row")
    args = parser.parse_args()
    header = ["agent steps", "training episodes (raw)", "advantage scale", "entropy", "value loss",
              "policy loss", "gradient norm before clipping"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in windows(args.csv, args.every):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
