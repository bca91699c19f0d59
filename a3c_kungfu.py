"""A3C (Asynchronous Advantage Actor-Critic) on Atari from pixels: KungFuMaster, or any ALE game.

    python a3c_kungfu.py --train                # train (10M agent steps; resumable with --resume)
    python a3c_kungfu.py --play                 # watch the agent (GIFs of the game and of its input when headless)
    python a3c_kungfu.py --eval                 # 30 held-out games (seeds from 1,000,000)
    python a3c_kungfu.py --train --env-id ALE/Pong-v5    # another game, the same settings

Read a3c_cartpole.py first: this script has its shape and names, plus pixels and what a run of
hours needs (--resume, saves on signals, a CSV kept across resumes). A3C (Mnih et al. 2016,
https://arxiv.org/abs/1602.01783): workers, each with its own games and a copy of the network, repeat:

    1. copy the shared weights:                    theta' <- theta
    2. act for n steps with pi(a | s; theta')
    3. n-step return:                              R_t = r_t + gamma * R_{t+1},  R_n = V(s_n)
       advantage:                                  A_t = R_t - V(s_t)     (GAE(lambda), lambda 0.7 here)
    4. loss = -mean(log pi(a_t | s_t) * A_t)             policy gradient, A_t held constant
              + value_coef   * mean((R_t - V(s_t))^2)    critic regression
              - entropy_coef * mean(H(pi(. | s_t)))      keeps the policy exploring
    5. gradients of the local copy -> shared model, one optimizer step on the shared weights

Atari: the ALE protocol of Machado et al. 2018 everywhere (sticky actions p 0.25, frame skip 4,
the minimal action set, games up to 108,000 frames), 4 stacked 42x42 grayscale frames. Training sees
sign(r) and ends the value's horizon at a lost life; every score shown is a full game's raw score.
One set of defaults for every game (benchmarks/atari_recipes.md). Each worker steps a batch of games
with one forward pass; on 2 cores that, not more workers, makes A3C pay. --mode processes is A3C
(Hogwild: not bit-reproducible), batch synchronous A2C. Seeds: training games below 500,000, new
after every --resume; validations the same from 500,000; --eval and --play from 1,000,000.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from ale_py.vector_env import AtariVectorEnv
from tqdm import tqdm

from a3c_util import entropy_from_logits, gae_advantages

gym.register_envs(ale_py)  # gymnasium 1.x finds the ALE/... ids only after this
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no ALE banner each time a game is made
ENV_ID = "ALE/KungFuMaster-v5"  # the default game; --env-id picks any ALE v5 game
PRETRAINED = Path(__file__).parent / "pretrained"
RUNS = Path("runs")
STICKY_ACTIONS, FRAME_SKIP, MAX_FRAMES, FRAME_STACK = 0.25, 4, 108_000, 4  # the protocol, everywhere
SCREEN_SIZE = {"area42": 42, "pool84": 84}  # what ale-py hands over, per --frame; the network sees 42x42
TRAIN_SEEDS, VALIDATION_SEED, TEST_SEED = 500_000, 500_000, 1_000_000  # the seed rule of the docstring
LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "advantage_std", "grad_norm")  # logged, averaged per CSV row
COUNTERS = ("steps", "episodes", "seconds", "best_eval")  # what a checkpoint counts, for --resume
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- the settings
# Every hyperparameter, its default and what it means. The command-line flags are made from this
# table (rollout_len is --rollout-len), so `args.gamma` in the loss is `gamma` here.
SETTINGS = {
    "workers": (min(CORES, 8), "worker processes: one per core (more only adds switching), at most 8"),
    "envs_per_worker": (8, "games each worker steps, with one batched forward pass"),
    "num_envs": (16, "--mode batch: games in the one vector"),
    "rollout_len": (10, "n: steps per update per game (t_max)"),
    "gamma": (0.99, "discount factor"),
    "gae_lambda": (0.7, "GAE lambda; 1.0 is the paper's n-step advantage"),
    "lr": (4e-4, "Adam learning rate (at the start, with --lr-schedule linear)"),
    "lr_schedule": ("linear", "linear: the learning rate falls to 0 at --max-steps", ("linear", "constant")),
    "entropy_coef": (0.004, "weight of the entropy bonus (at the start, with --entropy-schedule linear)"),
    "entropy_schedule": ("constant", "linear: the bonus's weight falls to 0 at --max-steps", ("linear", "constant")),
    "value_coef": (0.5, "weight of the critic's squared error"),
    "max_grad_norm": (0.5, "clip each update's gradient norm to this"),
    "normalize_advantages": (False, "scale each update's advantages to mean 0 and std 1"),
    "frame": ("pool84", "84x84 frames max-pooled 2x2 to 42x42, or ale-py's 42x42 area resize", tuple(SCREEN_SIZE)),
    "padding": (1, "of the 3x3 convolutions: with 0, the frame's last 3 rows and columns never count", (0, 1)),
    "channels": (32, "of the first convolution, twice as many in the next two (32: the Nature CNN's widths)"),
    "hidden": (512, "units of the fully connected layer (and of the LSTM)"),
    "core": ("ff", "after the fully connected layer: nothing (ff) or an LSTM", ("ff", "lstm")),
    "max_steps": (10_000_000, "the budget: stop after this many agent steps (4 frames each)"),
    "max_seconds": (math.inf, "also stop after this much wall time, earlier runs joined by --resume included"),
    "eval_every": (500_000, "validation every this many agent steps"),
    "eval_episodes": (16, "games per validation"),
    "solve_score": (math.inf, "stop once a validation's mean score reaches this"),
}
ARCHITECTURE = ("env_id", "channels", "hidden", "core", "frame", "padding")  # a resumed run keeps them
BEFORE_SETTINGS_EXISTED = {"frame": "area42", "padding": 0, "channels": 16}  # what older checkpoints were made with


# --------------------------------------------------------------------------- the network
class ActorCritic(nn.Module):
    """Three 3x3 stride-2 convolutions of c, 2c, 2c channels (42 -> 21 -> 11 -> 6 pixels), a linear layer,
    an optional LSTM core (state: h and c side by side; [N, 0] without it), policy and value heads. The
    loss runs the convolutions once over a rollout (encode) and steps only the core through time."""

    def __init__(self, in_channels: int, n_actions: int, channels: int, hidden: int, core: str, padding: int):
        super().__init__()
        side = {0: 4, 1: 6}[padding]  # the last feature map's width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2, padding=padding), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=padding), nn.ReLU(),
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=padding), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * channels * side * side, hidden), nn.ReLU())
        self.core = nn.LSTMCell(hidden, hidden) if core == "lstm" else None
        self.policy = nn.Linear(hidden, n_actions)
        self.value = nn.Linear(hidden, 1)
        self.state_size = 2 * hidden if core == "lstm" else 0
        for layer in [*self.body, self.policy, self.value]:  # orthogonal, as OpenAI baselines, CleanRL and SLM-Lab
            if isinstance(layer, (nn.Conv2d, nn.Linear)):  # start: a near-uniform first policy (gain 0.01)
                gain = {self.policy: 0.01, self.value: 1.0}.get(layer, math.sqrt(2))  # sqrt 2 for ReLU
                nn.init.orthogonal_(layer.weight, gain)
                nn.init.zeros_(layer.bias)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs.float() / 255.0)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(features), self.value(features).squeeze(-1)

    def core_step(self, features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the core: its output and new state (without one: the features, no state)."""
        if self.core is None:
            return features, state
        h, c = self.core(features, state.chunk(2, dim=-1))
        return h, torch.cat([h, c], dim=-1)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy logits [N, A], values V(s) [N] and the new state, for uint8 frames [N, 4, 42, 42]."""
        output, state = self.core_step(self.encode(obs), state)
        return (*self.heads(output), state)

    def unroll(self, features: torch.Tensor, state: torch.Tensor, starts: np.ndarray):
        """The core over a rollout's features [T, N, F], reset where an episode starts: outputs, states."""
        outputs, states = [], []
        for t in range(len(features)):  # backpropagation through the rollout: the core steps through time
            output, state = self.core_step(features[t], state * (1.0 - torch.as_tensor(starts[t])).unsqueeze(-1))
            outputs.append(output)
            states.append(state)
        return torch.stack(outputs), torch.stack(states)

    def initial_state(self, num_envs: int) -> torch.Tensor:
        return torch.zeros(num_envs, self.state_size)


