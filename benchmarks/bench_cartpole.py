"""Time-to-solve benchmark for a3c_cartpole.py: every mode x seed, whole process timed.

    python benchmarks/bench_cartpole.py                       # the README's table (about 10 min)
    python benchmarks/bench_cartpole.py --modes batch --seeds 3
    python benchmarks/bench_cartpole.py --script old_cartpole.py   # another version, same machine

For each run: wall time of `python a3c_cartpole.py --train --mode M --seed S` from launch to
exit (start-up, training, saving and plotting included), the env steps it took, and the mean
of 100 greedy episodes of the saved checkpoint on held-out seeds (10**6 + 1000 * S onwards,
never used in training), measured by `a3c_cartpole.py --eval`.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "a3c_cartpole.py"
DEFAULT_SEEDS = {"processes": 10, "batch": 10, "threads": 3, "ga3c": 3}


def run(script: Path, mode: str, seed: int, folder: Path, extra: list[str]) -> dict:
    checkpoint = folder / f"{mode}_s{seed}" / "model.pt"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script), "--train", "--mode", mode, "--seed", str(seed),
                    "--checkpoint", str(checkpoint), *extra],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
    wall = time.perf_counter() - started
    steps = torch.load(checkpoint, weights_only=True)["steps"]
    out = subprocess.run([sys.executable, str(script), "--eval", "--episodes", "100",
                          "--seed", str(10**6 + 1000 * seed), "--checkpoint", str(checkpoint)],
                         check=True, capture_output=True, text=True).stdout
    mean = float(re.search(r"^mean ([\d.]+)", out, re.M).group(1))
    return {"mode": mode, "seed": seed, "wall": wall, "steps": steps, "heldout": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_SEEDS), choices=list(DEFAULT_SEEDS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per mode (default: 10 for "
                        "processes and batch, 3 for threads and ga3c)")
    parser.add_argument("--script", type=Path, default=SCRIPT, help="the script to time (default: "
                        "this repo's a3c_cartpole.py; e.g. an older version from git show, to compare)")
    parser.add_argument("extra", nargs="*", help="more flags for a3c_cartpole.py, after --")
    args = parser.parse_args()

    print(f"{'mode':10} {'seed':>4} {'wall s':>7} {'steps':>8} {'held-out mean':>14}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for seed in range(args.seeds or DEFAULT_SEEDS[mode]):
                r = run(args.script.resolve(), mode, seed, Path(tmp), args.extra)
                results.append(r)
                print(f"{mode:10} {seed:4d} {r['wall']:7.1f} {r['steps']:8d} {r['heldout']:14.1f}", flush=True)
    print()
    print(f"{'mode':10} {'runs':>4} {'median s':>9} {'max s':>7} {'min held-out':>13} {'all >= 475':>11}")
    for mode in args.modes:
        rs = [r for r in results if r["mode"] == mode]
        walls = [r["wall"] for r in rs]
        worst = min(r["heldout"] for r in rs)
        print(f"{mode:10} {len(rs):4d} {statistics.median(walls):9.1f} {max(walls):7.1f} {worst:13.1f} "
              f"{'yes' if worst >= 475 else 'NO':>11}")


if __name__ == "__main__":
    main()
