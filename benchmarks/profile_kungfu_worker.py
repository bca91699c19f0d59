"""Where one a3c_kungfu.py worker's time goes: the games, acting, the loss, backward, the optimizer.

    python benchmarks/profile_kungfu_worker.py            # feed-forward, 8 games (the defaults)
    python benchmarks/profile_kungfu_worker.py lstm 16    # --core lstm, 16 games

One worker's loop, as `worker()` runs it, in this process on one core for 30 s, after 10 s of
the same vector of games stepped with random actions (the raw speed on one core).
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a3c_kungfu as kungfu  # noqa: E402


def main(core: str = "ff", num_games: int = 8, seconds_each: float = 30.0) -> None:
    torch.set_num_threads(1)
    args = kungfu.parse_args(["--train", "--core", core, "--envs-per-worker", str(num_games)])
    envs = kungfu.make_vector_env(args, num_games, training=True)  # one thread, as in a worker
    local_model, shared_model = kungfu.build_model(args), kungfu.build_model(args)
    shared_model.share_memory()
    optimizer = kungfu.SharedAdam(shared_model.parameters())
    rollouts = kungfu.Rollouts(envs, seed=0)

    rng, steps, started = np.random.default_rng(0), 0, time.perf_counter()
    while time.perf_counter() - started < seconds_each / 3:
        envs.step(rng.integers(envs.single_action_space.n, size=num_games))
        steps += num_games
    raw = steps / (time.perf_counter() - started)

    seconds = dict.fromkeys(["1. copy weights", "2. acting (collect)", "2. the games", "3.-4. loss",
                             "4. backward + clip", "5. optimizer"], 0.0)
    env_step = envs.step

    def timed_env_step(actions):
        t = time.perf_counter()
        result = env_step(actions)
        seconds["2. the games"] += time.perf_counter() - t
        return result
    envs.step = timed_env_step

    def timed(name, fn):
        t = time.perf_counter()
        result = fn()
        seconds[name] += time.perf_counter() - t
        return result

    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds_each:
        timed("1. copy weights", lambda: local_model.load_state_dict(shared_model.state_dict()))
        rollout, _ = timed("2. acting (collect)", lambda: rollouts.collect(local_model, args))
        loss, _ = timed("3.-4. loss", lambda: kungfu.a3c_loss(local_model, **rollout, args=args))
        local_model.zero_grad()
        timed("4. backward + clip", lambda: (loss.backward(), torch.nn.utils.clip_grad_norm_(
            local_model.parameters(), args.max_grad_norm)))
        kungfu.hand_over_gradients(local_model, shared_model)
        timed("5. optimizer", lambda: optimizer.step(1e-4))
        steps += args.rollout_len * num_games
    total = time.perf_counter() - started
    seconds["2. acting (collect)"] -= seconds["2. the games"]  # collect's own time, without the games
    print(f"--core {core}, {num_games} games: raw {raw:.0f} agent steps/s on one core; the worker "
          f"{steps / total:.0f} ({steps / total / raw:.0%} of raw)")
    for name, s in seconds.items():
        print(f"  {name:22} {s / steps * 1e6:7.1f} us per agent step  {s / total:4.0%}")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["ff"]), *(int(n) for n in sys.argv[2:3]), *(float(s) for s in sys.argv[3:4]))
