"""How a continuous CarRacing driver should pick its action at test time: the Beta policy's mean
(--greedy), its mode, or a sample (the default, --no-greedy, for every policy),
on the same tracks.

    python benchmarks/carracing_action_choice.py --checkpoint pretrained/carracing.pt --episodes 32

The tracks are the validation tracks (seeds from 500,000) unless --seed says otherwise; each
choice drives the same tracks with the same weights, full 1000-frame episodes, raw returns.
A sample is what training drives with, so a large gap between "sample" and "mean" says that the
greedy driver is not the policy that training improved.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a3c_carracing as carracing  # noqa: E402


def mode(params: torch.Tensor) -> torch.Tensor:
    """The Beta's most likely value, (alpha - 1) / (alpha + beta - 2); alpha, beta > 1 here."""
    policy = carracing.beta_policy(params)
    alpha, beta = policy.concentration1, policy.concentration0
    return ((alpha - 1) / (alpha + beta - 2).clamp_min(1e-6)).clamp(0.0, 1.0)


GREEDY = {"mean": lambda params: carracing.beta_policy(params).mean, "mode": mode}
CHOICES = [*GREEDY, "sample"]  # sample: the script's own default (--no-greedy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=carracing.VALIDATION_SEED)
    parser.add_argument("--choices", nargs="+", choices=CHOICES, default=CHOICES)
    options = parser.parse_args()
    torch.set_num_threads(1)
    model, checkpoint = carracing.load(options.checkpoint, carracing.ENV_ID)
    args = carracing.parse_args(["--eval"])
    for name in ("actions", "action_repeat"):
        setattr(args, name, checkpoint["args"][name])
    if args.actions != "continuous":
        sys.exit(f"{options.checkpoint} drives with discrete actions; this compares continuous ones")
    print(f"{options.checkpoint}: {checkpoint['steps']} agent steps; "
          f"{options.episodes} tracks from seed {options.seed}")
    sample = carracing.test_actions
    for name in options.choices:
        args.greedy = False
        carracing.test_actions = sample if name == "sample" else \
            lambda params, args, rng, choose=GREEDY[name]: choose(params).numpy()  # what evaluate() calls
        returns = carracing.evaluate(model, args, options.episodes, options.seed)
        print(f"{name:>6}: mean {np.mean(returns):6.1f}  std {np.std(returns):6.1f}  "
              f"min {np.min(returns):6.1f}  max {np.max(returns):6.1f}")


if __name__ == "__main__":
    main()
