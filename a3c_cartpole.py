"""A3C (Asynchronous Advantage Actor-Critic) on CartPole-v1, the reference script of this repo.

    python a3c_cartpole.py --train              # train until solved (a few seconds), save, plot
    python a3c_cartpole.py --play               # watch the greedy agent (a GIF when headless)
    python a3c_cartpole.py --eval --episodes 100    # held-out episodes (seeds from 1,000,000)
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

Seeds: training envs start from seeds below 500,000 (derived from --seed, the worker and the
step count, so a resumed run plays new episodes); the evaluations during training play seeds
from 500,000; --eval and --play default to seeds from 1,000,000, which no training run sees.

The file reads top to bottom: the network, the loss, the worker and what it uses, the four
modes; below the banner, the plumbing (evaluation, log, checkpoints, flags).
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
import traceback
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
TRAIN_SEEDS, VALIDATION_SEED, TEST_SEED = 500_000, 500_000, 1_000_000  # the seed rule of the docstring
LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "grad_norm")  # logged, averaged per CSV row


# --------------------------------------------------------------------------- the network
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


def build_model(hidden: int) -> ActorCritic:
    env = make_env()
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n, hidden)
    env.close()
    return model


# --------------------------------------------------------------------------- the loss (steps 3 and 4)
def a3c_loss(model: ActorCritic, obs, actions, rewards, next_obs, terminated, truncated,
             args: argparse.Namespace) -> tuple[torch.Tensor, list[float]]:
    """The A3C loss of one rollout (arrays [T] or [T, N] per step; obs [T, ..., obs_size]), and
    its terms (policy loss, value loss, entropy) for the log."""
    logits, values = model(torch.as_tensor(obs))
    # V(s_{t+1}) for every step: the critic is tiny, so it simply runs on every next_obs (the
    # pixel scripts reuse the next row's V(s_t) instead, to save a forward pass of the conv net)
    with torch.no_grad():  # bootstrap targets are constants, no gradient through them
        next_values = model.critic(torch.as_tensor(next_obs)).squeeze(-1).numpy()
    # 3. R_t = r_t + gamma * R_{t+1} and A_t = R_t - V(s_t), from values without gradient: the
    # advantage weighs the policy gradient and must not itself be pushed by it ("held constant")
    advantages, returns = gae_advantages(rewards, values.detach().numpy(), next_values,
                                         terminated, truncated, args.gamma, args.gae_lambda)
    advantages, returns = torch.as_tensor(advantages), torch.as_tensor(returns)
    # 4. the loss
    log_probs = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(actions).unsqueeze(-1)).squeeze(-1)
    policy_loss = -(log_probs * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = entropy_from_logits(logits).mean()
    loss = policy_loss + args.value_coef * value_loss - args.entropy_coef * entropy
    return loss, [policy_loss.item(), value_loss.item(), entropy.item()]


# --------------------------------------------------------------------------- the worker
def worker(rank: int, seed: int, args: argparse.Namespace, shared_model: ActorCritic, optimizer: SharedAdam,
           global_steps, stop, episode_returns, loss_sums, errors, parent_pid: int | None, update_lock) -> None:
    """One A3C worker (the docstring's steps 1-5): the same function runs as a process or as a thread."""
    torch.set_num_threads(1)  # one core per worker; torch's own thread pool would fight the others
    if parent_pid is not None:  # a process (a thread shares its process's signals and parent)
        ignore_parents_signals()
    try:
        torch.manual_seed(seed)
        rollouts = Rollouts(make_env(), seed=seed)
        local_model = build_model(args.hidden)
        # stop when told, or when the parent process is gone (killed without a chance to tell us)
        while not stop.is_set() and (parent_pid is None or os.getppid() == parent_pid):
            local_model.load_state_dict(shared_model.state_dict())  # 1. theta' <- theta
            rollout, finished = rollouts.collect(local_model, args)  # 2. n steps with pi(.|s; theta')
            for episode_return in finished:
                episode_returns.put(episode_return)
            loss, terms = a3c_loss(local_model, **rollout, args=args)  # 3. and 4.
            local_model.zero_grad()  # fresh gradients for this update only (see hand_over_gradients)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(local_model.parameters(), args.max_grad_norm).item()
            if not math.isfinite(grad_norm):  # a NaN or inf loss: stop before it reaches the shared weights
                raise FloatingPointError(f"the loss or its gradient is not finite (loss {loss.item()})")
            # 5. Threads share one shared_model object, so one thread's .grad could be swapped under
            # another's step: they take a lock. Processes each have their own .grad: no lock (Hogwild).
            with update_lock:
                hand_over_gradients(local_model, shared_model)
                optimizer.step()  # updates the shared weights and the shared Adam moments
            add_to(loss_sums, [*terms, grad_norm])
            with global_steps.get_lock():
                global_steps.value += args.rollout_len
    except Exception:  # the parent prints it, saves and stops the run
        errors.put(f"worker {rank} failed:\n{traceback.format_exc()}")
        sys.exit(1)


# --------------------------------------------------------------------------- what the worker uses
class Rollouts:
    """Steps one env with a model; carries the observation and the episode's return across rollouts."""

    def __init__(self, env: gym.Env, seed: int):
        self.env, self.rng = env, np.random.default_rng(seed)
        self.obs, _ = env.reset(seed=seed)  # later episodes take their seeds from the env's own RNG
        self.episode_return = 0.0

    def collect(self, model: ActorCritic, args: argparse.Namespace) -> tuple[dict, list[float]]:
        """n steps: the rollout arrays [T] and the returns of the episodes that ended in them."""
        rollout = {k: [] for k in ROLLOUT_DTYPES}
        finished = []
        for _ in range(args.rollout_len):
            with torch.no_grad():
                action = act(model.actor(torch.as_tensor(self.obs)), args.epsilon, self.rng)[0]
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            for key, value in zip(ROLLOUT_DTYPES, (self.obs, action, reward, next_obs, terminated, truncated)):
                rollout[key].append(value)
            self.episode_return += reward
            self.obs = next_obs
            if terminated or truncated:  # next_obs stays in the rollout: V(final obs) bootstraps a truncation
                finished.append(self.episode_return)
                self.episode_return = 0.0
                self.obs, _ = self.env.reset()
        return {k: np.asarray(v, dtype=ROLLOUT_DTYPES[k]) for k, v in rollout.items()}, finished


ROLLOUT_DTYPES = {"obs": np.float32, "actions": np.int64, "rewards": np.float32, "next_obs": np.float32,
                  "terminated": np.float32, "truncated": np.float32}


def act(logits: torch.Tensor, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Sample a ~ pi(.|s); with probability epsilon take a uniform random action instead.

    epsilon > 0 makes the update off-policy: the loss still treats each action as drawn from pi,
    which biases the gradient a little. It is 0 by default; the entropy bonus explores instead."""
    actions = torch.multinomial(torch.softmax(logits, -1).reshape(-1, logits.shape[-1]), 1).view(-1).numpy()
    if epsilon > 0:
        explore = rng.random(actions.shape) < epsilon
        actions = np.where(explore, rng.integers(logits.shape[-1], size=actions.shape), actions)
    return actions


def hand_over_gradients(local_model: nn.Module, shared_model: nn.Module) -> None:
    """Point the shared parameters' .grad at this update's local gradients.

    Done on every update: local_model.zero_grad() sets the local grads to None before each
    backward, so backward makes fresh tensors, and the shared model must see each new one
    (copying only `if shared.grad is None` would freeze the shared gradient at the first update).
    In worker processes .grad is a per-process attribute; only the weights live in shared memory."""
    for local, shared in zip(local_model.parameters(), shared_model.parameters()):
        shared.grad = local.grad


class SharedAdam:
    """Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980) with its state in shared memory.

    Shared between all workers: the step count t, the moments m and v, and the learning rate
    (the parent lowers it as the budget is used), like the weights themselves. An optimizer
    created inside each worker would silently give every worker its own moments. Written out
    rather than subclassing torch.optim.Adam: the maths fits in a few lines, and torch.optim's
    first use costs a second of start-up (it imports torch._dynamo).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.betas, self.eps = betas, eps
        self.lr = torch.tensor(lr, dtype=torch.float64).share_memory_()
        self.t = torch.zeros((), dtype=torch.int64).share_memory_()
        self.m = [torch.zeros_like(p).share_memory_() for p in self.params]  # first moments
        self.v = [torch.zeros_like(p).share_memory_() for p in self.params]  # second moments

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        t = int(self.t)
        step_size = float(self.lr) * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)  # bias correction
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


