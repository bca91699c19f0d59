"""A3C (Asynchronous Advantage Actor-Critic) on CartPole-v1, the reference script of this repo.

    python a3c_cartpole.py --train              # train until solved (a few seconds), save, plot
    python a3c_cartpole.py --play               # watch the greedy agent (a GIF when headless)
    python a3c_cartpole.py --eval --episodes 100 --seed 0
    python a3c_cartpole.py --train --mode batch # the other modes: processes, threads, batch, ga3c

A3C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783): several workers, each with its own
environment and a local copy of one shared actor-critic network. A worker repeats:

    1. copy the shared weights:                    theta' <- theta
    2. act for n steps with pi(a | s; theta') (an episode that ends in them starts again)
    3. n-step return:                              R_t = r_t + gamma * R_{t+1},  R_n = V(s_n)
       (0 after a terminal state; V of the last state when a time limit cuts the episode)
       advantage:                                  A_t = R_t - V(s_t)     (GAE(lambda) with lambda=1)
    4. loss = -mean(log pi(a_t | s_t) * A_t)             policy gradient, A_t held constant
              + value_coef   * mean((R_t - V(s_t))^2)    critic regression
              - entropy_coef * mean(H(pi(. | s_t)))      keeps the policy exploring
    5. gradients of the local copy -> shared model, one optimizer step on the shared weights

There is no lock around step 5 between processes ("Hogwild"): updates may interleave, which
works because each one is small. Hogwild updates are not bit-reproducible, even with --seed.

Modes (--mode):
    processes  real A3C: worker processes update a model in shared memory (the default)
    threads    the same worker function in threads; the GIL lets only one run Python at a time
    batch      one learner steps a vector of environments in lock-step (synchronous A2C)
    ga3c       workers only act and queue their rollouts; one trainer learns from batches of them

`--train` stops once solved: every --eval-every steps the current weights play --eval-episodes
greedy episodes on fresh seeds, and a mean of at least --solve-score (default 500, the maximum)
ends training. Those weights are the checkpoint.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import queue
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from tqdm import tqdm

from a3c_util import entropy_from_logits, gae_advantages

ENV_ID = "CartPole-v1"
PRETRAINED = Path(__file__).parent / "pretrained" / "cartpole.pt"
RUNS = Path("runs")


# --------------------------------------------------------------------------- hyperparameters
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A3C on CartPole-v1: train, play, evaluate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # one line instead of argparse's long usage block; --help has the details
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--train", action="store_true", help="train a new agent (or --resume one)")
    what.add_argument("--play", action="store_true",
                      help="show the greedy agent in a window; writes a GIF when there is no display")
    what.add_argument("--eval", action="store_true", help="greedy episodes; print each return and mean/std")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="--train: where to save the best weights (metrics, curve and last "
                             "checkpoint go beside it); --play/--eval/--resume: what to load. "
                             "Default: a new runs/ folder for --train; the newest runs/cartpole_*/model.pt, "
                             "else the shipped pretrained/cartpole.pt, for the others")
    parser.add_argument("--resume", action="store_true",
                        help="with --train: continue from --checkpoint (or the newest run) with its "
                             "model, optimizer, step counter and arguments; flags you give win")
    parser.add_argument("--mode", choices=["processes", "threads", "batch", "ga3c"], default="processes",
                        help="how experience is gathered; see the module docstring")
    parser.add_argument("--seed", type=int, default=0, help="seeds python, numpy, torch and env (seed + rank)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="--eval: greedy episodes (default 100); --play: episodes (default 1)")
    parser.add_argument("--video", type=Path, default=RUNS / "videos" / "cartpole.gif",
                        help="--play without a display: where the GIF goes")

    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--workers", type=int, default=2, help="worker processes/threads (one per core)")
    hp.add_argument("--num-envs", type=int, default=8, help="--mode batch: environments in the vector")
    hp.add_argument("--rollout-len", type=int, default=20, help="n: steps per update per env (t_max)")
    hp.add_argument("--gamma", type=float, default=0.99, help="discount factor")
    hp.add_argument("--gae-lambda", type=float, default=1.0, help="GAE lambda; 1.0 is the paper's n-step advantage")
    hp.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    hp.add_argument("--entropy-coef", type=float, default=0.01, help="weight of the entropy bonus")
    hp.add_argument("--value-coef", type=float, default=0.5, help="weight of the critic's squared error")
    hp.add_argument("--max-grad-norm", type=float, default=1.0, help="clip each update's gradient norm to this")
    hp.add_argument("--epsilon", type=float, default=0.0,
                    help="epsilon-greedy on top of policy sampling: probability of a uniform random action")
    hp.add_argument("--hidden", type=int, default=64, help="hidden units of the actor and critic MLPs")
    hp.add_argument("--ga3c-batch", type=int, default=4, help="--mode ga3c: rollouts per trainer update")

    budget = parser.add_argument_group("stopping and evaluation")
    budget.add_argument("--max-steps", type=int, default=1_000_000, help="stop after this many env steps")
    budget.add_argument("--max-seconds", type=float, default=600.0, help="stop after this much wall time")
    budget.add_argument("--eval-every", type=int, default=10_000, help="greedy evaluation every this many steps")
    budget.add_argument("--eval-episodes", type=int, default=20, help="greedy episodes per evaluation")
    budget.add_argument("--solve-score", type=float, default=500.0,
                        help="stop once an evaluation's mean return reaches this")
    args = parser.parse_args(argv)
    if args.episodes is None:
        args.episodes = 1 if args.play else 100
    for name in ("workers", "num_envs", "rollout_len", "hidden", "episodes", "ga3c_batch",
                 "max_steps", "eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.epsilon <= 1.0 or not 0.0 < args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        parser.error("--epsilon and --gae-lambda must lie in [0, 1], --gamma in (0, 1]")
    if args.lr <= 0 or args.max_seconds <= 0:
        parser.error("--lr and --max-seconds must be positive")
    if args.resume and not args.train:
        parser.error("--resume goes with --train")
    # the flags typed on the command line; --resume lets these override the saved arguments
    explicit = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            explicit._add_action(action)
    args.explicit = sorted(vars(explicit.parse_known_args(argv)[0]))
    return args


# --------------------------------------------------------------------------- environment and network
def make_env(render_mode: str | None = None) -> gym.Env:
    return gym.make(ENV_ID, render_mode=render_mode)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs: on CartPole the critic's large squared errors would
    otherwise swamp the policy's gradient in a shared trunk."""

    def __init__(self, obs_size: int, n_actions: int, hidden: int):
        super().__init__()
        self.actor = nn.Sequential(nn.Linear(obs_size, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))
        self.critic = nn.Sequential(nn.Linear(obs_size, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits [..., A] and state values V(s) [...]."""
        return self.actor(obs), self.critic(obs).squeeze(-1)


def build_model(args: argparse.Namespace) -> ActorCritic:
    env = make_env()
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n, args.hidden)
    env.close()
    return model


class SharedAdam:
    """Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980) with its state in shared memory.

    Shared between all workers: the step count t and the moments m and v (below), like the
    weights themselves. An optimizer created lazily inside each worker would silently give every
    worker its own moments. Written out rather than subclassing torch.optim.Adam: the maths fits
    in a few lines, and torch.optim's first use costs a second of start-up (it imports torch._dynamo).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = torch.zeros((), dtype=torch.int64).share_memory_()
        self.m = [torch.zeros_like(p).share_memory_() for p in self.params]  # first moments
        self.v = [torch.zeros_like(p).share_memory_() for p in self.params]  # second moments

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        t = int(self.t)
        step_size = self.lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)  # bias correction
        for p, m, v in zip(self.params, self.m, self.v):
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)               # m <- b1 m + (1 - b1) g
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)   # v <- b2 v + (1 - b2) g^2
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-step_size)  # theta <- theta - lr m / sqrt(v)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.t.copy_(state["t"])  # copy_ into the shared tensors keeps them shared
        for mine, saved in zip(self.m + self.v, state["m"] + state["v"]):
            mine.copy_(saved)


