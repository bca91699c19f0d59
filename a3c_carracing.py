"""A3C (Asynchronous Advantage Actor-Critic) that learns to drive CarRacing from pixels.

    python a3c_carracing.py --train             # train (hours; resumable with --resume)
    python a3c_carracing.py --play              # watch the greedy driver (a GIF when headless)
    python a3c_carracing.py --eval --episodes 50 --seed 0
    python a3c_carracing.py --train --mode batch  # the other mode: processes, batch

This script has the shape and names of a3c_cartpole.py; only the environment, the
preprocessing and the network differ. A3C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783):
several workers, each with its own environments and a local copy of one shared actor-critic
network. A worker repeats:

    1. copy the shared weights:                    theta' <- theta
    2. act for n steps with pi(a | s, h; theta'), h the recurrent state
    3. n-step return:                              R_t = r_t + gamma * R_{t+1},  R_n = V(s_n)
       advantage:                                  A_t = R_t - V(s_t)     (GAE(lambda) with lambda=1)
    4. loss = -mean(log pi(a_t | s_t) * A_t)             policy gradient, A_t held constant
              + value_coef   * mean((R_t - V(s_t))^2)    critic regression
              - entropy_coef * mean(H(pi(. | s_t)))      keeps the policy exploring
    5. gradients of the local copy -> shared model, one optimizer step on the shared weights

CarRacing specifics. Gymnasium's CarRacing-v3 with discrete control; each action is repeated for
4 frames, and the 3 frames in between are not drawn: drawing dominates a step's time and is a
pure function of the physics, so the frames the agent does see are the stock env's, pixel for
pixel (a test checks; benchmarks/bench_carracing.py measures the speed-up). Observations are 4
stacked 64x64 grayscale frames made by Gymnasium's wrappers. The network is a conv trunk, a GRU
core and policy/value heads; the GRU state is reset at each episode's start, carried across
rollouts and trained by backpropagation through each rollout. Training sees rewards clipped to
[-1, 1] and cuts an episode after a long streak of negative reward (the car is lost); evaluation
plays full 1000-frame episodes with neither, and every score shown is the raw env return.

Hogwild updates are not bit-reproducible, even with --seed.

Modes (--mode):
    processes  real A3C: worker processes update a model in shared memory (the default)
    batch      one learner steps one vector of environments in lock-step (synchronous A2C)
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
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from gymnasium.envs.box2d.car_racing import CarRacing
from tqdm import tqdm

from a3c_util import entropy_from_logits, gae_advantages

ENV_ID = "CarRacing-v3"
PRETRAINED = Path(__file__).parent / "pretrained" / "carracing.pt"
RUNS = Path("runs")
MAX_FRAMES, FRAME_SIZE, FRAME_STACK = 1000, 64, 4  # CarRacing-v3's time limit; the agent's view
# Discrete control. Gymnasium's own 5 actions (continuous=False): nothing, steer left, steer
# right, gas, brake. We use them: "do nothing" lets the car coast through a bend, which the
# tutorial's 4 actions (below, --actions tutorial) cannot express without braking.
ACTION_SETS = {
    "gymnasium": ["nothing", "left", "right", "gas", "brake"],
    # the tutorial's: [steer, gas, brake] vectors for the continuous env
    "tutorial": {"left": [-0.8, 0.0, 0.0], "right": [0.8, 0.0, 0.0], "gas": [0.0, 0.1, 0.0], "brake": [0.0, 0.0, 0.6]},
}


# --------------------------------------------------------------------------- hyperparameters
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A3C on CarRacing from pixels: train, play, evaluate.",
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
                             "Default: a new runs/ folder for --train; the newest runs/carracing_*/model.pt, "
                             "else the shipped pretrained/carracing.pt, for the others")
    parser.add_argument("--resume", action="store_true",
                        help="with --train: continue from --checkpoint (or the newest run) with its "
                             "model, optimizer, step counter and arguments; flags you give win")
    parser.add_argument("--mode", choices=["processes", "batch"], default="processes",
                        help="how experience is gathered; see the module docstring")
    parser.add_argument("--seed", type=int, default=0, help="seeds python, numpy, torch and envs (seed + rank)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="--eval: greedy episodes (default 50); --play: episodes (default 1)")
    parser.add_argument("--video", type=Path, default=RUNS / "videos" / "carracing.gif",
                        help="--play without a display: where the GIF goes")
    parser.add_argument("--video-steps", type=int, default=250,
                        help="--play without a display: record the first this many agent steps of each episode")

    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--actions", choices=list(ACTION_SETS), default="gymnasium",
                    help="the discrete action set (see ACTION_SETS)")
    hp.add_argument("--action-repeat", type=int, default=4, help="frames each action is held for")
    hp.add_argument("--workers", type=int, default=2, help="--mode processes: worker processes (one per core)")
    hp.add_argument("--envs-per-worker", type=int, default=2,
                    help="--mode processes: environments each worker steps with one batched forward pass")
    hp.add_argument("--num-envs", type=int, default=4, help="--mode batch: environments in the vector")
    hp.add_argument("--rollout-len", type=int, default=20, help="n: steps per update per env (t_max), BPTT length")
    hp.add_argument("--gamma", type=float, default=0.99, help="discount factor")
    hp.add_argument("--gae-lambda", type=float, default=1.0, help="GAE lambda; 1.0 is the paper's n-step advantage")
    hp.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (the tutorial's)")
    hp.add_argument("--entropy-coef", type=float, default=0.01, help="weight of the entropy bonus")
    hp.add_argument("--value-coef", type=float, default=0.5, help="weight of the critic's squared error")
    hp.add_argument("--max-grad-norm", type=float, default=40.0, help="clip each update's gradient norm to this")
    hp.add_argument("--epsilon", type=float, default=0.0,
                    help="epsilon-greedy on top of policy sampling: probability of a uniform random action")
    hp.add_argument("--hidden", type=int, default=256, help="units of the GRU core")
    hp.add_argument("--patience", type=int, default=50,
                    help="training only: end an episode after this many agent steps in a row with negative reward")

    budget = parser.add_argument_group("stopping and evaluation")
    budget.add_argument("--max-steps", type=int, default=10_000_000, help="stop after this many agent steps")
    budget.add_argument("--max-seconds", type=float, default=4 * 3600.0, help="stop after this much wall time")
    budget.add_argument("--eval-every", type=int, default=100_000, help="greedy evaluation every this many steps")
    budget.add_argument("--eval-episodes", type=int, default=4, help="greedy episodes per evaluation")
    budget.add_argument("--solve-score", type=float, default=math.inf,
                        help="stop once an evaluation's mean return reaches this (default: never)")
    args = parser.parse_args(argv)
    if args.episodes is None:
        args.episodes = 1 if args.play else 50

    for name in ("action_repeat", "workers", "envs_per_worker", "num_envs", "rollout_len", "hidden", "episodes",
                 "video_steps", "patience", "max_steps", "eval_every", "eval_episodes"):
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
class FastCarRacing(CarRacing):
    """CarRacing-v3 that draws the agent's frame only when asked (`draw`); physics, rewards and
    every drawn frame are the stock env's. Drawing depends only on the physics state, so frames
    that nobody looks at can be skipped without changing the ones that are looked at."""

    draw = True

    def _render(self, mode: str):
        if mode == "state_pixels" and not self.draw:
            return self.state  # the previous frame, a placeholder nobody reads
        return super()._render(mode)


class ActionRepeat(gym.Wrapper):
    """Hold each action for `repeat` frames and sum their rewards. On a FastCarRacing only the
    last of those frames is drawn (or the frame where the episode ends)."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        car_racing, total = self.env.unwrapped, 0.0
        for i in range(self.repeat):
            car_racing.draw = i == self.repeat - 1  # a plain attribute on the stock env: no effect
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += reward
            if terminated or truncated:
                break
        if not car_racing.draw:  # ended on a frame that was not drawn: draw it now
            car_racing.draw = True
            obs = car_racing.state = car_racing._render("state_pixels")
        return obs, total, terminated, truncated, info