def add_to(loss_sums, values: list[float]) -> None:
    """Add one update's loss terms to the running sums the log averages (the last slot counts updates)."""
    with loss_sums.get_lock():
        for i, value in enumerate(values):
            loss_sums[i] += value
        loss_sums[len(values)] += 1


# --------------------------------------------------------------------------- the four modes
def train_processes(args, model, optimizer, log, use_threads: bool = False) -> None:
    """A3C proper: workers run asynchronously against the shared model (processes or threads)."""
    if use_threads:
        Worker, global_steps, errors = threading.Thread, mp.Value("q", log.steps), queue.Queue()
        stop, episode_returns, update_lock, parent_pid = threading.Event(), queue.Queue(), threading.Lock(), None
    else:
        # fork starts workers without importing torch again; macOS and Windows use their default, spawn
        ctx = mp.get_context("fork" if sys.platform == "linux" else None)
        Worker, global_steps, errors = ctx.Process, ctx.Value("q", log.steps), ctx.SimpleQueue()
        stop, episode_returns, update_lock, parent_pid = ctx.Event(), ctx.SimpleQueue(), nullcontext(), os.getpid()
    model.share_memory()  # the weights every worker reads and writes
    workers = [Worker(target=worker, daemon=True,
                      args=(rank, training_seed(args.seed, rank, log.steps), args, model, optimizer, global_steps,
                            stop, episode_returns, log.loss_sums, errors, parent_pid, update_lock))
               for rank in range(args.workers)]
    for w in workers:
        w.start()
    try:
        while True:
            while not episode_returns.empty():
                log.episode(episode_returns.get())
            check_alive(workers, errors)
            if log.progress(global_steps.value):
                break
            time.sleep(0.02)
    finally:
        stop.set()  # also on Ctrl-C, SIGTERM, SIGHUP, a failure: every worker sees it and leaves its loop
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
    seed = training_seed(args.seed, 0, log.steps)
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    episode_return = np.zeros(args.num_envs)
    steps = log.steps
    try:
        while True:
            rollout = {k: [] for k in ROLLOUT_DTYPES}
            for _ in range(args.rollout_len):
                with torch.no_grad():
                    actions = act(model.actor(torch.as_tensor(obs)), args.epsilon, rng)
                next_obs, rewards, terminated, truncated, info = envs.step(actions)
                done = terminated | truncated
                real_next_obs = next_obs.copy()
                if done.any():
                    real_next_obs[done] = np.stack(info["final_obs"][done])
                for key, value in zip(ROLLOUT_DTYPES, (obs, actions, rewards, real_next_obs, terminated, truncated)):
                    rollout[key].append(value)
                episode_return += rewards
                for ret in episode_return[done]:
                    log.episode(ret)
                episode_return[done] = 0.0
                obs = next_obs
            rollout = {k: np.asarray(v, dtype=ROLLOUT_DTYPES[k]) for k, v in rollout.items()}
            loss, terms = a3c_loss(model, **rollout, args=args)
            optimizer.zero_grad()
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
            if not math.isfinite(grad_norm):
                raise TrainingFailed(f"the loss or its gradient is not finite (loss {loss.item()})")
            optimizer.step()
            add_to(log.loss_sums, [*terms, grad_norm])
            steps += args.rollout_len * args.num_envs
            if log.progress(steps):
                break
    finally:
        envs.close()


