"""A3C (Asynchronous Advantage Actor-Critic) on CartPole-v1: the reference script, to read first.

    python a3c_cartpole.py --train              # train until solved (seconds), keep the best weights, plot
    python a3c_cartpole.py --play               # watch the agent (a GIF when headless)
    python a3c_cartpole.py --eval               # 30 held-out episodes (seeds from 1,000,000)
    python a3c_cartpole.py --train --mode batch # the modes: processes, threads, batch, ga3c

A3C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783): workers, each with its own environments
and a local copy of one shared actor-critic network, repeat:

    1. copy the shared weights:                    theta' <- theta
    2. act for n steps with pi(a | s; theta') (an episode that ends in them starts again)
    3. n-step return:                              R_t = r_t + gamma * R_{t+1},  R_n = V(s_n)
       (0 after a terminal state; V of the last state when a time limit cuts the episode)
       advantage:                                  A_t = R_t - V(s_t)     (GAE(lambda) with lambda=1)
    4. loss = -mean(log pi(a_t | s_t) * A_t)             policy gradient, A_t held constant
              + value_coef   * mean((R_t - V(s_t))^2)    critic regression
              - entropy_coef * mean(H(pi(. | s_t)))      keeps the policy exploring
    5. gradients of the local copy -> shared model, one optimizer step on the shared weights

No lock guards step 5 between processes ("Hogwild"): updates may interleave, which works because
each is small, and makes runs not bit-reproducible, even with --seed. --mode: processes is A3C,
threads the same workers as threads, batch synchronous A2C (one learner, one vector of envs),
ga3c workers that only act and one trainer that learns. Seeds: training envs below 500,000,
validations the same seeds from 500,000, --eval and --play from 1,000,000, unseen in training.
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
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from a3c_util import entropy_from_logits, gae_advantages

ENV_ID = "CartPole-v1"
PRETRAINED = Path(__file__).parent / "pretrained"
RUNS = Path("runs")
TRAIN_SEEDS, VALIDATION_SEED, TEST_SEED = 500_000, 500_000, 1_000_000  # the seed rule of the docstring
LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "advantage_std", "grad_norm")  # logged, averaged per CSV row
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- the settings
# Every hyperparameter, its default and what it means. The command-line flags are made from this
# table (rollout_len is --rollout-len), so `args.gamma` in the loss is `gamma` here.
SETTINGS = {
    "workers": (min(CORES, 8), "worker processes or threads: one per core (more only adds switching), at most 8"),
    "envs_per_worker": (1, "environments each worker steps, with one batched forward pass"),
    "num_envs": (8, "--mode batch: environments in the one vector"),
    "ga3c_batch": (4, "--mode ga3c: rollouts per trainer update"),
    "rollout_len": (20, "n: steps per update per environment (t_max)"),
    "gamma": (0.99, "discount factor"),
    "gae_lambda": (1.0, "GAE lambda; 1.0 is the paper's n-step advantage"),
    "lr": (3e-3, "Adam learning rate"),
    "entropy_coef": (0.01, "weight of the entropy bonus"),
    "value_coef": (0.5, "weight of the critic's squared error"),
    "max_grad_norm": (1.0, "clip each update's gradient norm to this"),
    "hidden": (64, "hidden units of the actor and critic MLPs"),
    "max_steps": (1_000_000, "the budget: stop after this many agent steps"),
    "eval_every": (10_000, "validation every this many agent steps"),
    "eval_episodes": (20, "episodes per validation"),
    "solve_score": (500.0, "stop once a validation's mean return reaches this"),
}


# --------------------------------------------------------------------------- the network
class ActorCritic(nn.Module):
    """Separate actor and critic MLPs: in a shared trunk the critic's large errors would swamp the policy's."""

    def __init__(self, obs_size: int, n_actions: int, hidden: int):
        super().__init__()
        self.actor = nn.Sequential(nn.Linear(obs_size, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))
        self.critic = nn.Sequential(nn.Linear(obs_size, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits [..., A] and state values V(s) [...]."""
        return self.actor(obs), self.critic(obs).squeeze(-1)