class TutorialActions(gym.ActionWrapper):
    """The tutorial's 4 discrete actions on top of the continuous env."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.vectors = np.array(list(ACTION_SETS["tutorial"].values()), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(self.vectors))

    def action(self, action):
        return self.vectors[int(action)]


class EndHopelessEpisode(gym.Wrapper):
    """Training only: cut the episode (truncation, not a terminal state) after `patience` steps
    in a row with negative reward; the car has left the track and is not coming back."""

    def __init__(self, env: gym.Env, patience: int):
        super().__init__(env)
        self.patience, self.streak = patience, 0

    def reset(self, **kwargs):
        self.streak = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.streak = self.streak + 1 if reward < 0 else 0
        return obs, reward, terminated, truncated or self.streak >= self.patience, info


def make_env(args: argparse.Namespace, render_mode: str | None = None, fast: bool = True,
             training: bool = False) -> gym.Env:
    """CarRacing-v3 as the agent sees it: repeated actions, 64x64 grayscale, 4 frames stacked.
    fast=False gives the stock env (every frame drawn), for the speed and equality checks."""
    continuous = args.actions == "tutorial"
    env = FastCarRacing(continuous=continuous, render_mode=render_mode) if fast else \
        CarRacing(continuous=continuous, render_mode=render_mode)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=MAX_FRAMES)  # as gym.make("CarRacing-v3") does
    if continuous:
        env = TutorialActions(env)
    env = ActionRepeat(env, args.action_repeat)
    if training:
        env = EndHopelessEpisode(env, args.patience)
    env = gym.wrappers.GrayscaleObservation(env)
    env = gym.wrappers.ResizeObservation(env, (FRAME_SIZE, FRAME_SIZE))
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type="zero")


def make_vector_env(args: argparse.Namespace, num_envs: int, training: bool = False) -> gym.vector.SyncVectorEnv:
    # SAME_STEP autoreset: a finished env is reset inside step() and its final observation is
    # handed back in info["final_obs"], which we need to bootstrap a truncation.
    return gym.vector.SyncVectorEnv([lambda: make_env(args, training=training) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class ActorCritic(nn.Module):
    """Conv trunk (64 -> 31 -> 15 -> 7 -> 3 pixels), a GRU core, policy and value heads.

    step() takes one frame stack per env and the GRU state h, and returns logits, V(s) and the
    new h. The trunk has no memory, so for the loss it runs once over a whole rollout (encode)
    and only the GRU steps through time."""

    def __init__(self, in_channels: int, n_actions: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(),
            nn.Flatten())
        self.core = nn.GRUCell(32 * 3 * 3, hidden)
        self.policy = nn.Linear(hidden, n_actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden = hidden

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs.float() / 255.0)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(h), self.value(h).squeeze(-1)

    def step(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.core(self.encode(obs), h)
        return (*self.heads(h), h)

    def initial_state(self, num_envs: int) -> torch.Tensor:
        return torch.zeros(num_envs, self.hidden)


def build_model(args: argparse.Namespace) -> ActorCritic:
    return ActorCritic(FRAME_STACK, len(ACTION_SETS[args.actions]), args.hidden)


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


def a3c_loss(model: ActorCritic, obs, actions, rewards, next_obs, terminated, truncated, starts, h0,
             args: argparse.Namespace) -> torch.Tensor:
    """The A3C loss of one rollout: arrays [T, N] per step, obs [T, N, 4, 64, 64], starts[t] = 1
    where an episode begins at step t, h0 the GRU state before the rollout's first step."""
    T, N = rewards.shape
    features = model.encode(torch.as_tensor(obs).flatten(0, 1)).view(T, N, -1)
    h, hs = h0, []
    for t in range(T):  # backpropagation through the rollout: the GRU steps through time
        h = model.core(features[t], h * (1.0 - torch.as_tensor(starts[t])).unsqueeze(-1))  # reset at episode start
        hs.append(h)
    hs = torch.stack(hs)
    logits, values = model.heads(hs)
    # V(s_{t+1}) is the next row's V(s_t), except after the last step and where an episode was
    # cut (its final frame is not in obs): there one more GRU step from h_t gives it.
    next_values = np.empty((T, N), np.float32)
    next_values[:-1] = values[1:].detach().numpy()
    own = np.zeros((T, N), dtype=bool)
    own[-1] = True
    own |= truncated > 0
    with torch.no_grad():  # bootstrap targets are constants, no gradient through them
        h_after = model.core(model.encode(torch.as_tensor(next_obs[own])), hs[torch.as_tensor(own)])
        next_values[own] = model.heads(h_after)[1].numpy()
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
    """Steps a vector of envs with a model; keeps each env's raw return and GRU state across rollouts."""

    def __init__(self, envs: gym.vector.VectorEnv, seed: int):
        self.envs, self.rng = envs, np.random.default_rng(seed)
        self.obs, _ = envs.reset(seed=seed)
        self.h = None  # the GRU state, made by the first collect()
        self.starts = np.ones(envs.num_envs, np.float32)  # every env begins an episode
        self.scores = np.zeros(envs.num_envs)

    def collect(self, model: ActorCritic, args: argparse.Namespace) -> tuple[dict, list[float]]:
        """n steps of every env: the rollout arrays [T, N] (and h0) and the raw returns of finished episodes."""
        if self.h is None:
            self.h = model.initial_state(self.envs.num_envs)
        h0 = self.h  # where backpropagation through this rollout starts (no gradient before it)
        keys = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "starts")
        rollout = {k: [] for k in keys}
        finished = []
        for _ in range(args.rollout_len):
            with torch.no_grad():
                h = self.h * (1.0 - torch.as_tensor(self.starts)).unsqueeze(-1)  # a new episode forgets
                logits, _, self.h = model.step(torch.as_tensor(self.obs), h)
            actions = act(logits, args.epsilon, self.rng)
            next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
            done = terminated | truncated
            real_next_obs = next_obs.copy()
            if done.any():
                real_next_obs[done] = np.stack(info["final_obs"][done])
            # training sees rewards clipped to [-1, 1]; the scores stay raw
            for key, value in zip(keys, (self.obs, actions, np.clip(rewards, -1, 1), real_next_obs,
                                         terminated, truncated, self.starts)):
                rollout[key].append(value)
            self.scores += rewards
            finished += self.scores[done].tolist()
            self.scores[done] = 0.0
            self.starts = done.astype(np.float32)
            self.obs = next_obs
        types = {"obs": np.uint8, "next_obs": np.uint8, "actions": np.int64}
        rollout = {k: np.asarray(v, dtype=types.get(k, np.float32)) for k, v in rollout.items()}
        return {**rollout, "h0": h0}, finished