def ga3c_actor(rank, seed, args, shared_model, training_queue, episode_returns, stop, errors, parent_pid) -> None:
    """GA3C actor: act with the shared weights, queue whole rollouts; it never learns itself."""
    torch.set_num_threads(1)
    ignore_parents_signals()
    try:
        torch.manual_seed(seed)
        rollouts = Rollouts(make_env(), seed=seed)
        while not stop.is_set() and os.getppid() == parent_pid:
            rollout, finished = rollouts.collect(shared_model, args)  # the trainer's weights, read directly
            for episode_return in finished:
                episode_returns.put(episode_return)
            while not stop.is_set():
                try:
                    training_queue.put(rollout, timeout=0.1)  # blocks while the trainer is behind
                    break
                except queue.Full:
                    pass
    except Exception:
        errors.put(f"actor {rank} failed:\n{traceback.format_exc()}")
        sys.exit(1)


def train_ga3c(args, model, optimizer, log) -> None:
    """GA3C (Babaeizadeh et al. 2017): actors feed a training queue, one trainer updates.

    The trainer's model can be a few updates ahead of the weights an actor used ("policy lag");
    GA3C accepts that bias for the throughput of batched updates."""
    torch.set_num_threads(1)
    ctx = mp.get_context("fork" if sys.platform == "linux" else None)
    model.share_memory()  # actors read the trainer's weights directly
    training_queue, episode_returns, stop = ctx.Queue(maxsize=4 * args.ga3c_batch), ctx.SimpleQueue(), ctx.Event()
    errors = ctx.SimpleQueue()
    actors = [ctx.Process(target=ga3c_actor, daemon=True,
                          args=(rank, training_seed(args.seed, rank, log.steps), args, model, training_queue,
                                episode_returns, stop, errors, os.getpid()))
              for rank in range(args.workers)]
    for a in actors:
        a.start()
    steps = log.steps
    try:
        while True:
            batch = []
            while len(batch) < args.ga3c_batch:
                try:
                    batch.append(training_queue.get(timeout=0.5))
                except queue.Empty:
                    check_alive(actors, errors)  # a dead actor must not leave the trainer waiting forever
            # stack rollouts side by side: arrays [T, batch], as one vector env would give
            rollout = {k: np.stack([r[k] for r in batch], axis=1) for k in batch[0]}
            loss, terms = a3c_loss(model, **rollout, args=args)
            optimizer.zero_grad()
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
            if not math.isfinite(grad_norm):
                raise TrainingFailed(f"the loss or its gradient is not finite (loss {loss.item()})")
            optimizer.step()
            add_to(log.loss_sums, [*terms, grad_norm])
            while not episode_returns.empty():
                log.episode(episode_returns.get())
            check_alive(actors, errors)
            steps += args.rollout_len * args.ga3c_batch
            if log.progress(steps):
                break
    finally:
        stop.set()
        for a in actors:
            a.join(timeout=5)
            if a.is_alive():
                a.terminate()


