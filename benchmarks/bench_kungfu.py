"""Throughput of a3c_kungfu.py against the raw speed of the games it plays, in one run.

    python benchmarks/bench_kungfu.py            # raw env vs both training modes (about 3 min)
    python benchmarks/bench_kungfu.py --nets     # also: the networks before, today's, the Nature CNN; pooling

raw: ale-py's vector env with the script's protocol and preprocessing, 16 games on 2 threads
(as many games as the default training steps), uniformly random actions, nothing else running.
training: `a3c_kungfu.py --train` for --seconds, agent steps per second of its own clock
(steps and seconds from the checkpoint it writes). One agent step is 4 frames.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import a3c_kungfu  # noqa: E402


def raw_steps_per_second(seconds: float, flags: list[str], num_envs: int = 16) -> float:
    """The games alone, stepped with random actions by one vector env (2 threads, as in batch mode)."""
    envs = a3c_kungfu.make_vector_env(a3c_kungfu.parse_args(["--train", *flags]), num_envs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        envs.step(rng.integers(envs.single_action_space.n, size=num_envs))
        steps += num_envs
    envs.close()
    return steps / (time.perf_counter() - started)


def training_steps_per_second(mode: str, seconds: float, folder: Path, flags: list[str]) -> float:
    checkpoint = folder / mode / "model.pt"
    subprocess.run([sys.executable, str(ROOT / "a3c_kungfu.py"), "--train", "--mode", mode, *flags,
                    "--max-seconds", str(seconds), "--eval-every", str(10**12), "--checkpoint", str(checkpoint)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
    saved = torch.load(folder / mode / "model_last.pt", weights_only=True)
    return saved["steps"] / saved["seconds"]


def per_sample_ms(call, samples: int, repeats: int) -> float:
    """Milliseconds per sample of call(), timed over repeats calls after 3 warm-up calls."""
    for _ in range(3):
        call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats / samples * 1e3


def network_costs() -> None:
    """ms per sample of one training step (forward + backward of a rollout, 10 steps x 16 games)
    and of acting (one step of 8 games, a worker's batch), on one core; last, for scale, the
    published agents' network (the DQN paper's Nature CNN on 84x84 frames, one linear head)."""
    torch.set_num_threads(1)
    area, before = ["--frame", "area42", "--padding", "0"], ["--channels", "16", "--hidden", "256"]
    nets = {"tutorial (32 channels first, 128 units)": [*area, "--channels", "16", "--hidden", "128"],
            "first a3c_kungfu.py (16, 32, 32; 256)": [*area, *before],
            "first a3c_kungfu.py, --core lstm": [*area, *before, "--core", "lstm"],
            "defaults before (16, 32, 32; 256; pad 1)": before,
            "today's defaults (32, 64, 64; 512; pad 1)": [],
            "today's defaults, --core lstm": ["--core", "lstm"]}
    T, N = 10, 16
    starts = np.zeros((T, N), np.float32)
    rollout = torch.randint(0, 256, (T * N, 4, 42, 42), dtype=torch.uint8)  # what every network sees: 42x42
    for name, flags in nets.items():
        args = a3c_kungfu.parse_args(["--train", *flags])
        model = a3c_kungfu.build_model(args)
        if name.startswith("tutorial"):
            model.body[0] = nn.Conv2d(4, 32, 3, stride=2)
            model.body[2] = nn.Conv2d(32, 32, 3, stride=2)

        def train_step():
            model.zero_grad()
            features = model.encode(rollout).view(T, N, -1)
            outputs, _ = model.unroll(features, model.initial_state(N), starts)
            logits, values = model.heads(outputs)
            (logits.sum() + values.sum()).backward()

        train_ms = per_sample_ms(train_step, T * N, 20)
        with torch.no_grad():
            state = model.initial_state(8)
            act_ms = per_sample_ms(lambda: model.step(rollout[:8], state), 8, 200)
        print(f"{name:42} train {train_ms:.3f} ms/sample   act {act_ms:.3f} ms/sample")

    frames = np.random.default_rng(0).integers(0, 256, (T * N // 2, 4, 84, 84), dtype=np.uint8)  # 80: a worker's
    assert torch.equal(torch.as_tensor(a3c_kungfu.pool(frames)), nn.functional.max_pool2d(torch.as_tensor(frames), 2))
    torch_frames = torch.as_tensor(frames)
    for name, pool in (("[80, 4, 84, 84] uint8, max_pool2d", lambda: nn.functional.max_pool2d(torch_frames, 2)),
                       ("[80, 4, 84, 84] uint8, the script's pool", lambda: a3c_kungfu.pool(frames)),
                       ("[8, 4, 84, 84] uint8 (one step of 8 games)", lambda: a3c_kungfu.pool(frames[:8]))):
        print(f"{'2x2 max of ' + name:56} {per_sample_ms(pool, 1, 50):.2f} ms")

    nature = nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                           nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                           nn.Linear(512, 15))  # 14 logits and a value
    frames = torch.randint(0, 256, (T * N, 4, 84, 84), dtype=torch.uint8)

    def nature_train_step():
        nature.zero_grad()
        nature(frames.float() / 255).sum().backward()

    train_ms = per_sample_ms(nature_train_step, T * N, 20)
    with torch.no_grad():
        act_ms = per_sample_ms(lambda: nature(frames[:8].float() / 255), 8, 200)
    print(f"{'Nature CNN, 84x84 frames (published)':42} train {train_ms:.3f} ms/sample   act {act_ms:.3f} ms/sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measurement")
    parser.add_argument("--nets", action="store_true",
                        help="also time the tutorial's network, the ones before, today's and the Nature CNN on 84x84")
    parser.add_argument("--modes", nargs="+", default=["processes", "batch"], choices=["processes", "batch"])
    parser.add_argument("--flags", default="", help='more a3c_kungfu.py flags, e.g. "--core lstm"')
    args = parser.parse_args()

    raw = raw_steps_per_second(args.seconds, args.flags.split())
    print(f"{'raw vector env, random actions':36} {raw:8.0f} agent steps/s")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            rate = training_steps_per_second(mode, args.seconds, Path(tmp), args.flags.split())
            print(f"{'training, --mode ' + mode:36} {rate:8.0f} agent steps/s  ({rate / raw:.0%} of raw)", flush=True)
    if args.nets:
        network_costs()


if __name__ == "__main__":
    main()