def act(logits: torch.Tensor, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Sample a ~ pi(.|s); with probability epsilon take a uniform random action instead."""
    actions = torch.multinomial(torch.softmax(logits, -1).reshape(-1, logits.shape[-1]), 1).view(-1).numpy()
    if epsilon > 0:
        explore = rng.random(actions.shape) < epsilon
        actions = np.where(explore, rng.integers(logits.shape[-1], size=actions.shape), actions)
    return actions


def a3c_loss(model: ActorCritic, obs, actions, rewards, next_obs, terminated, truncated,
             args: argparse.Namespace) -> torch.Tensor:
    """The A3C loss of one rollout (arrays [T] or [T, N] per step; obs [T, ..., obs_size])."""
    logits, values = model(torch.as_tensor(obs))
    with torch.no_grad():  # V(s_{t+1}): bootstrap targets are constants, no gradient through them
        next_values = model.critic(torch.as_tensor(next_obs)).squeeze(-1).numpy()
    # A_t and R_t from values without gradient: the advantage weighs the policy gradient,
    # it must not itself be pushed around by it (that is what "A_t held constant" means)
    advantages, returns = gae_advantages(rewards, values.detach().numpy(), next_values,
                                         terminated, truncated, args.gamma, args.gae_lambda)
    advantages, returns = torch.as_tensor(advantages), torch.as_tensor(returns)
    log_probs = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(actions).unsqueeze(-1)).squeeze(-1)
    policy_loss = -(log_probs * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = entropy_from_logits(logits).mean()
    return policy_loss + args.value_coef * value_loss - args.entropy_coef * entropy


def hand_over_gradients(local_model: nn.Module, shared_model: nn.Module) -> None:
    """Point the shared parameters' .grad at this update's local gradients.

    Done on every update: local_model.zero_grad() sets the local grads to None before each
    backward, so backward makes fresh tensors, and the shared model must see each new one.
    (Copying only `if shared.grad is None`, as much A3C code does, would freeze the shared
    gradient at the first update.) In worker processes .grad is a per-process attribute of the
    shared parameters; only their data lives in shared memory."""
    for local, shared in zip(local_model.parameters(), shared_model.parameters()):
        shared.grad = local.grad


class Rollouts:
    """Steps one env with a model; carries the observation and the episode's return across rollouts."""

    def __init__(self, env: gym.Env, seed: int):
        self.env, self.rng = env, np.random.default_rng(seed)
        self.obs, _ = env.reset(seed=seed)
        self.episode_return = 0.0

    def collect(self, model: ActorCritic, args: argparse.Namespace) -> tuple[dict, list[float]]:
        """n steps: the rollout arrays [T] and the returns of the episodes that ended in them."""
        rollout = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")}
        finished = []
        for _ in range(args.rollout_len):
            with torch.no_grad():
                action = act(model.actor(torch.as_tensor(self.obs)), args.epsilon, self.rng)[0]
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            for key, value in zip(rollout, (self.obs, action, reward, next_obs, terminated, truncated)):
                rollout[key].append(value)
            self.episode_return += reward
            self.obs = next_obs
            if terminated or truncated:  # next_obs stays in the rollout: V(final obs) bootstraps a truncation
                finished.append(self.episode_return)
                self.episode_return = 0.0
                self.obs, _ = self.env.reset()
        types = {"actions": np.int64}
        return {k: np.asarray(v, dtype=types.get(k, np.float32)) for k, v in rollout.items()}, finished


# --------------------------------------------------------------------------- the worker
def worker(rank: int, args: argparse.Namespace, shared_model: ActorCritic, optimizer: SharedAdam,
           global_steps, stop, episode_returns, update_lock) -> None:
    """One A3C worker: the same function runs as a process or as a thread."""
    torch.set_num_threads(1)  # one core per worker; torch's own thread pool would fight the others
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.manual_seed(args.seed + rank)
    rollouts = Rollouts(make_env(), seed=args.seed + rank)
    local_model = build_model(args)

    while not stop.is_set():
        local_model.load_state_dict(shared_model.state_dict())  # theta' <- theta
        rollout, finished = rollouts.collect(local_model, args)
        for episode_return in finished:
            episode_returns.put(episode_return)

        loss = a3c_loss(local_model, **rollout, args=args)
        local_model.zero_grad()  # fresh gradients for this update only (see hand_over_gradients)
        loss.backward()
        nn.utils.clip_grad_norm_(local_model.parameters(), args.max_grad_norm)
        # Threads share one shared_model object, so one thread's .grad could be swapped under
        # another's step: they take a lock. Processes each have their own .grad: no lock.
        with update_lock:
            hand_over_gradients(local_model, shared_model)
            optimizer.step()  # updates the shared weights and the shared Adam moments
        with global_steps.get_lock():
            global_steps.value += args.rollout_len


# --------------------------------------------------------------------------- training log
class TrainingLog:
    """Progress bar, metrics CSV, periodic greedy evaluation, best checkpoint, stopping rule."""

    def __init__(self, args, paths, model, optimizer, start):
        self.args, self.paths, self.model, self.optimizer = args, paths, model, optimizer
        self.steps, self.episodes = start["steps"], start["episodes"]
        self.best_eval, self.evals_done = start["best_eval"], start["evals_done"]
        self.seconds_before = start["seconds"]  # wall time of earlier runs joined by --resume
        self.started = time.time()
        self.next_eval = self.steps + args.eval_every
        self.recent = []
        self.solved = False
        new_file = not paths["csv"].exists()
        self.csv_file = open(paths["csv"], "a", newline="")
        self.csv = csv.writer(self.csv_file)
        if new_file:
            self.csv.writerow(["step", "wall_seconds", "train_return", "eval_mean", "eval_std"])
        self.bar = tqdm(total=args.max_steps, initial=self.steps, unit="step", dynamic_ncols=True,
                        mininterval=0.5, smoothing=0.1)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.time() - self.started

    def episode(self, episode_return: float) -> None:
        self.episodes += 1
        self.recent = (self.recent + [episode_return])[-20:]
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", episode_return, "", ""])

    def update(self, steps: int) -> bool:
        """Record progress to `steps`; evaluate when due. True when training should stop."""
        self.bar.update(steps - self.steps)
        self.steps = steps
        if self.steps >= self.next_eval:
            self.next_eval += self.args.eval_every
            self.evaluate()
        self.bar.set_postfix(ret=f"{np.mean(self.recent) if self.recent else 0:.0f}",
                             eval=f"{self.best_eval:.0f}", refresh=False)
        out_of_budget = self.steps >= self.args.max_steps or time.time() - self.started >= self.args.max_seconds
        return self.solved or out_of_budget

    def evaluate(self) -> None:
        # Evaluate a snapshot, so the weights saved are exactly the weights that scored.
        snapshot = {k: v.clone() for k, v in self.model.state_dict().items()}
        eval_model = build_model(self.args)
        eval_model.load_state_dict(snapshot)
        seed = 1_000 + 1_000 * self.args.seed + self.args.eval_episodes * self.evals_done  # fresh each time
        returns = evaluate(eval_model, self.args.eval_episodes, seed)
        self.evals_done += 1
        mean = float(np.mean(returns))
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", "", f"{mean:.1f}", f"{np.std(returns):.1f}"])
        if mean >= self.best_eval:
            self.best_eval = mean
            save_checkpoint(self.paths["best"], eval_model, self.optimizer, self)
        self.solved = mean >= self.args.solve_score

    def close(self) -> None:
        self.bar.close()
        self.csv_file.close()


# --------------------------------------------------------------------------- the four modes
def train_processes(args, model, optimizer, log, use_threads: bool = False) -> None:
    """A3C proper: workers run asynchronously against the shared model (processes or threads)."""
    if use_threads:
        Worker, global_steps = threading.Thread, mp.Value("q", log.steps)
        stop, episode_returns, update_lock = threading.Event(), queue.Queue(), threading.Lock()
    else:
        # fork starts workers without importing torch again; spawn where fork does not exist
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        Worker, global_steps = ctx.Process, ctx.Value("q", log.steps)
        stop, episode_returns, update_lock = ctx.Event(), ctx.SimpleQueue(), nullcontext()
    model.share_memory()  # the weights every worker reads and writes
    workers = [Worker(target=worker, daemon=True,
                      args=(rank, args, model, optimizer, global_steps, stop, episode_returns, update_lock))
               for rank in range(args.workers)]
    for w in workers:
        w.start()
    try:
        while True:
            while not episode_returns.empty():
                log.episode(episode_returns.get())
            if log.update(global_steps.value):
                break
            time.sleep(0.02)
    finally:
        stop.set()  # also on Ctrl-C: every worker sees it and leaves its loop
        for w in workers:
            w.join(timeout=5)
            if not use_threads and w.is_alive():
                w.terminate()


def train_threads(args, model, optimizer, log) -> None:
    """The same workers as threads: simple, but the GIL lets only one thread run Python at a
    time, so on CartPole (tiny tensors, mostly Python overhead) threads add no speed."""
    train_processes(args, model, optimizer, log, use_threads=True)


def train_batch(args, model, optimizer, log) -> None:
    """Synchronous A2C: one learner, one forward pass for a whole vector of environments."""
    torch.set_num_threads(1)
    # SAME_STEP autoreset: a finished env is reset inside step() and its final observation is
    # handed back in info["final_obs"], which we need to bootstrap a time-limit truncation.
    envs = gym.vector.SyncVectorEnv([make_env for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    rng = np.random.default_rng(args.seed)
    obs, _ = envs.reset(seed=args.seed)
    episode_return = np.zeros(args.num_envs)
    steps = log.steps
    try:
        while True:
            rollout = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")}
            for _ in range(args.rollout_len):
                with torch.no_grad():
                    actions = act(model.actor(torch.as_tensor(obs)), args.epsilon, rng)
                next_obs, rewards, terminated, truncated, info = envs.step(actions)
                done = terminated | truncated
                real_next_obs = next_obs.copy()
                if done.any():
                    real_next_obs[done] = np.stack(info["final_obs"][done])
                for key, value in zip(rollout, (obs, actions, rewards, real_next_obs, terminated, truncated)):
                    rollout[key].append(value)
                episode_return += rewards
                for ret in episode_return[done]:
                    log.episode(ret)
                episode_return[done] = 0.0
                obs = next_obs
            rollout = {k: np.asarray(v, dtype=np.int64 if k == "actions" else np.float32) for k, v in rollout.items()}
            loss = a3c_loss(model, **rollout, args=args)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            steps += args.rollout_len * args.num_envs
            if log.update(steps):
                break
    finally:
        envs.close()


def ga3c_actor(rank, args, shared_model, training_queue, episode_returns, stop) -> None:
    """GA3C actor: act with the shared weights, queue whole rollouts; it never learns itself."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.manual_seed(args.seed + rank)
    rollouts = Rollouts(make_env(), seed=args.seed + rank)
    while not stop.is_set():
        rollout, finished = rollouts.collect(shared_model, args)  # the trainer's weights, read directly
        for episode_return in finished:
            episode_returns.put(episode_return)
        while not stop.is_set():
            try:
                training_queue.put(rollout, timeout=0.1)  # blocks while the trainer is behind
                break
            except queue.Full:
                pass


def train_ga3c(args, model, optimizer, log) -> None:
    """GA3C (Babaeizadeh et al. 2017): actors feed a training queue, one trainer updates.

    The trainer's model can be a few updates ahead of the weights an actor used ("policy lag");
    GA3C accepts that bias for the throughput of batched updates."""
    torch.set_num_threads(1)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    model.share_memory()  # actors read the trainer's weights directly
    training_queue, episode_returns, stop = ctx.Queue(maxsize=4 * args.ga3c_batch), ctx.SimpleQueue(), ctx.Event()
    actors = [ctx.Process(target=ga3c_actor, daemon=True,
                          args=(rank, args, model, training_queue, episode_returns, stop))
              for rank in range(args.workers)]
    for a in actors:
        a.start()
    steps = log.steps
    try:
        while True:
            batch = [training_queue.get() for _ in range(args.ga3c_batch)]
            # stack rollouts side by side: arrays [T, batch], as one vector env would give
            rollout = {k: np.stack([r[k] for r in batch], axis=1) for k in batch[0]}
            loss = a3c_loss(model, **rollout, args=args)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            while not episode_returns.empty():
                log.episode(episode_returns.get())
            steps += args.rollout_len * args.ga3c_batch
            if log.update(steps):
                break
    finally:
        stop.set()
        for a in actors:
            a.join(timeout=5)
            if a.is_alive():
                a.terminate()


# --------------------------------------------------------------------------- evaluation and play
def evaluate(model: ActorCritic, episodes: int, seed: int, verbose: bool = False) -> list[float]:
    """Greedy (argmax) returns of `episodes` full episodes of the unmodified env, seeds seed, seed+1, ...

    The episodes run side by side in a vector env so each step is one batched forward pass."""
    envs = gym.vector.SyncVectorEnv([make_env for _ in range(episodes)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        with torch.no_grad():
            actions = model.actor(torch.as_tensor(obs)).argmax(-1).numpy()
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    if verbose:
        for i, ret in enumerate(returns):
            print(f"episode {i + 1:3d} (seed {seed + i}): return {ret:.1f}")
    return returns.tolist()


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def play(model: ActorCritic, episodes: int, seed: int, video: Path) -> None:
    """Greedy episodes in a window, or, without a display, recorded to a GIF."""
    headless = not has_display()
    env = make_env(render_mode="rgb_array" if headless else "human")
    frames = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            if headless:
                frames.append(env.render()[::2, ::2])  # half size keeps the GIF small
            with torch.no_grad():
                action = model.actor(torch.as_tensor(obs)).argmax().item()
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += reward
            done = terminated or truncated
        print(f"episode {episode + 1}: return {episode_return:.1f}")
    env.close()
    if headless:
        from PIL import Image  # comes with matplotlib
        video.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(f) for f in frames[::2]]  # every other frame, played at 25 fps
        images[0].save(video, save_all=True, append_images=images[1:], duration=40, loop=0)
        print(f"no display found: wrote {video}")


# --------------------------------------------------------------------------- checkpoints
class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or made for something else."""


def save_checkpoint(path: Path, model: nn.Module, optimizer, log: TrainingLog) -> None:
    """Everything --resume needs. Written to a temp file and renamed, so an interrupted save
    never destroys the previous checkpoint."""
    checkpoint = {
        "env_id": ENV_ID, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(log.args).items()},
        "steps": log.steps, "episodes": log.episodes, "seconds": log.seconds,
        "best_eval": log.best_eval, "evals_done": log.evals_done,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, unsafe pickle ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "args" not in checkpoint:
        raise CheckpointError(f"{path} is not a checkpoint of this script")
    if checkpoint.get("env_id") != ENV_ID:
        raise CheckpointError(f"{path} was trained on {checkpoint.get('env_id')}, not {ENV_ID}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, path: Path) -> ActorCritic:
    model = build_model(argparse.Namespace(hidden=checkpoint["args"].get("hidden", 64)))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise CheckpointError(f"{path} holds a different network architecture") from None
    return model


def newest_checkpoint() -> Path:
    """The newest trained checkpoint under runs/, else the shipped pretrained one."""
    trained = sorted(RUNS.glob("cartpole_*/model.pt"), key=lambda p: p.stat().st_mtime)
    return trained[-1] if trained else PRETRAINED


def paths_for(checkpoint: Path) -> dict[str, Path]:
    """A run's files sit beside its best checkpoint: model.pt, model_last.pt, model.csv, model.png."""
    stem = checkpoint.with_suffix("")
    return {"best": checkpoint, "last": Path(f"{stem}_last.pt"),
            "csv": Path(f"{stem}.csv"), "png": Path(f"{stem}.png")}


def plot_curve(csv_path: Path, png_path: Path) -> None:
    import matplotlib  # imported here: it costs most of a second, and only the end needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    train = [(int(r["step"]), float(r["wall_seconds"]), float(r["train_return"])) for r in rows if r["train_return"]]
    evals = [(int(r["step"]), float(r["wall_seconds"]), float(r["eval_mean"])) for r in rows if r["eval_mean"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, column, label in ((axes[0], 0, "env steps"), (axes[1], 1, "wall time (s)")):
        if train:
            ax.plot([t[column] for t in train], [t[2] for t in train], ".", ms=2, alpha=0.4,
                    label="training episodes (sampled actions)")
        if evals:
            ax.plot([e[column] for e in evals], [e[2] for e in evals], "o-", label="greedy evaluation mean")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("episode return")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"A3C on {ENV_ID}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> None:
    start = {"steps": 0, "episodes": 0, "seconds": 0.0, "best_eval": -math.inf, "evals_done": 0}
    if args.resume:
        path = args.checkpoint or newest_checkpoint()
        last = paths_for(path)["last"]
        checkpoint = load_checkpoint(last if last.is_file() else path)
        saved = checkpoint["args"]
        for key in saved.keys() - set(args.explicit) - {"train", "resume", "explicit", "checkpoint"}:
            setattr(args, key, Path(saved[key]) if key == "video" else saved[key])
        args.checkpoint = path
        start.update({k: checkpoint[k] for k in start})
        print(f"resuming from {last if last.is_file() else path} at step {start['steps']}")
    elif args.checkpoint is None:
        args.checkpoint = RUNS / f"cartpole_{args.mode}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}" / "model.pt"
    paths = paths_for(args.checkpoint)
    paths["best"].parent.mkdir(parents=True, exist_ok=True)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    model = model_from_checkpoint(checkpoint, path) if args.resume else build_model(args)
    optimizer = SharedAdam(model.parameters(), lr=args.lr)
    if args.resume:
        optimizer.load_state_dict(checkpoint["optimizer"])

    log = TrainingLog(args, paths, model, optimizer, start)
    launch = {"processes": train_processes, "threads": train_threads, "batch": train_batch, "ga3c": train_ga3c}
    try:
        launch[args.mode](args, model, optimizer, log)
    except KeyboardInterrupt:
        log.bar.write("interrupted: saving and stopping the workers")
    finally:
        log.close()
        save_checkpoint(paths["last"], model, optimizer, log)
    if not paths["best"].exists():  # stopped before the first evaluation
        save_checkpoint(paths["best"], model, optimizer, log)
    plot_curve(paths["csv"], paths["png"])
    outcome = "solved" if log.solved else "not solved"
    print(f"{outcome}: best greedy evaluation {log.best_eval:.1f} after {log.steps} steps, "
          f"{log.seconds:.1f} s. Best weights: {paths['best']}  curve: {paths['png']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.train:
            train(args)
            return 0
        path = args.checkpoint or newest_checkpoint()
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint, path)
        print(f"loaded {path} (trained {checkpoint['steps']} steps)")
        if args.eval:
            returns = evaluate(model, args.episodes, args.seed, verbose=True)
            print(f"mean {np.mean(returns):.1f} std {np.std(returns):.1f} over {len(returns)} episodes")
        else:
            play(model, args.episodes, args.seed, args.video)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