def build_model(args: argparse.Namespace) -> ActorCritic:
    env = make_env(args)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n, args.hidden)
    env.close()
    return model


# --------------------------------------------------------------------------- the loss (steps 3 and 4)
def a3c_loss(model: ActorCritic, obs, actions, rewards, next_obs, terminated, truncated,
             args: argparse.Namespace, steps: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The A3C loss of one rollout (arrays [T, N, ...]) and its terms for the log (steps: unused here)."""
    logits, values = model(torch.as_tensor(obs))
    # V(s_{t+1}): the critic is tiny, so it runs on every next_obs (the pixel scripts save that pass)
    with torch.no_grad():  # bootstrap targets are constants, no gradient through them
        next_values = model.critic(torch.as_tensor(next_obs)).squeeze(-1).numpy()
    # 3. R_t = r_t + gamma * R_{t+1} and A_t = R_t - V(s_t), from values without gradient: the
    # advantage weighs the policy gradient and must not itself be pushed by it ("held constant")
    advantages, returns = gae_advantages(rewards, values.detach().numpy(), next_values,
                                         terminated, truncated, args.gamma, args.gae_lambda)
    advantages, returns = torch.as_tensor(advantages), torch.as_tensor(returns)
    advantage_std = advantages.std(correction=0).item()  # the policy gradient's scale, before any normalising
    # 4. the loss
    log_probs = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(actions).unsqueeze(-1)).squeeze(-1)
    policy_loss = -(log_probs * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = entropy_from_logits(logits).mean()
    loss = policy_loss + args.value_coef * value_loss - args.entropy_coef * entropy
    return loss, [policy_loss.item(), value_loss.item(), entropy.item(), advantage_std]


# --------------------------------------------------------------------------- the worker
def worker(rank: int, seed: int, args: argparse.Namespace, shared: Shared) -> None:
    """One A3C worker, the docstring's steps 1-5 on its own small vector of environments."""
    envs = make_vector_env(args, args.envs_per_worker, training=True)
    rollouts = Rollouts(envs, seed=seed)
    local_model = build_model(args)
    while not shared.stop.is_set() and os.getppid() == shared.parent_pid:  # (parent gone: leave)
        local_model.load_state_dict(shared.model.state_dict())  # 1. theta' <- theta
        rollout, finished = rollouts.collect(local_model, args)  # 2. n steps with pi(.|s; theta')
        steps = shared.global_steps.value  # all workers' steps so far: what any schedule follows
        loss, terms = a3c_loss(local_model, **rollout, args=args, steps=steps)  # 3. and 4.
        grad_norm = update_shared_model(loss, local_model, shared, args, steps)  # 5.
        report(shared, finished, [*terms, grad_norm], args.rollout_len * args.envs_per_worker)
    envs.close()


# --------------------------------------------------------------------------- what the worker uses
class Shared(NamedTuple):
    """What the workers share with each other and with the parent, as one bundle."""
    model: nn.Module  # the shared weights, in shared memory
    optimizer: SharedAdam  # its step count and moments are in shared memory too
    global_steps: Any = None  # agent steps taken by all workers together
    stop: Any = None  # an Event: the parent tells every worker to leave its loop
    reports: Any = None  # a queue to the parent: ("episode", raw return), ("losses", terms), ("error", text)
    parent_pid: int = 0  # a worker process leaves when its parent is gone (threads: the process's parent)
    update_lock: Any = nullcontext()  # threads lock step 5 (they share one .grad); processes need none
    rollout_queue: Any = None  # GA3C: actors queue their rollouts for the trainer


class Rollouts:
    """Steps a vector of envs with a model; keeps each env's raw return across rollouts."""

    def __init__(self, envs: gym.vector.VectorEnv, seed: int):
        self.envs = envs
        self.obs, _ = envs.reset(seed=seed)  # env i starts from seed + i, later episodes from its own RNG
        self.scores = np.zeros(envs.num_envs)

    def collect(self, model: ActorCritic, args: argparse.Namespace) -> tuple[dict, list[float]]:
        """n steps of every env: the arrays [T, N, ...] a3c_loss takes, the raw returns of finished episodes."""
        steps, finished = [], []
        for _ in range(args.rollout_len):
            with torch.no_grad():
                logits = model.actor(torch.as_tensor(self.obs))
            if not logits.isfinite().all():  # diverged weights: say so, before the sampler fails on them
                raise TrainingFailed("the policy's outputs are not finite: training diverged")
            actions = torch.multinomial(torch.softmax(logits, -1), 1).view(-1).numpy()  # a ~ pi(.|s), it explores
            next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
            done = terminated | truncated
            real_next_obs = next_obs.copy()  # where an episode ended, its final obs (not the reset one)
            if done.any():
                real_next_obs[done] = np.stack(info["final_obs"][done])
            steps.append(dict(obs=self.obs, actions=actions, rewards=rewards, next_obs=real_next_obs,
                              terminated=terminated, truncated=truncated))
            self.scores += rewards
            finished += self.scores[done].tolist()
            self.scores[done] = 0.0
            self.obs = next_obs
        return {key: np.asarray([step[key] for step in steps], np.int64 if key == "actions" else np.float32)
                for key in steps[0]}, finished


def update_shared_model(loss: torch.Tensor, local_model: nn.Module, shared: Shared, args, steps: int) -> float:
    """Step 5: the local gradient, clipped, applied to the shared weights; its norm before clipping."""
    local_model.zero_grad()  # fresh gradients for this update only (see hand_over_gradients)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(local_model.parameters(), args.max_grad_norm).item()
    if not math.isfinite(grad_norm):  # a NaN or inf loss: stop before it reaches the shared weights
        raise TrainingFailed(f"the loss or its gradient is not finite (loss {loss.item()})")
    with shared.update_lock:  # Hogwild: processes apply their updates without a lock
        hand_over_gradients(local_model, shared.model)
        shared.optimizer.step(args.lr)  # the shared weights and the shared Adam moments
    return grad_norm


def hand_over_gradients(local_model: nn.Module, shared_model: nn.Module) -> None:
    """Point the shared parameters' .grad at this update's local gradients, on every update: each
    backward after zero_grad() makes new tensors (handing over only `if shared.grad is None` would
    freeze the shared gradient at the first update). .grad is per process; the weights are shared."""
    for local, shared in zip(local_model.parameters(), shared_model.parameters()):
        shared.grad = local.grad


class SharedAdam:
    """Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980) with its step count t and moments m, v in
    shared memory, like the weights: an optimizer made inside each worker would silently give each
    its own moments. Written out, as the maths fits in a few lines; the caller passes the lr."""

    def __init__(self, params, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.betas, self.eps = betas, eps
        self.t = torch.zeros((), dtype=torch.int64).share_memory_()
        self.m = [torch.zeros_like(p).share_memory_() for p in self.params]  # first moments
        self.v = [torch.zeros_like(p).share_memory_() for p in self.params]  # second moments

    @torch.no_grad()
    def step(self, lr: float) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        t = int(self.t)
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)  # bias correction
        for p, m, v in zip(self.params, self.m, self.v):
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)               # m <- b1 m + (1 - b1) g
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)   # v <- b2 v + (1 - b2) g^2
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-step_size)  # theta <- theta - lr m / sqrt(v)


