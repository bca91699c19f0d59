"""Held-out results side by side, from the output of `--eval` runs on the same tracks.

    python a3c_carracing.py --eval --episodes 100 --seed 1000000 --checkpoint pretrained/carracing_discrete.pt > a.txt
    python a3c_carracing.py --eval --episodes 100 --seed 1000000 --checkpoint pretrained/carracing.pt > b.txt
    python benchmarks/compare_evals.py a.txt b.txt --bars 500 800 900

For each file: mean, std, median, how many episodes reach each bar, worst and best. Each file
after the first is also compared with the first track by track (the same seeds): the mean
difference with its standard error, and on how many tracks it does better. Markdown.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

EPISODE = re.compile(r"\(seed (\d+)\): return (-?[\d.]+)")  # what --eval prints for each episode


def returns_by_seed(path: Path) -> dict[int, float]:
    found = {int(seed): float(ret) for seed, ret in EPISODE.findall(path.read_text())}
    if not found:
        raise SystemExit(f"{path}: no '(seed S): return R' lines; is it the output of --eval?")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evals", type=Path, nargs="+", help="saved --eval outputs; the first is the reference")
    parser.add_argument("--bars", type=float, nargs="+", default=[500, 800, 900],
                        help="count the episodes at or above each (the lowest: below it)")
    options = parser.parse_args()
    bars = sorted(options.bars)
    runs = [returns_by_seed(path) for path in options.evals]
    reference = runs[0]
    print(f"| eval | episodes | mean | std | median | < {bars[0]:g} | "
          + " | ".join(f">= {bar:g}" for bar in bars[1:]) + " | min | max | vs the first, paired (s.e.) | better on |")
    print("|" + "---|" * (9 + len(bars)))
    for path, run in zip(options.evals, runs):
        r = np.array(list(run.values()))
        counts = [f"{(r < bars[0]).sum()}"] + [f"{(r >= bar).sum()}" for bar in bars[1:]]
        paired, better = "-", "-"
        shared = sorted(set(run) & set(reference))
        if run is not reference and len(shared) > 1:
            diff = np.array([run[s] - reference[s] for s in shared])
            paired = f"{diff.mean():+.1f} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.1f}"
            better = f"{(diff > 0).sum()} of {len(diff)}"
        print(f"| {path.name} | {len(r)} | {r.mean():.1f} | {r.std():.1f} | {np.median(r):.1f} | "
              + " | ".join(counts) + f" | {r.min():.1f} | {r.max():.1f} | {paired} | {better} |")


if __name__ == "__main__":
    main()