# --------------------------------------------------------------------------- the worker
def worker(rank: int, args: argparse.Namespace, shared_model: ActorCritic, optimizer: SharedAdam,
           global_steps, stop, episode_returns) -> None:
    """One A3C worker process, stepping its own small vector of envs."""
    torch.set_num_threads(1)  # one core per worker; torch's own thread pool would fight the others
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.manual_seed(args.seed + rank)
    envs = make_vector_env(args, args.envs_per_worker, training=True)
    rollouts = Rollouts(envs, seed=args.seed + 1000 * rank)
    local_model = build_model(args)

    while not stop.is_set():
        local_model.load_state_dict(shared_model.state_dict())  # theta' <- theta
        rollout, finished = rollouts.collect(local_model, args)
        for score in finished:
            episode_returns.put(score)

        loss = a3c_loss(local_model, **rollout, args=args)
        local_model.zero_grad()  # fresh gradients for this update only (see hand_over_gradients)
        loss.backward()
        nn.utils.clip_grad_norm_(local_model.parameters(), args.max_grad_norm)
        # no lock: each process has its own .grad; the weights and Adam state are shared (Hogwild)
        hand_over_gradients(local_model, shared_model)
        optimizer.step()  # updates the shared weights and the shared Adam moments
        with global_steps.get_lock():
            global_steps.value += args.rollout_len * args.envs_per_worker
    envs.close()


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
                        mininterval=1.0, smoothing=0.05)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.time() - self.started

    def episode(self, episode_return: float) -> None:
        self.episodes += 1
        self.recent = (self.recent + [episode_return])[-20:]
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", episode_return, "", ""])
        self.csv_file.flush()

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
        returns = evaluate(eval_model, self.args.eval_episodes, seed, self.args)
        self.evals_done += 1
        mean = float(np.mean(returns))
        self.csv.writerow([self.steps, f"{self.seconds:.2f}", "", f"{mean:.1f}", f"{np.std(returns):.1f}"])
        self.bar.write(f"step {self.steps}: greedy evaluation {mean:.0f} +- {np.std(returns):.0f}")
        if mean >= self.best_eval:
            self.best_eval = mean
            save_checkpoint(self.paths["best"], eval_model, self.optimizer, self)
        save_checkpoint(self.paths["last"], self.model, self.optimizer, self)  # a long run keeps a recent resume point
        drive(eval_model, seed, self.args, video=self.paths["videos"] / f"step_{self.steps:09d}.gif")  # watch progress
        self.solved = mean >= self.args.solve_score

    def close(self) -> None:
        self.bar.close()
        self.csv_file.close()


