"""Env speed of a3c_carracing.py's CarRacing against the stock CarRacing-v3, in one run.

    python benchmarks/bench_carracing.py                 # action repeat 4 (about 1 min)
    python benchmarks/bench_carracing.py --repeat 1 2 4 8

Both envs are the script's make_env (same wrappers: action repeat, grayscale, resize, frame
stack); the stock one draws every frame, the fast one (FastCarRacing) draws only the frames the
agent sees, hands the drawing code only the polygons that can reach the screen, and makes the
score's font once. Both give the same pixels (tests/test_carracing.py). Uniformly random
actions; env frames per second (one frame = one physics step of 1/50 s). The two are measured
in alternating slices so that anything else running on the machine slows both alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a3c_carracing  # noqa: E402


def frames_per_second(env, seconds: float, rng: np.random.Generator, repeat: int, state: dict) -> tuple[int, float]:
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if state.get("done", True):
            env.reset(seed=int(rng.integers(10**6)))
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())  # continuous [steer, pedal]
        state["done"] = terminated or truncated
        frames += repeat
    return frames, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, nargs="+", default=[4], help="action repeats to measure")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time per env and repeat")
    args = parser.parse_args()

    print(f"{'repeat':>6} {'stock frames/s':>15} {'fast frames/s':>14} {'speed-up':>9}")
    for repeat in args.repeat:
        env_args = a3c_carracing.parse_args(["--train", "--action-repeat", str(repeat)])
        envs = {"stock": a3c_carracing.make_env(env_args, fast=False), "fast": a3c_carracing.make_env(env_args)}
        totals = {name: [0, 0.0] for name in envs}
        states = {name: {} for name in envs}
        rng = np.random.default_rng(0)
        for env in envs.values():
            env.action_space.seed(0)  # the same random driving in both
        for _ in range(6):  # alternating slices
            for name, env in envs.items():
                frames, seconds = frames_per_second(env, args.seconds / 6, rng, repeat, states[name])
                totals[name][0] += frames
                totals[name][1] += seconds
        stock, fast = (totals[name][0] / totals[name][1] for name in ("stock", "fast"))
        print(f"{repeat:6d} {stock:15.0f} {fast:14.0f} {fast / stock:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