def check_alive(workers: list, errors) -> None:
    """A worker must not die silently and leave the others training without it (or the GA3C
    trainer waiting forever): raise TrainingFailed with its traceback."""
    dead = [w for w in workers if not w.is_alive()]
    if dead:
        exitcode = getattr(dead[0], "exitcode", None)
        raise TrainingFailed(errors.get() if not errors.empty() else
                             f"a worker died with exit code {exitcode} (killed for memory?)")


def training_seed(seed: int, rank: int, steps: int) -> int:
    """The first seed of a worker's envs: below TRAIN_SEEDS, and new after every --resume."""
    return int(np.random.SeedSequence([seed, rank, steps]).generate_state(1)[0]) % (TRAIN_SEEDS - 1000)


def validation_seed(evals_done: int, episodes: int) -> int:
    """The first seed of an evaluation during training: fresh seeds each time, all of them
    between VALIDATION_SEED and TEST_SEED (--eval-episodes is at most 100,000)."""
    return VALIDATION_SEED + (episodes * evals_done) % (TEST_SEED - VALIDATION_SEED - 100_000)


def make_env(render_mode: str | None = None) -> gym.Env:
    return gym.make(ENV_ID, render_mode=render_mode)


# ===========================================================================================
# Everything below is plumbing: evaluation and play, the training log, checkpoints, the plot,
# the command line. The reinforcement learning is all above.
# ===========================================================================================


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


# --------------------------------------------------------------------------- training log
class TrainingFailed(Exception):
    """A worker died or the loss stopped being a number: the run saves and stops."""


