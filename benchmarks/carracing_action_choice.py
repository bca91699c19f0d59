"""How a continuous CarRacing driver should pick its action at test time: the Beta policy's mean
(--greedy), its mode, or a sample (the default, --no-greedy, for every policy),
on the same tracks.

    python benchmarks/carracing_action_choice.py --checkpoint pretrained/carracing.pt --episodes 32
    python benchmarks/carracing_action_choice.py --checkpoint pretrained/carracing.pt --choices sample --sharpen 2
    python benchmarks/carracing_action_choice.py --checkpoint pretrained/carracing.pt --choices sample --pedal 1.3 1

--sharpen K adds a choice: a sample from Beta(K alpha, K beta), the same mean with about 1/K the
variance (less noise). --pedal GAS BRAKE scales the env's gas (at most 1) and brake in every
choice: if more gas drives better the driver is timid; if worse, it drives as fast as it can steer.

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


def sharpened(k: float):
    """test_actions' sample, drawn from Beta(k alpha, k beta): the policy's mean, less noise."""
    def test_actions(params, args, rng):
        policy = carracing.beta_policy(params)
        return rng.beta(k * policy.concentration1.numpy(), k * policy.concentration0.numpy()).astype(np.float32)
    return test_actions


def scaled_pedal(gas: float, brake: float):
    """SteerAndPedal.action with the env's gas (at most 1) and brake scaled."""
    to_env = carracing.SteerAndPedal.action
    def action(wrapper, action):
        steer, env_gas, env_brake = to_env(wrapper, action)
        return np.array([steer, min(1.0, gas * env_gas), min(1.0, brake * env_brake)], np.float32)
    return action


GREEDY = {"mean": lambda params: carracing.beta_policy(params).mean, "mode": mode}
CHOICES = [*GREEDY, "sample"]  # sample: the script's own default (--no-greedy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=carracing.VALIDATION_SEED)
    parser.add_argument("--choices", nargs="+", choices=CHOICES, default=CHOICES)
    parser.add_argument("--sharpen", type=float, nargs="+", default=[], metavar="K")
    parser.add_argument("--pedal", type=float, nargs=2, default=[1.0, 1.0], metavar=("GAS", "BRAKE"))
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
    if options.pedal != [1.0, 1.0]:  # the stock controls unless asked: no extra call per frame
        carracing.SteerAndPedal.action = scaled_pedal(*options.pedal)
    sample = carracing.test_actions
    choices = {name: sample if name == "sample" else  # what evaluate() calls
               lambda params, args, rng, choose=GREEDY[name]: choose(params).numpy() for name in options.choices}
    choices.update({f"sample/{k:g}": sharpened(k) for k in options.sharpen})
    for name, test_actions in choices.items():
        args.greedy, carracing.test_actions = False, test_actions
        returns = carracing.evaluate(model, args, options.episodes, options.seed)
        print(f"{name:>9}: mean {np.mean(returns):6.1f}  std {np.std(returns):6.1f}  "
              f"min {np.min(returns):6.1f}  max {np.max(returns):6.1f}")


if __name__ == "__main__":
    main()