def report(shared: Shared, finished: list[float], terms: list[float], steps: int) -> None:
    """Tell the parent: the raw returns of finished episodes, one update's loss terms, the steps taken."""
    for episode_return in finished:
        shared.reports.put(("episode", episode_return))
    shared.reports.put(("losses", terms))
    with shared.global_steps.get_lock():
        shared.global_steps.value += steps


# --------------------------------------------------------------------------- the modes
def train_processes(args, model, optimizer, run, use_threads: bool = False) -> None:
    """A3C proper: workers run asynchronously against the shared model. As threads (--mode threads)
    the code is the same, but the GIL runs one thread's Python at a time: no faster than one worker."""
    # fork starts workers without importing torch again; macOS and Windows use their default, spawn
    ctx = mp.get_context("fork" if sys.platform == "linux" else None)
    Worker = threading.Thread if use_threads else ctx.Process
    shared = Shared(model, optimizer, global_steps=ctx.Value("q", run.steps),
                    stop=threading.Event() if use_threads else ctx.Event(),
                    reports=queue.Queue() if use_threads else ctx.SimpleQueue(),
                    parent_pid=os.getppid() if use_threads else os.getpid(),  # a thread's parent is the process's
                    update_lock=threading.Lock() if use_threads else nullcontext())  # threads share one .grad
    model.share_memory()  # the weights every worker reads and writes
    workers = [Worker(target=run_worker, daemon=True,
                      args=(worker, rank, training_seed(args.seed, rank, run.steps), args, shared))
               for rank in range(args.workers)]
    for w in workers:
        w.start()
    try:
        while not run.tick(shared.global_steps.value):
            time.sleep(0.02)
            take_reports(run, shared.reports, workers)
    finally:
        stop_workers(workers, shared.stop)