class TrainingLog:
    """Progress bar, metrics CSV, the loss terms, periodic greedy evaluation, best checkpoint,
    learning-rate schedule and stopping rule."""

    def __init__(self, args, paths, model, optimizer, start):
        self.args, self.paths, self.model, self.optimizer = args, paths, model, optimizer
        self.steps, self.episodes = start["steps"], start["episodes"]
        self.best_eval, self.evals_done = start["best_eval"], start["evals_done"]
        self.seconds_before = start["seconds"]  # wall time of earlier runs joined by --resume
        self.started = time.time()
        self.next_eval = self.steps + args.eval_every
        self.log_every = max(1, args.eval_every // 10)
        self.next_row, self.row_started = self.steps + self.log_every, time.time()
        self.loss_sums = mp.Array("d", len(LOSS_TERMS) + 1)  # the workers add to it (add_to)
        self.recent, self.entropy = [], math.nan
        self.solved = False
        new_file = not paths["csv"].exists()
        self.csv_file = open(paths["csv"], "a", newline="")
        self.csv = csv.writer(self.csv_file)
        if new_file:
            self.csv.writerow(["step", "wall_seconds", "train_return", "eval_mean", "eval_std",
                               *LOSS_TERMS, "updates_per_s"])
        self.bar = tqdm(total=args.max_steps, initial=self.steps, unit="step", dynamic_ncols=True,
                        mininterval=0.5, smoothing=0.1)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.time() - self.started

    def episode(self, episode_return: float) -> None:
        self.episodes += 1
        self.recent = (self.recent + [episode_return])[-20:]
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", episode_return])

    def progress(self, steps: int) -> bool:
        """Training has reached `steps`: move the bar, log the losses, lower the learning rate,
        validate and keep the best checkpoint when due. True when training should stop."""
        self.bar.update(steps - self.steps)
        self.steps = steps
        if self.steps >= self.next_row:
            self.next_row += self.log_every
            self.write_losses()
        budget_used = min(1.0, max(self.steps / self.args.max_steps, self.seconds / self.args.max_seconds))
        if self.args.lr_schedule == "linear":  # falls to 0 at the end of the budget, as in the A3C paper
            self.optimizer.lr.fill_(self.args.lr * (1.0 - budget_used))
        if self.steps >= self.next_eval:
            self.next_eval += self.args.eval_every
            self.validate()
        self.bar.set_postfix(ret=f"{np.mean(self.recent) if self.recent else 0:.0f}",
                             eval=f"{self.best_eval:.0f}", ent=f"{self.entropy:.2f}", refresh=False)
        return self.solved or budget_used >= 1.0

    def write_losses(self) -> None:
        """One CSV row with the loss terms averaged over the updates since the last row."""
        with self.loss_sums.get_lock():
            sums = list(self.loss_sums)
            for i in range(len(sums)):
                self.loss_sums[i] = 0.0
        updates, now = sums[-1], time.time()
        if updates:
            means = [s / updates for s in sums[:-1]]
            self.entropy = means[LOSS_TERMS.index("entropy")]
            self.csv.writerow([self.steps, f"{self.seconds:.2f}", "", "", "", *(f"{m:.5g}" for m in means),
                               f"{updates / (now - self.row_started):.2f}"])
        self.row_started = now

    def validate(self) -> None:
        """Greedy episodes on fresh validation seeds; keep the best weights; solved?"""
        # Evaluate a snapshot, so the weights saved are exactly the weights that scored.
        eval_model = build_model(self.args.hidden)
        eval_model.load_state_dict({k: v.clone() for k, v in self.model.state_dict().items()})
        seed = validation_seed(self.evals_done, self.args.eval_episodes)
        returns = evaluate(eval_model, self.args.eval_episodes, seed)
        self.evals_done += 1
        mean = float(np.mean(returns))
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", "", f"{mean:.1f}", f"{np.std(returns):.1f}"])
        if mean >= self.best_eval:
            self.best_eval = mean
            save_checkpoint(self.paths["best"], eval_model, None, self)  # weights only: small
        self.solved = mean >= self.args.solve_score

    def close(self) -> None:
        self.bar.close()
        self.csv_file.close()


# --------------------------------------------------------------------------- checkpoints
class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or made for something else."""


def save_checkpoint(path: Path, model: nn.Module, optimizer: SharedAdam | None, log: TrainingLog) -> None:
    """The weights, the arguments and the counters; with an optimizer, everything --resume needs.
    Written to a temp file, flushed to disk and renamed, so an interrupted save never destroys
    the previous checkpoint."""
    checkpoint = {
        "env_id": ENV_ID, "model": model.state_dict(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(log.args).items()},
        "steps": log.steps, "episodes": log.episodes, "seconds": log.seconds,
        "best_eval": log.best_eval, "evals_done": log.evals_done,
    }
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename, or a crash could leave an empty file
    os.replace(tmp, path)


def load(path: Path) -> tuple[ActorCritic, dict]:
    """The model saved at `path` and the whole checkpoint (its args, counters and perhaps the
    optimizer state); a CheckpointError with a one-line reason if that is not possible."""
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
    model = build_model(checkpoint["args"].get("hidden", 64))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise CheckpointError(f"{path} holds a different network architecture") from None
    return model, checkpoint


def newest_run() -> Path | None:
    """The best checkpoint of the newest run under runs/, if there is one."""
    trained = sorted(RUNS.glob("cartpole_*/model.pt"), key=lambda p: p.stat().st_mtime)
    return trained[-1] if trained else None


def paths_for(checkpoint: Path) -> dict[str, Path]:
    """A run's files sit beside its best checkpoint: model.pt (weights only), model_last.pt (to
    --resume from), model.csv, model.png."""
    stem = checkpoint.with_suffix("")
    return {"best": checkpoint, "last": Path(f"{stem}_last.pt"),
            "csv": Path(f"{stem}.csv"), "png": Path(f"{stem}.png")}


# --------------------------------------------------------------------------- the plot
def plot_curve(csv_path: Path, png_path: Path) -> None:
    """Returns against env steps and wall time (top); the loss terms and updates/s (bottom)."""
    import matplotlib  # imported here: it costs most of a second, and only the end needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))

    def series(name):
        return [(int(r["step"]), float(r["wall_seconds"]), float(r[name])) for r in rows if r.get(name)]

    train, evals = series("train_return"), series("eval_mean")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, column, label in ((axes[0, 0], 0, "env steps"), (axes[0, 1], 1, "wall time (s)")):
        if train:
            ax.plot([t[column] for t in train], [t[2] for t in train], ".", ms=2, alpha=0.4,
                    label="training episodes (sampled actions)")
        if evals:
            ax.plot([e[column] for e in evals], [e[2] for e in evals], "o-", label="greedy evaluation mean")
        ax.set_xlabel(label)
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    panels = [(axes[0, 2], "updates_per_s", "updates / s"), (axes[1, 0], "policy_loss", "policy loss"),
              (axes[1, 1], "value_loss", "value loss (log scale)"), (axes[1, 2], "entropy", "entropy (nats)")]
    for ax, name, label in panels:
        points = series(name)
        ax.plot([p[0] for p in points], [p[2] for p in points], "-", lw=1)
        ax.set_xlabel("env steps")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if series("value_loss"):
        axes[1, 1].set_yscale("log")
    grad = series("grad_norm")
    twin = axes[0, 2].twinx()  # the gradient norm before clipping shares the throughput panel
    twin.plot([p[0] for p in grad], [p[2] for p in grad], "-", lw=1, color="tab:red")
    twin.set_ylabel("gradient norm before clipping", color="tab:red", fontsize=9)
    fig.suptitle(f"A3C on {ENV_ID}")
    # fixed margins: cheaper than tight_layout, which draws every label once more to measure it
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.08, top=0.92, wspace=0.35, hspace=0.35)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the command line
def default_workers() -> int:
    """One worker per core this process may use, at most 8: each worker keeps one core busy,
    more workers than cores only adds switching, and beyond 8 this script was never measured."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A3C on CartPole-v1: train, play, evaluate.",
        usage="%(prog)s (--train [--resume] | --play | --eval) [options]; see --help",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--train", action="store_true", help="train a new agent (or --resume one)")
    what.add_argument("--play", action="store_true",
                      help="show the greedy agent in a window; writes a GIF when there is no display")
    what.add_argument("--eval", action="store_true", help="greedy episodes; print each return and mean/std")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="--train: where to save the best weights (metrics, curve and last "
                             "checkpoint go beside it); --play/--eval/--resume: what to load. "
                             "Default: a new runs/ folder for --train; the newest runs/cartpole_*/model.pt "
                             "for --resume; that, else the shipped pretrained/cartpole.pt, for the others")
    parser.add_argument("--resume", action="store_true",
                        help="with --train: continue a run from its model_last.pt: model, optimizer, "
                             "counters and hyperparameters; flags you type win, except ones that "
                             "change the network")
    parser.add_argument("--mode", choices=["processes", "threads", "batch", "ga3c"], default="processes",
                        help="how experience is gathered; see the module docstring")
    parser.add_argument("--seed", type=int, default=None,
                        help="--train: seeds python, numpy, torch and the training envs (default 0); "
                             "--eval/--play: the first episode's seed (default 1000000, never trained on)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="--eval: greedy episodes (default 100); --play: episodes (default 1)")
    parser.add_argument("--video", type=Path, default=RUNS / "videos" / "cartpole.gif",
                        help="--play without a display: where the GIF goes")

    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--workers", type=int, default=default_workers(),
                    help="worker processes/threads (default: one per core, at most 8)")
    hp.add_argument("--num-envs", type=int, default=8, help="--mode batch: environments in the vector")
    hp.add_argument("--rollout-len", type=int, default=20, help="n: steps per update per env (t_max)")
    hp.add_argument("--gamma", type=float, default=0.99, help="discount factor")
    hp.add_argument("--gae-lambda", type=float, default=1.0, help="GAE lambda; 1.0 is the paper's n-step advantage")
    hp.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    hp.add_argument("--lr-schedule", choices=["linear", "constant"], default="constant",
                    help="linear: the learning rate falls to 0 at the end of the budget (--max-steps or "
                         "--max-seconds, whichever comes first)")
    hp.add_argument("--entropy-coef", type=float, default=0.01, help="weight of the entropy bonus")
    hp.add_argument("--value-coef", type=float, default=0.5, help="weight of the critic's squared error")
    hp.add_argument("--max-grad-norm", type=float, default=1.0, help="clip each update's gradient norm to this")
    hp.add_argument("--epsilon", type=float, default=0.0,
                    help="probability of a uniform random action instead of sampling pi; makes the "
                         "update off-policy (the loss treats those actions as pi's)")
    hp.add_argument("--hidden", type=int, default=64, help="hidden units of the actor and critic MLPs")
    hp.add_argument("--ga3c-batch", type=int, default=4, help="--mode ga3c: rollouts per trainer update")

    budget = parser.add_argument_group("stopping and evaluation")
    budget.add_argument("--max-steps", type=int, default=1_000_000, help="stop after this many env steps")
    budget.add_argument("--max-seconds", type=float, default=600.0,
                        help="stop after this much wall time, earlier runs joined by --resume included")
    budget.add_argument("--eval-every", type=int, default=10_000, help="greedy evaluation every this many steps")
    budget.add_argument("--eval-episodes", type=int, default=20, help="greedy episodes per evaluation")
    budget.add_argument("--solve-score", type=float, default=500.0,
                        help="stop once an evaluation's mean return reaches this")
    return parser


