"""A uniformly random agent: the floor every trained agent in this repo is read against.

    python random_baseline.py --env cartpole  --episodes 100 --seed 0
    python random_baseline.py --env kungfu    --episodes 30  --seed 0
    python random_baseline.py --env ALE/Pong-v5 --episodes 30 --seed 0     # any ALE v5 game
    python random_baseline.py --env carracing --episodes 50  --seed 0

Each env follows the protocol the matching a3c_*.py evaluates under (CartPole-v1; Atari games
(kungfu is ALE/KungFuMaster-v5) with sticky actions, frame skip 4, minimal actions, full
episodes; CarRacing-v3 with discrete
actions, a new random action every frame), and the score is the env's own raw episode return.
The last line has the same form as `--eval` in the A3C scripts.
"""
from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np


def make_env(name: str) -> gym.Env:
    if name == "cartpole":
        return gym.make("CartPole-v1")
    if name == "kungfu" or name.startswith("ALE/"):
        import ale_py  # registers the ALE/... envs with gymnasium

        gym.register_envs(ale_py)
        # the modern ALE protocol: sticky actions 0.25, frame skip 4, minimal action set,
        # full episodes (the default cap is 108,000 frames)
        return gym.make("ALE/KungFuMaster-v5" if name == "kungfu" else name, repeat_action_probability=0.25,
                        frameskip=4, full_action_space=False)
    # discrete control, Gymnasium's 5 actions: nothing, left, right, gas, brake
    return gym.make("CarRacing-v3", continuous=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--env", default="cartpole",
                        help="cartpole, kungfu, carracing, or any ALE v5 game id such as ALE/Pong-v5")
    parser.add_argument("--episodes", type=int, default=100, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses env seed seed + i")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    if args.env not in ("cartpole", "kungfu", "carracing") and not args.env.startswith("ALE/"):
        parser.error(f"--env {args.env}: choose cartpole, kungfu, carracing or an ALE/...-v5 game id")

    try:
        env = make_env(args.env)
    except gym.error.Error as error:  # an ALE id that does not exist
        parser.error(f"--env {args.env}: {error}")
    env.action_space.seed(args.seed)
    returns = []
    for i in range(args.episodes):
        env.reset(seed=args.seed + i)
        done, episode_return = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
        print(f"episode {i + 1:3d} (seed {args.seed + i}): return {episode_return:.1f}", flush=True)
    env.close()
    print(f"mean {np.mean(returns):.1f} std {np.std(returns):.1f} over {len(returns)} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