def train_batch(args, model, optimizer, run) -> None:
    """Synchronous A2C: one learner, one forward pass for a whole vector of environments."""
    envs = make_vector_env(args, args.num_envs, training=True)
    rollouts = Rollouts(envs, seed=training_seed(args.seed, 0, run.steps))
    shared = Shared(model, optimizer)  # one learner: the "local" model is the shared one
    try:
        while True:
            rollout, finished = rollouts.collect(model, args)
            loss, terms = a3c_loss(model, **rollout, args=args, steps=run.steps)
            run.terms.append([*terms, update_shared_model(loss, model, shared, args, run.steps)])
            for episode_return in finished:
                run.episode(episode_return)
            if run.tick(run.steps + args.rollout_len * args.num_envs):
                break
    finally:
        envs.close()


def ga3c_actor(rank: int, seed: int, args: argparse.Namespace, shared: Shared) -> None:
    """GA3C actor: act with the trainer's weights, queue whole rollouts; it never learns itself."""
    rollouts = Rollouts(make_vector_env(args, args.envs_per_worker, training=True), seed=seed)
    while not shared.stop.is_set() and os.getppid() == shared.parent_pid:
        rollout, finished = rollouts.collect(shared.model, args)  # the trainer's weights, read directly
        for episode_return in finished:
            shared.reports.put(("episode", episode_return))
        while not shared.stop.is_set():  # wait while the trainer is behind, but not past a stop
            with suppress(queue.Full):
                shared.rollout_queue.put(rollout, timeout=0.1)
                break


def train_ga3c(args, model, optimizer, run) -> None:
    """GA3C (Babaeizadeh et al. 2017): actors feed a queue, one trainer learns, a few updates ahead ("policy lag")."""
    ctx = mp.get_context("fork" if sys.platform == "linux" else None)
    model.share_memory()  # actors read the trainer's weights directly
    shared = Shared(model, optimizer, stop=ctx.Event(), reports=ctx.SimpleQueue(), parent_pid=os.getpid(),
                    rollout_queue=ctx.Queue(maxsize=4 * args.ga3c_batch))
    actors = [ctx.Process(target=run_worker, daemon=True,
                          args=(ga3c_actor, rank, training_seed(args.seed, rank, run.steps), args, shared))
              for rank in range(args.workers)]
    for a in actors:
        a.start()
    try:
        while True:
            batch = []
            while len(batch) < args.ga3c_batch:
                with suppress(queue.Empty):
                    batch.append(shared.rollout_queue.get(timeout=0.5))
                take_reports(run, shared.reports, actors)  # a dead actor must not leave the trainer waiting
            # rollouts side by side: arrays [T, batch * N], as one vector env would give
            rollout = {k: np.concatenate([r[k] for r in batch], axis=1) for k in batch[0]}
            loss, terms = a3c_loss(model, **rollout, args=args, steps=run.steps)
            run.terms.append([*terms, update_shared_model(loss, model, shared, args, run.steps)])
            if run.tick(run.steps + args.rollout_len * args.envs_per_worker * args.ga3c_batch):
                break
    finally:
        stop_workers(actors, shared.stop)