# --------------------------------------------------------------------------- the two modes
def train_processes(args, model, optimizer, log) -> None:
    """A3C proper: worker processes run asynchronously against the shared model."""
    # fork starts workers without importing torch again; spawn where fork does not exist
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    global_steps, stop, episode_returns = ctx.Value("q", log.steps), ctx.Event(), ctx.SimpleQueue()
    model.share_memory()  # the weights every worker reads and writes
    workers = [ctx.Process(target=worker, daemon=True,
                           args=(rank, args, model, optimizer, global_steps, stop, episode_returns))
               for rank in range(args.workers)]
    for w in workers:
        w.start()
    try:
        while True:
            while not episode_returns.empty():
                log.episode(episode_returns.get())
            if log.update(global_steps.value):
                break
            time.sleep(0.1)
    finally:
        stop.set()  # also on Ctrl-C: every worker sees it and leaves its loop
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()


def train_batch(args, model, optimizer, log) -> None:
    """Synchronous A2C: one learner, one forward pass for the whole vector of envs."""
    torch.set_num_threads(1)
    envs = make_vector_env(args, args.num_envs, training=True)
    rollouts = Rollouts(envs, seed=args.seed)
    steps = log.steps
    try:
        while True:
            rollout, finished = rollouts.collect(model, args)
            for score in finished:
                log.episode(score)
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