def build_model(args: argparse.Namespace) -> ActorCritic:
    env = make_env(args)  # the game's minimal action set is the policy's output
    model = ActorCritic(FRAME_STACK, env.action_space.n, args.channels, args.hidden, args.core, args.padding)
    env.close()
    return model


# --------------------------------------------------------------------------- the loss (steps 3 and 4)
def a3c_loss(model: ActorCritic, obs, actions, rewards, next_obs, terminated, truncated, starts, state0,
             args: argparse.Namespace, steps: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The A3C loss of one rollout (arrays [T, N, ...]; starts[t] = 1 where a game begins; state0, the
    core's state before it) and its terms for the log; steps, the agent steps so far, set the entropy weight."""
    T, N = rewards.shape
    features = model.encode(torch.as_tensor(obs).flatten(0, 1)).view(T, N, -1)
    outputs, states = model.unroll(features, state0, starts)
    logits, values = model.heads(outputs)
    # V(s_{t+1}) is the next row's V(s_t), except after the last step and where an episode was
    # cut by a time limit (its final frame is not in obs): there one more step from state_t gives it.
    next_values = np.empty((T, N), np.float32)
    next_values[:-1] = values[1:].detach().numpy()
    extra_step = truncated > 0
    extra_step[-1] = True
    with torch.no_grad():  # bootstrap targets are constants, no gradient through them
        output, _ = model.core_step(model.encode(torch.as_tensor(next_obs[extra_step])),
                                    states[torch.as_tensor(extra_step)])
        next_values[extra_step] = model.heads(output)[1].numpy()
    # 3. advantages A_t (GAE; lambda 1 gives R_t - V(s_t)) and targets A_t + V(s_t), from values without
    # gradient: the advantage weighs the policy gradient and must not itself be pushed by it ("held constant")
    advantages, returns = gae_advantages(rewards, values.detach().numpy(), next_values,
                                         terminated, truncated, args.gamma, args.gae_lambda)
    advantages, returns = torch.as_tensor(advantages), torch.as_tensor(returns)
    advantage_std = advantages.std(correction=0).item()  # the policy gradient's scale, before any normalising
    if args.normalize_advantages:  # one scale for the policy gradient, whatever the rewards' scale
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    # 4. the loss
    log_probs = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(actions).unsqueeze(-1)).squeeze(-1)
    policy_loss = -(log_probs * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = entropy_from_logits(logits).mean()
    entropy_coef = args.entropy_coef * schedule(args.entropy_schedule, steps, args.max_steps)
    loss = policy_loss + args.value_coef * value_loss - entropy_coef * entropy
    return loss, [policy_loss.item(), value_loss.item(), entropy.item(), advantage_std]


def schedule(kind: str, steps: int, max_steps: int) -> float:
    """What the learning rate and the entropy weight are multiplied by at `steps`: 1, or falling to 0 at
    max_steps (the A3C paper's learning rate). Why the entropy weight may fall: the advantages shrink as
    the critic learns, and a fixed bonus then pulls the policy back to random (Adam rescales each step,
    so a falling learning rate alone does not stop that)."""
    return 1.0 if kind == "constant" else max(0.0, 1.0 - steps / max_steps)


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
    parent_pid: int = 0  # the trainer's pid: a worker process leaves when its parent is gone


ROLLOUT_DTYPES = {"obs": np.uint8, "actions": np.int64, "rewards": np.float32, "next_obs": np.uint8,  # a3c_loss's
                  "terminated": np.float32, "truncated": np.float32, "starts": np.float32}  # arrays [T, N, ...]


class Rollouts:
    """Steps a vector of games with a model; keeps the raw scores, lives and core states across rollouts."""

    def __init__(self, envs: AtariVectorEnv, seed: int):
        self.envs = envs
        obs, info = envs.reset(seed=seed)  # game i starts from seed + i, later games from its own RNG
        self.obs, self.lives = pool(obs), info["lives"]
        self.state = None  # the core's state, made by the first collect()
        self.starts = np.ones(envs.num_envs, np.float32)  # every game begins
        self.scores = np.zeros(envs.num_envs)

    def collect(self, model: ActorCritic, args: argparse.Namespace) -> tuple[dict, list[float]]:
        """n steps of every game: the rollout arrays [T, N] (and state0) and the raw scores of finished games."""
        if self.state is None:
            self.state = model.initial_state(self.envs.num_envs)
        state0 = self.state  # where backpropagation through this rollout starts (no gradient before it)
        steps, finished = [], []
        for _ in range(args.rollout_len):
            with torch.no_grad():
                state = self.state * (1.0 - torch.as_tensor(self.starts)).unsqueeze(-1)  # a new game forgets
                logits, _, self.state = model.step(torch.as_tensor(self.obs), state)
            if not logits.isfinite().all():  # diverged weights: say so, before the sampler fails on them
                raise TrainingFailed("the policy's outputs are not finite: training diverged")
            actions = torch.multinomial(torch.softmax(logits, -1), 1).view(-1).numpy()  # a ~ pi(.|s), it explores
            next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
            done, next_obs = terminated | truncated, pool(next_obs)  # pooled once, as they arrive
            real_next_obs = np.where(done[:, None, None, None], pool(info.get("final_obs", next_obs)), next_obs)
            life_lost = (info["lives"] < self.lives) & ~done  # ends the value's horizon, not the game: faster learning
            self.lives = info["lives"]
            # training sees sign(r): one scale for every game and every stage of one game
            steps.append(dict(obs=self.obs, actions=actions, rewards=np.sign(rewards), next_obs=real_next_obs,
                              terminated=terminated | life_lost, truncated=truncated, starts=self.starts))
            self.scores += rewards
            finished += self.scores[done].tolist()
            self.scores[done] = 0.0
            self.starts = done.astype(np.float32)
            self.obs = next_obs
        rollout = {key: np.asarray([step[key] for step in steps], dtype) for key, dtype in ROLLOUT_DTYPES.items()}
        return {**rollout, "state0": state0}, finished


def update_shared_model(loss: torch.Tensor, local_model: nn.Module, shared: Shared, args, steps: int) -> float:
    """Step 5: the local gradient, clipped, applied to the shared weights at the learning rate of
    `steps` (see schedule); its norm before clipping."""
    local_model.zero_grad()  # fresh gradients for this update only (see hand_over_gradients)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(local_model.parameters(), args.max_grad_norm).item()
    if not math.isfinite(grad_norm):  # a NaN or inf loss: stop before it reaches the shared weights
        raise TrainingFailed(f"the loss or its gradient is not finite (loss {loss.item()})")
    hand_over_gradients(local_model, shared.model)  # Hogwild: processes apply their updates without a lock
    shared.optimizer.step(args.lr * schedule(args.lr_schedule, steps, args.max_steps))  # weights, moments
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

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.t.copy_(state["t"])  # copy_ into the shared tensors keeps them shared
        for mine, saved in zip(self.m + self.v, state["m"] + state["v"]):
            mine.copy_(saved)


def report(shared: Shared, finished: list[float], terms: list[float], steps: int) -> None:
    """Tell the parent: the raw returns of finished episodes, one update's loss terms, the steps taken."""
    for episode_return in finished:
        shared.reports.put(("episode", episode_return))
    shared.reports.put(("losses", terms))
    with shared.global_steps.get_lock():
        shared.global_steps.value += steps


# --------------------------------------------------------------------------- the modes
def train_processes(args, model, optimizer, run) -> None:
    """A3C proper: worker processes run asynchronously against the shared model."""
    # fork starts workers without importing torch again; macOS and Windows use their default, spawn
    ctx = mp.get_context("fork" if sys.platform == "linux" else None)
    shared = Shared(model, optimizer, global_steps=ctx.Value("q", run.steps), stop=ctx.Event(),
                    reports=ctx.SimpleQueue(), parent_pid=os.getpid())
    model.share_memory()  # the weights every worker reads and writes
    workers = [ctx.Process(target=run_worker, daemon=True,
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


# --------------------------------------------------------------------------- the environment
def make_env(args: argparse.Namespace, render_mode: str | None = None) -> gym.Env:
    """One game for --play, preprocessed by Gymnasium's wrappers as make_vector_env does it in C++."""
    env = gym.make(args.env_id, frameskip=1, repeat_action_probability=STICKY_ACTIONS,
                   full_action_space=False, max_num_frames_per_episode=MAX_FRAMES, render_mode=render_mode)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=0, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE[args.frame])
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type="zero")


def make_vector_env(args: argparse.Namespace, num_envs: int, training: bool = False) -> AtariVectorEnv:
    """num_envs games stepped by ale-py in C++ threads (one per worker process, which has one core),
    frames [num_envs, 4, size, size] uint8; the same protocol for training (Rollouts clips) and evaluation."""
    return AtariVectorEnv(gym.spec(args.env_id).kwargs["game"], num_envs=num_envs,  # ALE/Pong-v5 -> pong
                          num_threads=1 if training and args.mode == "processes" else 2,
                          repeat_action_probability=STICKY_ACTIONS, frameskip=FRAME_SKIP,
                          max_num_frames_per_episode=MAX_FRAMES, full_action_space=False,
                          img_height=SCREEN_SIZE[args.frame], img_width=SCREEN_SIZE[args.frame], grayscale=True,
                          stack_num=FRAME_STACK, noop_max=0, use_fire_reset=False, reward_clipping=False,  # raw scores
                          autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def pool(obs: np.ndarray) -> np.ndarray:
    """The uint8 frames [..., 4, 42, 42] the network sees, made as they arrive: 84x84 ones max-pooled 2x2."""
    rows = np.maximum(obs[..., ::2, :], obs[..., 1::2, :]) if obs.shape[-1] == 84 else obs  # 2x2 max as bytes: rows,
    return np.maximum(rows[..., ::2], rows[..., 1::2]) if obs.shape[-1] == 84 else obs  # columns (a ball stays bright)


# =========================================================================================== PLUMBING
# The reinforcement learning is all above; below: evaluation and play, the log, checkpoints, the command line...


# --------------------------------------------------------------------------- evaluation and play
def evaluate(model: ActorCritic, args: argparse.Namespace, episodes: int, seed: int, verbose: bool = False) -> list:
    """Raw scores of `episodes` full games from seeds seed, seed+1, ..., side by side in one vector env."""
    envs = make_vector_env(args, episodes)
    obs, _ = envs.reset(seed=seed)
    state, rng = model.initial_state(episodes), np.random.default_rng(seed)
    returns, finished, step, shown = np.zeros(episodes), np.zeros(episodes, dtype=bool), 0, time.time()
    while not finished.all():
        with torch.no_grad():
            logits, _, state = model.step(torch.as_tensor(pool(obs)), state)
        obs, rewards, terminated, truncated, _ = envs.step(test_actions(logits, args, rng))
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
        step += 1
        if time.time() - shown > 5:  # full games take minutes (--eval, validations): say how far they are
            tqdm.write(f"  evaluating: agent step {step}, {finished.sum()} of {episodes} games over")
            shown = time.time()
    envs.close()
    for i, ret in enumerate(returns if verbose else []):
        print(f"episode {i + 1:3d} (seed {seed + i}): score {ret:.0f}")
    return returns.tolist()


def test_actions(logits: torch.Tensor, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    """The test-time action: drawn from pi by numpy's generator seeded with the first game's seed, so a
    score repeats, or with --greedy the most likely one (it can lock into a loop the sampled one leaves)."""
    if args.greedy:
        return logits.argmax(-1).numpy()
    cumulative = torch.softmax(logits.double(), -1).cumsum(-1).numpy()
    return (rng.random((len(cumulative), 1)) * cumulative[:, -1:] < cumulative).argmax(-1)


def play(model: ActorCritic, args: argparse.Namespace) -> None:
    """Games in a window, or recorded to GIFs (the game; the frames the network sees). Game k draws as
    `--eval --episodes 1 --seed SEED+k` does, but its sticky actions do not: its score can differ."""
    headless = sys.platform not in ("win32", "darwin") and not any(map(os.environ.get, ("DISPLAY", "WAYLAND_DISPLAY")))
    if headless:  # SDL draws off screen (without an XDG_RUNTIME_DIR error)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = make_env(args, render_mode="rgb_array" if headless else "human")
    frames, inputs = [], []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + episode)
        state, rng = model.initial_state(1), np.random.default_rng(args.seed + episode)
        done, episode_return, step, shown = False, 0.0, 0, time.time()
        while not done:
            obs = torch.as_tensor(pool(np.asarray(obs))).unsqueeze(0)
            if headless and step < args.video_steps and step % 2 == 0:  # every other step (of 15 a second)
                frames.append(env.render())
                inputs.append(np.hstack(list(obs[0].numpy())).repeat(4, 0).repeat(4, 1))
            with torch.no_grad():
                logits, _, state = model.step(obs, state)
            obs, reward, terminated, truncated, _ = env.step(test_actions(logits, args, rng)[0])
            episode_return += reward
            done, step = terminated or truncated, step + 1
            if time.time() - shown > 5:
                print(f"  episode {episode + 1}: agent step {step}, score so far {episode_return:.0f}", flush=True)
                shown = time.time()
        print(f"episode {episode + 1} (seed {args.seed + episode}): score {episode_return:.0f}")
    env.close()
    if headless:
        print(f"recorded the first {args.video_steps} agent steps of each game (--video-steps)")
        save_gif(frames, args.video, milliseconds=66)  # 2x speed
        save_gif(inputs, args.video.with_name(f"{args.video.stem}_input.gif"), milliseconds=66)


def save_gif(frames: list, path: Path, milliseconds: int) -> None:
    from PIL import Image  # comes with matplotlib
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
    print(f"no display found: wrote {path.resolve()}")


# --------------------------------------------------------------------------- the training log
class TrainingLog:
    """The progress bar and the metrics CSV (a resumed run appends to it): a row per finished
    episode, per validation, and per tenth of --eval-every steps with the loss terms averaged."""

    def __init__(self, args: argparse.Namespace, csv_path: Path, steps: int):
        self.every, self.next_row, self.terms, self.recent, self.entropy = args.eval_every / 10, steps, [], [], "-"
        self.file = open(csv_path, "a" if steps and csv_path.exists() else "w", newline="")
        self.csv = csv.DictWriter(self.file, ["step", "wall_seconds", "train_return", "eval_mean", "eval_std",
                                              *LOSS_TERMS])
        if self.file.tell() == 0:  # a new file
            self.csv.writeheader()
        # a run that stops when solved has no known end: no total, so no misleading time left
        self.bar = tqdm(total=args.max_steps if math.isinf(args.solve_score) else None, initial=steps,
                        unit="step", dynamic_ncols=True, mininterval=1.0, smoothing=0.05)

    def row(self, steps: int, seconds: float, **values) -> None:
        self.csv.writerow({"step": steps, "wall_seconds": f"{seconds:.2f}", **values})

    def episode(self, steps: int, seconds: float, episode_return: float) -> None:
        self.recent = (self.recent + [episode_return])[-20:]
        self.row(steps, seconds, train_return=episode_return)

    def validation(self, steps: int, seconds: float, returns: list[float]) -> None:
        self.row(steps, seconds, eval_mean=f"{np.mean(returns):.1f}", eval_std=f"{np.std(returns):.1f}")
        self.bar.write(f"step {steps}: validation {np.mean(returns):.1f} +- {np.std(returns):.1f}")

    def progress(self, steps: int, seconds: float, best_eval: float) -> None:
        """Move the bar; when a row is due, write the loss terms averaged since the last row."""
        if steps >= self.next_row and self.terms:
            means = dict(zip(LOSS_TERMS, np.mean(self.terms, axis=0)))
            self.row(steps, seconds, **{k: f"{v:.5g}" for k, v in means.items()})
            self.next_row, self.entropy = steps + self.every, f"{means['entropy']:.2f}"
            self.terms.clear()
            self.file.flush()  # a long run's CSV can be read while it trains
        self.bar.update(steps - self.bar.n)
        self.bar.set_postfix(ret=f"{np.mean(self.recent):.0f}" if self.recent else "-", refresh=False,  # "-": none yet
                             eval=f"{best_eval:.0f}" if math.isfinite(best_eval) else "-", ent=self.entropy)

    def close(self) -> None:
        self.bar.close()
        self.file.close()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: nn.Module, optimizer: SharedAdam | None, run: Run) -> None:
    """Weights, settings, counters (and optimizer: all --resume needs), synced and renamed into place."""
    checkpoint = {"env_id": run.args.env_id, "model": model.state_dict(), **{k: getattr(run, k) for k in COUNTERS},
                  "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.args).items()}}
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    with open(path.with_name(path.name + ".tmp"), "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename: a crash then leaves the old file or the new one
    os.replace(path.with_name(path.name + ".tmp"), path)


def load(path: Path, env_id: str | None) -> tuple[ActorCritic, dict]:
    """The model at `path` and its checkpoint; a one-line error if it is missing, unreadable or not ours."""
    if not path.is_file():
        sys.exit(f"error: no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, unsafe pickle ...
        sys.exit(f"error: cannot read checkpoint {path}: {type(error).__name__}")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "args" not in checkpoint:
        sys.exit(f"error: {path} is not a checkpoint of this script")
    if env_id is not None and checkpoint.get("env_id") != env_id:
        sys.exit(f"error: {path} was trained on {checkpoint.get('env_id')}, not {env_id}")
    checkpoint["args"] = {**vars(parse_args(["--train"])), **BEFORE_SETTINGS_EXISTED, **checkpoint["args"]}  # old
    model = build_model(argparse.Namespace(**checkpoint["args"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        sys.exit(f"error: {path} holds a different network architecture")
    return model, checkpoint


def run_name(env_id: str) -> str:
    """Run folders and shipped weights are named after the game: ALE/Pong-v5 -> pong (KungFuMaster: kungfu)."""
    name = env_id.split("/")[-1].split("-")[0].lower()
    return "kungfu" if name == "kungfumaster" else name


def newest_run(args: argparse.Namespace, validated: bool = True) -> Path | None:
    """model.pt of the newest run (validated: that has one; before that a run has model_last.pt only)."""
    for last in sorted(RUNS.glob(f"{run_name(args.env_id)}_*/model_last.pt"), key=lambda p: p.stat().st_mtime)[::-1]:
        if not validated or last.with_name("model.pt").exists():
            return last.with_name("model.pt").resolve()
        print(f"skipping {last.parent.resolve()}: no validation yet, so no best weights")
    return None


def last_of(checkpoint: Path) -> Path:
    """The resume point beside a run's best weights; its CSV and plot: checkpoint.with_suffix(".csv")."""
    return checkpoint.with_name(f"{checkpoint.stem}_last.pt")


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
    """The flags, one per SETTINGS entry among them; with --resume the run's settings are the defaults."""
    parser = argparse.ArgumentParser(
        description="A3C on Atari games from pixels: train, play, evaluate. Every flag's default is in brackets.",
        usage="%(prog)s (--train [--resume] | --play | --eval) [options]; see --help",
        epilog="runs/ is made in the folder you start from; pretrained/ is the folder beside the script.")
    what = parser.add_mutually_exclusive_group()  # one is required: checked below, after any unknown flag
    what.add_argument("--train", action="store_true", help="train a new agent (or --resume one)")
    what.add_argument("--play", action="store_true", help="show the agent in a window (GIFs when headless)")
    what.add_argument("--eval", action="store_true", help="evaluation games; print each score and mean/std")
    parser.add_argument("--env-id", default=ENV_ID, help="any ALE v5 game, e.g. ALE/Pong-v5 [%(default)s]")
    parser.add_argument("--checkpoint", type=Path, help="--train: where the best weights go [a new runs/ folder]; "
                        "else what to load [the newest run's (that validated), else pretrained/NAME.pt]")
    parser.add_argument("--resume", action="store_true", help="with --train: continue a run from its "
                        "model_last.pt; flags you type win, except ones that change the network")
    parser.add_argument("--mode", choices=["processes", "batch"], default="processes",
                        help="how experience is gathered; see the module docstring [processes]")
    parser.add_argument("--seed", type=int, help="--train: seeds python, numpy, torch and the training games "
                        "[0]; --eval/--play: the first game's seed [1000000, never trained on]")
    parser.add_argument("--episodes", type=int, help="--eval: games [30]; --play: games [1]")
    parser.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=False,
                        help="at test time take the most likely action, or draw it as training does [False]")
    parser.add_argument("--video", type=Path, help="--play, headless: the GIF [runs/videos/FOLDER_FILE.gif]")
    parser.add_argument("--video-steps", type=int, default=1500, help="--play, headless: steps recorded [%(default)s]")
    settings = parser.add_argument_group("settings (see SETTINGS at the top of the script)")
    for name, (default, meaning, *choices) in SETTINGS.items():
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        settings.add_argument(f"--{name.replace('_', '-')}", **kind, default=default,
                              choices=choices[0] if choices else None, help=f"{meaning} [{default}]")
    args = parser.parse_args(argv)
    if not (args.train or args.play or args.eval):
        parser.error("one of --train, --play or --eval is required")
    if args.resume:
        run = args.checkpoint or newest_run(args, validated=False)  # never the shipped checkpoint, unless named
        if not args.train or run is None:
            parser.error("--resume goes with --train" if not args.train else
                         f"nothing to resume under {RUNS}/: pass --checkpoint PATH/model.pt of the run")
        _, checkpoint = load(last_of(run), None)  # the run's game comes back with its settings
        if "optimizer" not in checkpoint:
            parser.error(f"{last_of(run)} has no optimizer state to resume from")
        saved = {k: v for k, v in checkpoint["args"].items()
                 if k in vars(args) and k not in ("train", "play", "eval", "resume", "checkpoint")}
        parser.set_defaults(**saved)
        args = parser.parse_args(argv)
        for name in ARCHITECTURE:
            if name in saved and getattr(args, name) != saved[name]:
                parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} does not match the run's "
                             f"{saved[name]}; a resumed run keeps its network")
        args.checkpoint = run
    args.seed = (0 if args.train else TEST_SEED) if args.seed is None else args.seed
    args.episodes = (1 if args.play else 30) if args.episodes is None else args.episodes
    too_small = [name for name, (default, _, *choices) in SETTINGS.items()
                 if type(default) is int and not choices and getattr(args, name) < 1]
    if too_small or args.episodes < 1 or args.video_steps < 1 or args.seed < 0 or args.eval_episodes > 100_000:
        parser.error(f"--{(too_small or ['episodes'])[0].replace('_', '-')}: counts must be at least 1, "
                     "--seed at least 0, --eval-episodes at most 100000")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1 and args.lr > 0):
        parser.error("--gamma must lie in (0, 1], --gae-lambda in [0, 1], --lr above 0")
    if not (args.env_id.startswith("ALE/") and args.env_id.endswith("-v5") and args.env_id in gym.registry):
        parser.error(f"--env-id {args.env_id} is not an ALE v5 game id (e.g. ALE/Pong-v5)")
    if args.train and args.mode != "batch" and args.workers > CORES:
        print(f"warning: --workers {args.workers} on {CORES} cores: the extra workers only add switching",
              file=sys.stderr)
    return args


# --------------------------------------------------------------------------- training: the parent's side
class TrainingFailed(Exception):
    """A worker died or the run diverged: training stops."""


class Run:
    """The parent's side of training: the counters a checkpoint keeps, and the duties tick() does in
    order, as nanoGPT's loop reads: validate, log, stop (the schedules follow the steps: see schedule)."""

    def __init__(self, args, model, optimizer, start: dict):
        self.args, self.model, self.optimizer, self.solved = args, model, optimizer, False
        self.steps, self.episodes, self.seconds_before, self.best_eval = map(start.get, COUNTERS)
        self.started, self.next_eval = time.time(), self.steps + args.eval_every
        self.log = TrainingLog(args, args.checkpoint.with_suffix(".csv"), self.steps)
        self.terms = self.log.terms  # each update's loss terms, which the log averages

    @property
    def seconds(self) -> float:  # wall time of training, earlier runs joined by --resume included
        return self.seconds_before + time.time() - self.started

    def episode(self, episode_return: float) -> None:
        self.episodes += 1
        self.log.episode(self.steps, self.seconds, episode_return)

    def tick(self, steps: int) -> bool:
        """Training has reached `steps`: the duties, in order. True when training should stop."""
        self.steps = steps
        if steps >= self.next_eval:  # 1. validate; keep the best weights and a resume point
            self.next_eval += self.args.eval_every
            self.validate()
        self.log.progress(steps, self.seconds, self.best_eval)  # 2. the bar and the loss rows
        return self.solved or steps >= self.args.max_steps or self.seconds >= self.args.max_seconds  # 3. stop?

    def validate(self) -> None:
        """Games on the same seeds every time (only they show progress), by a snapshot of the weights."""
        eval_model = build_model(self.args)
        eval_model.load_state_dict(self.model.state_dict())  # a copy: the workers go on training
        returns = evaluate(eval_model, self.args, self.args.eval_episodes, VALIDATION_SEED)
        self.log.validation(self.steps, self.seconds, returns)
        if np.mean(returns) >= self.best_eval:
            self.best_eval = float(np.mean(returns))
            save_checkpoint(self.args.checkpoint, eval_model, None, self)  # weights only: small
        save_checkpoint(last_of(self.args.checkpoint), self.model, self.optimizer, self)  # the resume point
        self.solved = np.mean(returns) >= self.args.solve_score


def train(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # before the model is built: its first weights come from this seed
    torch.set_num_threads(1)
    if args.resume:
        model, start = load(last_of(args.checkpoint), args.env_id)
        print(f"resuming from {last_of(args.checkpoint)} at step {start['steps']}")
    else:
        model, start = build_model(args), dict(zip(COUNTERS, (0, 0, 0.0, -math.inf)))
        folder = f"{run_name(args.env_id)}_{args.mode}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
        args.checkpoint = args.checkpoint or RUNS / folder / "model.pt"
    args.checkpoint = args.checkpoint.resolve()  # printed in full: runs/ is relative to where you start
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    optimizer = SharedAdam(model.parameters())
    if args.resume:
        optimizer.load_state_dict(start["optimizer"])

    run, failure = Run(args, model, optimizer, start), None
    stop_on_signal()
    try:
        {"processes": train_processes, "batch": train_batch}[args.mode](args, model, optimizer, run)
    except KeyboardInterrupt:
        run.log.bar.write("interrupted: saving and stopping the workers")
    except TrainingFailed as error:
        failure = error
    finally:
        run.log.close()
        if all(p.isfinite().all() for p in model.parameters()):  # (diverged weights keep the last save)
            save_checkpoint(last_of(args.checkpoint), model, optimizer, run)
    plot_curve(args.checkpoint.with_suffix(".csv"), args.checkpoint.with_suffix(".png"), f"A3C on {args.env_id}")
    if failure is not None:
        sys.exit(f"error: training stopped: {failure}")
    weights = args.checkpoint if args.checkpoint.exists() else "none, no validation yet (--eval-every)"
    print(f"stopped after {run.steps} agent steps, {run.seconds / 60:.1f} min. Best validation {run.best_eval:.0f}, "
          f"weights: {weights}, curve: {args.checkpoint.with_suffix('.png')}; --resume continues the run")
    return 0


# --------------------------------------------------------------------------- processes and signals
def run_worker(target, rank: int, seed: int, args: argparse.Namespace, shared: Shared) -> None:
    """Around every worker's loop: one core, its own seed, and a failure reported to the parent."""
    torch.set_num_threads(1)  # one core per worker; torch's own thread pool would fight the others
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
        path = (args.checkpoint or newest_run(args) or PRETRAINED / f"{run_name(args.env_id)}.pt").resolve()
        model, checkpoint = load(path, args.env_id)
        args.frame = checkpoint["args"]["frame"]  # the frames the network was trained on
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