# --------------------------------------------------------------------------- the environment
def make_env(args: argparse.Namespace, render_mode: str | None = None) -> gym.Env:
    return gym.make(args.env_id, render_mode=render_mode)


def make_vector_env(args, num_envs: int, training: bool = False, render_mode=None) -> gym.vector.VectorEnv:
    """num_envs envs in this process, for training as for evaluation. SAME_STEP autoreset: a finished
    env is reset inside step() and hands its final obs back in info["final_obs"] (to bootstrap from)."""
    return gym.vector.SyncVectorEnv([lambda: make_env(args, render_mode) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# =========================================================================================== PLUMBING
# The reinforcement learning is all above; below: evaluation and play, checkpoints, the command line...


# --------------------------------------------------------------------------- evaluation and play
def evaluate(model: ActorCritic, args: argparse.Namespace, episodes: int, seed: int, verbose: bool = False,
             render_mode: str | None = None, frames: list | None = None) -> list[float]:
    """Returns of `episodes` full episodes (actions: see test_actions), seeds seed, seed+1, ..., side
    by side in a vector env so that each step is one batched forward pass; drawn for --play."""
    envs = make_vector_env(args, episodes, render_mode=render_mode)
    obs, _ = envs.reset(seed=seed)
    rng, returns, finished = np.random.default_rng(seed), np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        if render_mode == "rgb_array":
            frames.append(envs.render()[0][::2, ::2])  # half size keeps the GIF small
        with torch.no_grad():
            actions = test_actions(model.actor(torch.as_tensor(obs)), args, rng)
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    for i, ret in enumerate(returns if verbose else []):
        print(f"episode {i + 1:3d} (seed {seed + i}): return {ret:.1f}")
    return returns.tolist()


def test_actions(logits: torch.Tensor, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    """The test-time action, one per env: the most likely (--greedy, the default here), or drawn from pi
    by numpy's generator seeded with the first episode's seed (inverse CDF), so a result repeats."""
    if args.greedy:
        return logits.argmax(-1).numpy()
    cumulative = torch.softmax(logits.double(), -1).cumsum(-1).numpy()
    return (rng.random((len(cumulative), 1)) * cumulative[:, -1:] < cumulative).argmax(-1)


def play(model: ActorCritic, args: argparse.Namespace) -> None:
    """Episodes in a window, or, without a display, recorded to a GIF. Episode k is
    `--eval --episodes 1 --seed SEED+k`, drawn: the same seed and the same action draws."""
    headless = sys.platform not in ("win32", "darwin") and not any(map(os.environ.get, ("DISPLAY", "WAYLAND_DISPLAY")))
    if headless:  # SDL draws off screen (without an XDG_RUNTIME_DIR error)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    frames = []
    for episode in range(args.episodes):
        episode_return = evaluate(model, args, 1, args.seed + episode, render_mode="rgb_array" if headless else "human",
                                  frames=frames)[0]
        print(f"episode {episode + 1} (seed {args.seed + episode}): return {episode_return:.1f}")
    if headless:  # every other frame, at 25 fps
        from PIL import Image  # comes with matplotlib
        args.video.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(frame) for frame in frames[::2]]
        images[0].save(args.video, save_all=True, append_images=images[1:], duration=40, loop=0)
        print(f"no display found: wrote {args.video}")


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: nn.Module, run: Run) -> None:
    """Weights, settings, step: to a temp file, then renamed, so a cut save never destroys the last."""
    checkpoint = {"env_id": run.args.env_id, "model": model.state_dict(), "steps": run.steps,
                  "best_eval": run.best_eval, "args": {k: str(v) if isinstance(v, Path) else v
                                                       for k, v in vars(run.args).items()}}
    torch.save(checkpoint, path.with_name(path.name + ".tmp"))
    os.replace(path.with_name(path.name + ".tmp"), path)


def load(path: Path, env_id: str) -> tuple[ActorCritic, dict]:
    """The model at `path` and its checkpoint; a one-line error if it is missing, unreadable or not ours."""
    if not path.is_file():
        sys.exit(f"error: no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, unsafe pickle ...
        sys.exit(f"error: cannot read checkpoint {path}: {type(error).__name__}")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "args" not in checkpoint:
        sys.exit(f"error: {path} is not a checkpoint of this script")
    if checkpoint.get("env_id") != env_id:
        sys.exit(f"error: {path} was trained on {checkpoint.get('env_id')}, not {env_id}")
    checkpoint["args"] = {**vars(parse_args(["--train"])), **checkpoint["args"]}  # (older files lack some)
    model = build_model(argparse.Namespace(**checkpoint["args"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        sys.exit(f"error: {path} holds a different network architecture")
    return model, checkpoint


def run_name(env_id: str) -> str:
    """Run folders and shipped weights are named after the environment: CartPole-v1 -> cartpole."""
    return env_id.split("-")[0].lower()


# --------------------------------------------------------------------------- the plot
def plot_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Six panels against agent steps: raw returns, then the diagnostics README's "Reading the diagnostics" explains."""
    import matplotlib  # imported here: it costs most of a second, and only the end needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), subplot_kw={"xlabel": "agent steps"})
    for ax, column in zip([axes[0, 0], *axes.flat], ("eval_mean", "train_return", "entropy", "advantage_std",
                                                      "policy_loss", "value_loss", "grad_norm")):
        steps, values = np.array([(int(r["step"]), float(r[column])) for r in rows if r.get(column)]).reshape(-1, 2).T
        fmt, label = {"eval_mean": ("o-", "validation mean"), "train_return": (".", "training episodes")}.get(
            column, ("-", None))
        ax.plot(steps, values, fmt, ms=3, lw=1, label=label)
        ax.set(title=column.replace("_", " "), yscale="log" if column == "value_loss" and len(values) else "linear")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.08, top=0.92, wspace=0.3, hspace=0.35)  # (tight_layout: slow)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"A3C on {ENV_ID}: train, play, evaluate. Every flag's default is in brackets.",
        usage="%(prog)s (--train | --play | --eval) [options]; see --help",
        epilog="runs/ is made in the folder you start from; pretrained/ is the folder beside the script.")
    what = parser.add_mutually_exclusive_group()  # one is required: checked below, after any unknown flag
    what.add_argument("--train", action="store_true", help="train a new agent")
    what.add_argument("--play", action="store_true", help="show the agent in a window (a GIF when headless)")
    what.add_argument("--eval", action="store_true", help="held-out episodes; print each return and mean/std")
    parser.set_defaults(env_id=ENV_ID)  # one environment here (a3c_kungfu.py takes --env-id)
    parser.add_argument("--checkpoint", type=Path, help="--train: where the best weights go [a new runs/ folder]; "
                        "--play/--eval: what to load [the newest run's, else pretrained/NAME.pt]")
    parser.add_argument("--mode", choices=["processes", "threads", "batch", "ga3c"], default="processes",
                        help="how experience is gathered; see the module docstring [processes]")
    parser.add_argument("--seed", type=int, help="--train: seeds python, numpy, torch and the training envs "
                        "[0]; --eval/--play: the first episode's seed [1000000, never trained on]")
    parser.add_argument("--episodes", type=int, help="--eval: episodes [30]; --play: episodes [1]")
    parser.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=True,
                        help="at test time take the most likely action, or draw it as training does [True]")
    parser.add_argument("--video", type=Path, help="--play, headless: the GIF [runs/videos/FOLDER_FILE.gif]")
    settings = parser.add_argument_group("settings (see SETTINGS at the top of the script)")
    for name, (default, meaning, *choices) in SETTINGS.items():
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        settings.add_argument(f"--{name.replace('_', '-')}", **kind, default=default,
                              choices=choices[0] if choices else None, help=f"{meaning} [{default}]")
    args = parser.parse_args(argv)
    if not (args.train or args.play or args.eval):
        parser.error("one of --train, --play or --eval is required")
    args.seed = (0 if args.train else TEST_SEED) if args.seed is None else args.seed
    args.episodes = (1 if args.play else 30) if args.episodes is None else args.episodes
    too_small = [name for name, (default, _, *choices) in SETTINGS.items()
                 if type(default) is int and not choices and getattr(args, name) < 1]
    if too_small or args.episodes < 1 or args.seed < 0 or args.eval_episodes > 100_000:
        parser.error(f"--{(too_small or ['episodes'])[0].replace('_', '-')}: counts must be at least 1, "
                     "--seed at least 0, --eval-episodes at most 100000")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1 and args.lr > 0):
        parser.error("--gamma must lie in (0, 1], --gae-lambda in [0, 1], --lr above 0")
    if args.train and args.mode != "batch" and args.workers > CORES:
        print(f"warning: --workers {args.workers} on {CORES} cores: the extra workers only add switching",
              file=sys.stderr)
    return args


# --------------------------------------------------------------------------- training: the parent's side
class TrainingFailed(Exception):
    """A worker died or the run diverged: training stops."""


class Run:
    """The parent's side of training: counters, the run's history (rows for the CSV written at the end)
    and the duties tick() does in order, as nanoGPT's loop reads: validate, log, stop."""

    def __init__(self, args: argparse.Namespace, model: ActorCritic):
        self.args, self.model, self.started, self.rows, self.terms = args, model, time.time(), [], []
        self.steps, self.best_eval, self.solved = 0, -math.inf, False
        self.next_eval, self.next_row = args.eval_every, args.eval_every / 10

    def row(self, **values) -> None:
        self.rows.append({"step": self.steps, "wall_seconds": f"{time.time() - self.started:.2f}", **values})

    def episode(self, episode_return: float) -> None:  # a row per finished training episode
        self.row(train_return=episode_return)

    def tick(self, steps: int) -> bool:
        """Training has reached `steps`: the duties, in order. True when training should stop."""
        self.steps = steps
        if steps >= self.next_eval:  # 1. validate; keep the best weights
            self.next_eval += self.args.eval_every
            self.validate()
        if steps >= self.next_row and self.terms:  # 2. a row of the loss terms averaged, 10 per validation
            self.row(**{k: f"{v:.5g}" for k, v in zip(LOSS_TERMS, np.mean(self.terms, axis=0))})
            self.terms, self.next_row = [], steps + self.args.eval_every / 10
        return self.solved or steps >= self.args.max_steps  # 3. stop?

    def validate(self) -> None:
        """Episodes on the same seeds every time (only they show progress), by a snapshot of the weights."""
        eval_model = build_model(self.args)
        eval_model.load_state_dict(self.model.state_dict())  # a copy: the workers go on training
        returns = evaluate(eval_model, self.args, self.args.eval_episodes, VALIDATION_SEED)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        self.row(eval_mean=f"{mean:.1f}", eval_std=f"{std:.1f}")
        recent = [row["train_return"] for row in self.rows if "train_return" in row][-20:] or [0.0]
        print(f"step {self.steps:7,}: validation {mean:5.1f} +- {std:5.1f}, training episodes {np.mean(recent):5.1f}")
        if mean >= self.best_eval:
            self.best_eval = mean
            save_checkpoint(self.args.checkpoint, eval_model, self)
        self.solved = mean >= self.args.solve_score


def train(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # before the model is built: its first weights come from this seed
    torch.set_num_threads(1)
    model = build_model(args)
    folder = f"{run_name(args.env_id)}_{args.mode}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.checkpoint = (args.checkpoint or RUNS / folder / "model.pt").resolve()  # printed in full
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    run, failure = Run(args, model), None
    modes = {"processes": train_processes, "threads": lambda *a: train_processes(*a, use_threads=True),
             "batch": train_batch, "ga3c": train_ga3c}
    stop_on_signal()
    try:
        modes[args.mode](args, model, SharedAdam(model.parameters()), run)
    except KeyboardInterrupt:
        print("interrupted: stopping the workers")
    except TrainingFailed as error:
        failure = error
    with open(args.checkpoint.with_suffix(".csv"), "w", newline="") as f:  # the run's history
        writer = csv.DictWriter(f, ["step", "wall_seconds", "train_return", "eval_mean", "eval_std", *LOSS_TERMS])
        writer.writeheader()
        writer.writerows(run.rows)
    plot_curve(args.checkpoint.with_suffix(".csv"), args.checkpoint.with_suffix(".png"), f"A3C on {args.env_id}")
    if failure is not None:
        sys.exit(f"error: training stopped: {failure}")
    weights = args.checkpoint if args.checkpoint.exists() else "none, no validation yet (--eval-every)"
    print(f"{'solved' if run.solved else 'not solved'} after {run.steps} agent steps, {time.time() - run.started:.1f} "
          f"s. Best validation {run.best_eval:.1f}, weights: {weights}, curve: {args.checkpoint.with_suffix('.png')}")
    return 0


# --------------------------------------------------------------------------- processes and signals
def run_worker(target, rank: int, seed: int, args: argparse.Namespace, shared: Shared) -> None:
    """Around every worker's loop: one core, its own seed, and a failure reported to the parent."""
    torch.set_num_threads(1)  # one core per worker; torch's own thread pool would fight the others
    if threading.current_thread() is threading.main_thread():  # a process (threads share its signals)
        stop_on_signal(in_worker=True)
    try:
        torch.manual_seed(seed)
        target(rank, seed, args, shared)
    except TrainingFailed as error:  # the run diverged: the reason says it all
        shared.reports.put(("error", f"worker {rank}: {error}"))
    except Exception:
        shared.reports.put(("error", f"worker {rank} failed:\n{traceback.format_exc()}"))


def take_reports(run: Run, reports, workers: list) -> None:
    """Take in what the workers reported; a failure, or a worker that died without a word, stops the run."""
    dead = [w for w in workers if not w.is_alive()]  # first: what a dead worker said is in the queue by now
    while not reports.empty():
        kind, value = reports.get()
        if kind == "error":
            raise TrainingFailed(value)
        {"episode": run.episode, "losses": run.terms.append}[kind](value)
    if dead:
        raise TrainingFailed(f"a worker died with exit code {getattr(dead[0], 'exitcode', None)} (killed for memory?)")


def stop_workers(workers: list, stop) -> None:
    """Also on Ctrl-C, SIGTERM, SIGHUP or a failure: every worker sees `stop` and leaves its loop."""
    stop.set()
    for w in workers:
        w.join(timeout=10)
        if hasattr(w, "terminate") and w.is_alive():  # a worker process stuck in a step
            w.terminate()


def training_seed(seed: int, rank: int, steps: int) -> int:
    """The first seed of a worker's envs: below TRAIN_SEEDS, and new for a run that goes on from `steps`."""
    return int(np.random.SeedSequence([seed, rank, steps]).generate_state(1)[0]) % (TRAIN_SEEDS - 1000)


def stop_on_signal(in_worker: bool = False) -> None:
    """Ctrl-C (SIGINT, which `cmd &` starts ignored), `kill` (SIGTERM) and a closed terminal (SIGHUP)
    stop training alike; a worker process leaves SIGINT and SIGHUP (sent to its group) to the parent."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for name, worker_does in (("SIGINT", signal.SIG_IGN), ("SIGTERM", signal.SIG_DFL), ("SIGHUP", signal.SIG_IGN)):
        if hasattr(signal, name):  # Windows has no SIGHUP
            signal.signal(getattr(signal, name), worker_does if in_worker else interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.train:
            return train(args)
        runs = sorted(RUNS.glob(f"{run_name(args.env_id)}_*/model.pt"), key=lambda p: p.stat().st_mtime)
        path = (args.checkpoint or (runs[-1] if runs else PRETRAINED / f"{run_name(args.env_id)}.pt")).resolve()
        model, checkpoint = load(path, args.env_id)  # the newest run's best weights, else the shipped ones
        print(f"loaded {path}: the weights of agent step {checkpoint['steps']:,}")
        if args.eval:
            returns = evaluate(model, args, args.episodes, args.seed, verbose=True)
            print(f"mean {np.mean(returns):.1f} std {np.std(returns):.1f} over {len(returns)} episodes")
        else:
            args.video = args.video or RUNS.resolve() / "videos" / f"{path.parent.name}_{path.stem}.gif"
            play(model, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
