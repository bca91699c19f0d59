"""A table of training runs compared at equal agent steps, from their CSVs and checkpoints.

    python benchmarks/summarize_runs.py runs/screen/*/model.csv
    python benchmarks/summarize_runs.py benchmarks/atari/*.csv --at 1e6 2e6 3e6
    python benchmarks/summarize_runs.py pretrained/*.csv --at 1e7 --within 3600

For each run and each step count in --at: the validation mean at the first validation at or
after it, the mean raw score of the training games that ended in the half-million steps before
it, and the policy's entropy there. A run that never reached a step count shows "-". The
settings column lists the run's recipe settings, read from the checkpoint beside the CSV
(model.pt saves the arguments), so the table says what was run. With --within SECONDS, a last
column says what the run's first SECONDS of its clock reached: its last validation by then, and
the step it was made at (the clock counts from the first start, across resumes, as the CSV's
wall_seconds does). Markdown, for benchmarks/*.md.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

RECIPE = ("env_id", "actions", "envs_per_worker", "rollout_len", "gae_lambda", "lr", "lr_schedule",
          "normalize_advantages", "init", "value_coef", "entropy_coef", "entropy_schedule", "max_grad_norm",
          "core", "frame", "padding", "channels", "hidden")  # the settings a recipe run is told apart by


def settings(csv_path: Path) -> str:
    """The run's recipe settings, read from model.pt beside model.csv (it saves the arguments)."""
    checkpoint = csv_path.with_suffix(".pt")
    if not checkpoint.is_file():
        return "?"
    saved = torch.load(checkpoint, weights_only=True)["args"]
    return ", ".join(f"{k}={saved[k]}" for k in RECIPE if k in saved).replace("env_id=ALE/", "")


def summarize(csv_path: Path, at: list[int], within: float | None = None) -> list[str]:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["step"]) for r in rows)
    cells = []
    for step in at:
        if last < step:
            cells.append("-")
            continue
        evals = [float(r["eval_mean"]) for r in rows if r["eval_mean"] and int(r["step"]) >= step]
        games = [float(r["train_return"]) for r in rows
                 if r["train_return"] and step - 500_000 < int(r["step"]) <= step]
        entropy = [float(r["entropy"]) for r in rows if r["entropy"] and int(r["step"]) <= step]
        eval_text = (f"{evals[0]:.0f}" if abs(evals[0]) >= 100 else f"{evals[0]:.1f}") if evals else "-"
        games_text = f"{sum(games) / len(games):.1f}" if games else "-"
        cells.append(f"{eval_text} / {games_text} / {entropy[-1]:.2f}" if entropy else f"{eval_text} / {games_text}")
    if within is not None:
        evals = [(float(r["eval_mean"]), int(r["step"])) for r in rows
                 if r["eval_mean"] and float(r["wall_seconds"]) <= within]
        cells.append(f"{evals[-1][0]:g} at {evals[-1][1] / 1e6:.2f}M steps" if evals else "-")
    return [csv_path.parent.name if csv_path.stem == "model" else csv_path.stem, settings(csv_path),
            f"{last / 1e6:.2f}M", *cells]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csvs", nargs="+", type=Path)
    parser.add_argument("--at", nargs="+", type=float, default=[1e6, 2e6, 3e6], help="agent steps to compare at")
    parser.add_argument("--within", type=float, help="also say what the first SECONDS of training reached")
    args = parser.parse_args()
    at = [int(s) for s in args.at]
    header = ["run", "settings", "steps reached",
              *(f"at {s / 1e6:g}M: validation / training games / entropy" for s in at)]
    if args.within is not None:
        header.append(f"first {args.within:g} s: last validation")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in args.csvs:
        print("| " + " | ".join(summarize(path, at, args.within)) + " |")


if __name__ == "__main__":
    main()