# --------------------------------------------------------------------------- evaluation and play
def evaluate(model: ActorCritic, episodes: int, seed: int, args: argparse.Namespace,
             verbose: bool = False) -> list[float]:
    """Greedy (argmax) raw returns of `episodes` full 1000-frame episodes (no early cut), one
    track per seed: seed, seed+1, ... The episodes run side by side in one vector env."""
    envs = make_vector_env(args, episodes)
    obs, _ = envs.reset(seed=seed)
    h = model.initial_state(episodes)
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        with torch.no_grad():
            logits, _, h = model.step(torch.as_tensor(obs), h)
        obs, rewards, terminated, truncated, _ = envs.step(logits.argmax(-1).numpy())
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    if verbose:
        for i, ret in enumerate(returns):
            print(f"episode {i + 1:3d} (seed {seed + i}): return {ret:.1f}")
    return returns.tolist()


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def drive(model: ActorCritic, seed: int, args: argparse.Namespace, render_mode: str | None = None,
          video: Path | None = None) -> float:
    """One greedy episode on the track of `seed`; its raw return. With a video path, the first
    --video-steps agent steps are written there as a GIF."""
    env = make_env(args, render_mode="rgb_array" if video else render_mode)
    obs, _ = env.reset(seed=seed)
    h = model.initial_state(1)
    frames, done, episode_return = [], False, 0.0
    while not done:
        if video and len(frames) < args.video_steps:
            frames.append(env.render()[::2, ::2])  # half size keeps the GIF small
        with torch.no_grad():
            logits, _, h = model.step(torch.as_tensor(obs).unsqueeze(0), h)
        obs, reward, terminated, truncated, _ = env.step(logits.argmax().item())
        episode_return += reward
        done = terminated or truncated
    env.close()
    if video:
        from PIL import Image  # comes with matplotlib
        video.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(f) for f in frames]
        # one GIF frame per agent step (4 env frames at 50 fps): 80 ms plays it in real time
        images[0].save(video, save_all=True, append_images=images[1:], duration=80, loop=0)
    return episode_return


