"""a3c_util against a naive per-step loop and against a hand-computed example."""
import math

import numpy as np
import pytest
import torch

from a3c_util import entropy_from_logits, gae_advantages, n_step_returns


def naive_returns_and_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """One env, written the long way: walk forward from each step to the end of its episode
    or of the rollout, summing discounted rewards (returns) and discounted TD errors (GAE)."""
    T = len(rewards)
    returns, advantages = np.zeros(T), np.zeros(T)
    for t in range(T):
        ret, adv, discount = 0.0, 0.0, 1.0
        for k in range(t, T):
            delta = rewards[k] + gamma * (0.0 if terminated[k] else next_values[k]) - values[k]
            adv += (gamma * lam) ** (k - t) * delta
            ret += discount * rewards[k]
            discount *= gamma
            if terminated[k]:
                break
            if truncated[k] or k == T - 1:
                ret += discount * next_values[k]
                break
        returns[t], advantages[t] = ret, adv
    return returns, advantages


def random_rollout(rng, T, N=None):
    shape = (T,) if N is None else (T, N)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    next_values = rng.normal(size=shape).astype(np.float32)
    ends = rng.random(shape)
    terminated = (ends < 0.15).astype(np.float32)
    truncated = ((ends >= 0.15) & (ends < 0.25)).astype(np.float32)
    return rewards, values, next_values, terminated, truncated


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_matches_naive_loop_one_env(gamma, lam):
    rng = np.random.default_rng(0)
    for _ in range(20):
        rollout = random_rollout(rng, T=int(rng.integers(1, 30)))
        rewards, values, next_values, terminated, truncated = rollout
        want_returns, want_adv = naive_returns_and_gae(*rollout, gamma, lam)
        adv, targets = gae_advantages(*rollout, gamma, lam)
        np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(targets, want_adv + values, rtol=1e-5, atol=1e-5)
        returns = n_step_returns(rewards, next_values, terminated, truncated, gamma)
        np.testing.assert_allclose(returns, want_returns, rtol=1e-5, atol=1e-5)


def test_matches_naive_loop_per_env_in_a_batch():
    rng = np.random.default_rng(1)
    rollout = random_rollout(rng, T=25, N=6)
    adv, _ = gae_advantages(*rollout, 0.99, 0.9)
    returns = n_step_returns(rollout[0], *rollout[2:], 0.99)
    for n in range(6):
        column = [x[:, n] for x in rollout]
        want_returns, want_adv = naive_returns_and_gae(*column, 0.99, 0.9)
        np.testing.assert_allclose(adv[:, n], want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(returns[:, n], want_returns, rtol=1e-5, atol=1e-5)


def test_lambda_one_is_the_n_step_advantage():
    # the telescoping sum needs a consistent rollout: within an episode V(s_{t+1}) is values[t+1]
    rewards, values, next_values, terminated, truncated = random_rollout(np.random.default_rng(2), T=40)
    same_episode = (terminated[:-1] + truncated[:-1]) == 0
    next_values[:-1] = np.where(same_episode, values[1:], next_values[:-1])
    rollout = rewards, values, next_values, terminated, truncated
    adv, targets = gae_advantages(*rollout, 0.97, 1.0)
    returns = n_step_returns(rewards, next_values, terminated, truncated, 0.97)
    np.testing.assert_allclose(adv, returns - values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, returns, rtol=1e-5, atol=1e-5)


def test_hand_computed_example():
    # 4 steps, gamma 0.5: the episode is cut by a time limit after step 1 (V(final obs) = 8),
    # a new one starts at step 2 and terminates after step 3; the bootstrap is unused.
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    values = np.array([0.0, 1.0, 0.0, 1.0])
    next_values = np.array([1.0, 8.0, 1.0, 100.0])
    terminated = np.array([0.0, 0.0, 0.0, 1.0])
    truncated = np.array([0.0, 1.0, 0.0, 0.0])
    # R_3 = 4 (terminal); R_2 = 3 + 0.5 * 4 = 5; R_1 = 2 + 0.5 * 8 = 6 (truncated: bootstrap);
    # R_0 = 1 + 0.5 * 6 = 4
    returns = n_step_returns(rewards, next_values, terminated, truncated, 0.5)
    np.testing.assert_allclose(returns, [4.0, 6.0, 5.0, 4.0])
    # lambda = 0: A_t = delta_t = r_t + gamma * V(s_{t+1}) * (1 - term_t) - V(s_t)
    adv, _ = gae_advantages(rewards, values, next_values, terminated, truncated, 0.5, 0.0)
    np.testing.assert_allclose(adv, [1.5, 5.0, 3.5, 3.0])


def test_entropy_from_logits():
    logits = torch.randn(7, 5)
    want = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), want)
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(torch.tensor([0.0, -1e4])).item() == pytest.approx(0.0, abs=1e-6)