# a typed flag that differs from a resumed run's would give a network that does not match its weights
ARCHITECTURE = ("hidden",)
NOT_RESTORED = {"train", "play", "eval", "resume", "checkpoint"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        if not args.train:
            parser.error("--resume goes with --train")
        run = args.checkpoint or newest_run()  # never the shipped checkpoint, unless named
        if run is None:
            parser.error(f"nothing to resume under {RUNS}/: pass --checkpoint PATH/model.pt of the run")
        try:
            _, checkpoint = load(resume_point(run))
        except CheckpointError as error:
            parser.error(str(error))
        # the saved arguments become the defaults, so only the flags typed now override them
        saved = {k: v for k, v in checkpoint["args"].items() if k in vars(args) and k not in NOT_RESTORED}
        parser.set_defaults(**saved)
        args = parser.parse_args(argv)
        for name in ARCHITECTURE:
            if name in saved and getattr(args, name) != saved[name]:
                parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} does not match the run's "
                             f"{saved[name]}; a resumed run keeps its network")
        args.checkpoint = run
    if args.seed is None:
        args.seed = 0 if args.train else TEST_SEED
    if args.episodes is None:
        args.episodes = 1 if args.play else 100
    for name in ("workers", "num_envs", "rollout_len", "hidden", "episodes", "ga3c_batch",
                 "max_steps", "eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.eval_episodes > 100_000 or args.seed < 0:
        parser.error("--seed must be at least 0 and --eval-episodes at most 100000")
    if not 0.0 <= args.epsilon <= 1.0 or not 0.0 < args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        parser.error("--epsilon and --gae-lambda must lie in [0, 1], --gamma in (0, 1]")
    if args.lr <= 0 or args.max_seconds <= 0:
        parser.error("--lr and --max-seconds must be positive")
    return args


def resume_point(checkpoint: Path) -> Path:
    """A run resumes from its model_last.pt (weights, optimizer, counters); a checkpoint without
    one (an older run's) is its own resume point."""
    last = paths_for(checkpoint)["last"]
    return last if last.is_file() else checkpoint


# --------------------------------------------------------------------------- train and main
def train(args: argparse.Namespace) -> int:
    start = {"steps": 0, "episodes": 0, "seconds": 0.0, "best_eval": -math.inf, "evals_done": 0}
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    if args.resume:
        resume_from = resume_point(args.checkpoint)
        model, checkpoint = load(resume_from)
        if "optimizer" not in checkpoint:  # a best model.pt holds weights only
            raise CheckpointError(f"{resume_from} has no optimizer state to resume from")
        start.update({k: checkpoint[k] for k in start})
        print(f"resuming from {resume_from} at step {start['steps']}")
    else:
        model = build_model(args.hidden)
        if args.checkpoint is None:
            args.checkpoint = RUNS / f"cartpole_{args.mode}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}" / "model.pt"
    paths = paths_for(args.checkpoint)
    paths["best"].parent.mkdir(parents=True, exist_ok=True)

    optimizer = SharedAdam(model.parameters(), lr=args.lr)
    if args.resume:
        optimizer.load_state_dict(checkpoint["optimizer"])

    log = TrainingLog(args, paths, model, optimizer, start)
    launch = {"processes": train_processes, "threads": train_threads, "batch": train_batch, "ga3c": train_ga3c}
    failure = None
    stop_on_signal()
    try:
        launch[args.mode](args, model, optimizer, log)
    except KeyboardInterrupt:
        log.bar.write("interrupted: saving and stopping the workers")
    except TrainingFailed as error:
        failure = error
    finally:
        log.close()
        save_checkpoint(paths["last"], model, optimizer, log)
    if not paths["best"].exists():  # stopped before the first evaluation
        save_checkpoint(paths["best"], model, None, log)
    plot_curve(paths["csv"], paths["png"])
    if failure is not None:
        print(f"error: training stopped: {failure}\nthe last weights are in {paths['last']} "
              f"(--resume continues from them), the best in {paths['best']}", file=sys.stderr)
        return 1
    outcome = "solved" if log.solved else "not solved"
    print(f"{outcome}: best greedy evaluation {log.best_eval:.1f} after {log.steps} steps, "
          f"{log.seconds:.1f} s. Best weights: {paths['best']}  curve: {paths['png']}")
    return 0


def stop_on_signal() -> None:
    """Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed terminal (SIGHUP) all stop training the same
    way: save, stop every worker. SIGINT is set here too: a script that starts a command in the
    background (`cmd &`) makes it ignore SIGINT, and Python would go on ignoring it."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):  # Windows has no SIGHUP
            signal.signal(getattr(signal, name), interrupt)


def ignore_parents_signals() -> None:
    """In a worker process: Ctrl-C and a closed terminal reach the whole process group, and are
    the parent's to handle (it tells the workers to stop); SIGTERM from the parent ends a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.train:
            return train(args)
        path = args.checkpoint or newest_run() or PRETRAINED
        model, checkpoint = load(path)
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