def play(model: ActorCritic, episodes: int, seed: int, args: argparse.Namespace) -> None:
    """Greedy episodes in a window, or, without a display, recorded to GIFs."""
    headless = not has_display()
    for episode in range(episodes):
        video = args.video if episode == 0 else args.video.with_name(f"{args.video.stem}_{episode + 1}.gif")
        episode_return = drive(model, seed + episode, args, render_mode="human", video=video if headless else None)
        print(f"episode {episode + 1}: return {episode_return:.1f}")
        if headless:
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
    saved = checkpoint["args"]
    model = build_model(argparse.Namespace(hidden=saved.get("hidden", 256), actions=saved.get("actions", "gymnasium")))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise CheckpointError(f"{path} holds a different network architecture") from None
    return model


def newest_checkpoint() -> Path:
    """The newest trained checkpoint under runs/, else the shipped pretrained one."""
    trained = sorted(RUNS.glob("carracing_*/model.pt"), key=lambda p: p.stat().st_mtime)
    return trained[-1] if trained else PRETRAINED


def paths_for(checkpoint: Path) -> dict[str, Path]:
    """A run's files sit beside its best checkpoint: model.pt, model_last.pt, model.csv, model.png,
    and model_videos/ with a GIF of the first evaluation track at every evaluation."""
    stem = checkpoint.with_suffix("")
    return {"best": checkpoint, "last": Path(f"{stem}_last.pt"), "csv": Path(f"{stem}.csv"),
            "png": Path(f"{stem}.png"), "videos": Path(f"{stem}_videos")}


def plot_curve(csv_path: Path, png_path: Path) -> None:
    import matplotlib  # imported here: it costs most of a second, and only the end needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    train = [(int(r["step"]), float(r["wall_seconds"]), float(r["train_return"])) for r in rows if r["train_return"]]
    evals = [(int(r["step"]), float(r["wall_seconds"]), float(r["eval_mean"])) for r in rows if r["eval_mean"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    x_axes = ((axes[0], 0, "agent steps (thousands)", 1e-3), (axes[1], 1, "wall time (hours)", 1 / 3600))
    for ax, column, label, scale in x_axes:
        if train:
            ax.plot([t[column] * scale for t in train], [t[2] for t in train], ".", ms=2, alpha=0.4,
                    label="training episodes (sampled actions, cut when lost)")
        if evals:
            ax.plot([e[column] * scale for e in evals], [e[2] for e in evals], "o-", label="greedy evaluation mean")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("raw episode return")
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
        args.checkpoint = RUNS / f"carracing_{args.mode}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}" / "model.pt"
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
    launch = {"processes": train_processes, "batch": train_batch}
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
    print(f"best greedy evaluation {log.best_eval:.0f} after {log.steps} agent steps, "
          f"{log.seconds / 60:.1f} min. Best weights: {paths['best']}  curve: {paths['png']}")


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
        # the env as the checkpoint was trained in
        args.actions = checkpoint["args"].get("actions", "gymnasium")
        args.action_repeat = checkpoint["args"].get("action_repeat", 4)
        if args.eval:
            returns = evaluate(model, args.episodes, args.seed, args, verbose=True)
            print(f"mean {np.mean(returns):.1f} std {np.std(returns):.1f} over {len(returns)} episodes")
        else:
            play(model, args.episodes, args.seed, args)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
