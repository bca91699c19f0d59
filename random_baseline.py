"""A uniformly random agent: the floor every trained agent in this repo is read against.

    python random_baseline.py --env-id CartPole-v1 --episodes 100 --seed 0
    python random_baseline.py --env-id ALE/KungFuMaster-v5 --seed 0     # any ALE v5 game, 30 games
    python random_baseline.py --env-id CarRacing-v3 --episodes 50 --seed 0

Each env follows the protocol the matching a3c_*.py evaluates under (CartPole-v1; Atari games
with sticky actions, frame skip 4, minimal actions, full episodes; CarRacing-v3 with discrete
actions, a new random action every frame), and the score is the env's own raw episode return.
The flags and the last line have the same form as `--eval` in the A3C scripts.
"""
from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np


def make_env(name: str) -> gym.Env:
    if name == "CartPole-v1":
        return gym.make(name)
    if name.startswith("ALE/"):
        import ale_py  # registers the ALE/... envs with gymnasium

        gym.register_envs(ale_py)
        # the modern ALE protocol: sticky actions 0.25, frame skip 4, minimal action set,
        # full episodes (the default cap is 108,000 frames)
        return gym.make(name, repeat_action_probability=0.25, frameskip=4, full_action_space=False)
    # discrete control, Gymnasium's 5 actions: nothing, left, right, gas, brake
    return gym.make("CarRacing-v3", continuous=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] + " Every flag's default is in brackets.")
    parser.add_argument("--env-id", default="CartPole-v1",
                        help="CartPole-v1, CarRacing-v3, or any ALE v5 game id such as ALE/Pong-v5 [%(default)s]")
    parser.add_argument("--episodes", type=int, default=30, help="number of episodes [%(default)s]")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses env seed seed + i [%(default)s]")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    if args.env_id not in ("CartPole-v1", "CarRacing-v3") and not (args.env_id.startswith("ALE/")
                                                                   and args.env_id.endswith("-v5")):
        parser.error(f"--env-id {args.env_id}: choose CartPole-v1, CarRacing-v3 or an ALE/...-v5 game id")

    try:
        env = make_env(args.env_id)
    except gym.error.Error as error:  # an ALE id that does not exist
        parser.error(f"--env-id {args.env_id}: {error}")
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
