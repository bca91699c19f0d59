"""The only code the A3C scripts share: n-step returns, GAE(lambda) advantages, policy entropy.

A rollout is T steps long, time-major: arrays of shape [T] (one env) or [T, N] (N envs).
For step t of the rollout:

    rewards[t]      r_t, the reward for the action taken in s_t
    values[t]       V(s_t), the critic's value of the state the action was taken in
    next_values[t]  V(s_{t+1}), the value of the state the step led to. Usually values[t+1];
                    for the last step it is the bootstrap value V(s_T); for a step cut by a time
                    limit it is V of the truncated (final) observation, not of the next reset.
    terminated[t]   s_{t+1} is terminal: nothing comes after it, so its value is 0.
    truncated[t]    the episode was cut after this step (time limit). s_{t+1} is not terminal,
                    so we bootstrap from V(s_{t+1}), but the next row belongs to a new episode.

The formulas (gamma = discount, lambda = GAE parameter):

    n-step return   R_t = r_t + gamma * (1 - term_t) * ( V(s_{t+1})  if trunc_t or t = T-1
                                                         R_{t+1}     otherwise )
    TD error        delta_t = r_t + gamma * (1 - term_t) * V(s_{t+1}) - V(s_t)
    GAE             A_t = delta_t + gamma * lambda * (1 - term_t) * (1 - trunc_t) * A_{t+1}

With lambda = 1 the GAE advantage is exactly the n-step advantage R_t - V(s_t) of the A3C paper.
"""
from __future__ import annotations

import numpy as np
import torch


def n_step_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                   truncated: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted n-step returns R_t, bootstrapped from V at the rollout end and at truncations."""
    returns = np.zeros_like(next_values, dtype=np.float32)
    running = next_values[-1]  # R_T is the bootstrap value V(s_T)
    for t in reversed(range(len(rewards))):
        # At a time-limit cut the return restarts from V(final obs); otherwise it continues.
        running = np.where(truncated[t], next_values[t], running)
        running = rewards[t] + gamma * (1.0 - terminated[t]) * running  # R_t = r_t + gamma R_{t+1}
        returns[t] = running
    return returns


def gae_advantages(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                   terminated: np.ndarray, truncated: np.ndarray, gamma: float,
                   lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) advantages A_t and the critic's targets A_t + V(s_t) (the lambda-returns)."""
    not_terminal = 1.0 - terminated.astype(np.float32)
    # episode boundaries (either kind) stop the advantage from flowing back across them
    not_done = not_terminal * (1.0 - truncated.astype(np.float32))
    deltas = rewards + gamma * not_terminal * next_values - values  # delta_t
    advantages = np.zeros_like(deltas, dtype=np.float32)
    running = np.zeros_like(deltas[0], dtype=np.float32)
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * lam * not_done[t] * running  # A_t = delta_t + gamma lambda A_{t+1}
        advantages[t] = running
    return advantages, advantages + values


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H(pi) = -sum_a pi(a) log pi(a) of categorical policies given by logits [..., A]."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)
