"""a3c_carracing.py: frames it skips drawing change nothing the agent sees, what training sees,
the recurrent loss, both modes end to end, bad input."""
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, run_script, train_evaluate_play

import a3c_carracing as carracing

SCRIPT = Path(carracing.__file__).resolve()


def run(*flags, cwd, check=True, timeout=300):
    return run_script(SCRIPT, *flags, cwd=cwd, check=check, timeout=timeout)


@pytest.mark.parametrize("actions", ["gymnasium", "tutorial"])
def test_fast_env_gives_the_stock_envs_observations_and_rewards(actions):
    args = carracing.parse_args(["--train", "--actions", actions])
    fast, stock = carracing.make_env(args), carracing.make_env(args, fast=False)
    assert not isinstance(stock.unwrapped, carracing.FastCarRacing)
    obs_fast, _ = fast.reset(seed=11)
    obs_stock, _ = stock.reset(seed=11)
    np.testing.assert_array_equal(obs_fast, obs_stock)
    rng = np.random.default_rng(0)
    for step in range(250):  # a whole 1000-frame episode at action repeat 4
        action = int(rng.integers(fast.action_space.n))
        *fast_out, _ = fast.step(action)
        *stock_out, _ = stock.step(action)
        np.testing.assert_array_equal(fast_out[0], stock_out[0])
        assert fast_out[1:] == stock_out[1:], step  # reward, terminated, truncated
        if fast_out[2] or fast_out[3]:
            break
    assert fast_out[3], "the episode should end at the 1000-frame time limit"


def test_an_episode_ending_between_drawn_frames_shows_its_last_frame():
    args = carracing.parse_args(["--train", "--action-repeat", "3"])
    fast, stock = carracing.make_env(args), carracing.make_env(args, fast=False)
    fast.reset(seed=2)
    stock.reset(seed=2)
    for step in range(334):  # 1000 is not a multiple of 3: the last step ends after one frame
        *fast_out, _ = fast.step(0)  # "nothing": the car stands, only the time limit ends it
        *stock_out, _ = stock.step(0)
        if fast_out[2] or fast_out[3]:
            break
    assert step == 333 and fast_out[3] and stock_out[3]
    np.testing.assert_array_equal(fast_out[0], stock_out[0])


def raw_return_standing_still(args, training):
    env = carracing.make_env(args, training=training)
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(0)
        total, done = total + reward, terminated or truncated
    return total


def test_training_cuts_hopeless_episodes_and_clips_rewards_evaluation_does_not():
    args = carracing.parse_args(["--train", "--patience", "5", "--rollout-len", "8"])
    rollouts = carracing.Rollouts(carracing.make_vector_env(args, 1, training=True), seed=0)
    model = carracing.build_model(args)
    with torch.no_grad():
        model.policy.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0]))  # always "nothing": the car stands still
    rollout, finished = rollouts.collect(model, args)
    # the first step reaches the start tiles (reward > 1); after it every step costs -0.4 raw
    # (4 frames), and the 5th negative step in a row cuts the episode, as a truncation
    np.testing.assert_array_equal(rollout["truncated"][:, 0], [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(rollout["terminated"][:, 0], 0)
    np.testing.assert_array_equal(rollout["starts"][:, 0], [1, 0, 0, 0, 0, 0, 1, 0])
    assert rollout["rewards"][0, 0] == 1.0 and rollout["rewards"][1, 0] == pytest.approx(-0.4)  # clipped
    assert finished == [pytest.approx(raw_return_standing_still(args, training=True))]  # raw
    full = raw_return_standing_still(args, training=False)  # no cut: all 1000 frames
    assert full < finished[0] - 90
    assert carracing.evaluate(model, 1, seed=0, args=args) == [pytest.approx(full)]


def test_recurrent_loss_backpropagates_through_the_rollout():
    args = carracing.parse_args(["--train", "--rollout-len", "4"])
    envs = carracing.make_vector_env(args, 2, training=True)
    rollouts = carracing.Rollouts(envs, seed=0)
    model = carracing.build_model(args)
    rollout, _ = rollouts.collect(model, args)
    rollout, _ = rollouts.collect(model, args)  # h0 now carries the first rollout's memory
    assert rollout["h0"].abs().sum() > 0 and not rollout["h0"].requires_grad
    loss = carracing.a3c_loss(model, **rollout, args=args)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.core.parameters())


@pytest.mark.parametrize("mode", ["processes", "batch"])
def test_both_modes_train_evaluate_and_play(mode, tmp_path):
    train_evaluate_play(SCRIPT, mode, tmp_path, "--max-steps", 40, "--eval-every", 20, "--eval-episodes", 1,
                        "--envs-per-worker", 1, "--num-envs", 2, "--rollout-len", 5)
    assert list((tmp_path / "run" / "model_videos").glob("step_*.gif")), "a video of each evaluation"


def test_bad_input(tmp_path):
    missing = run("--eval", "--checkpoint", tmp_path / "x.pt", cwd=tmp_path, check=False)
    assert "no checkpoint" in one_line_error(missing)
    cartpole = SCRIPT.parent / "pretrained" / "cartpole.pt"
    assert "CartPole-v1" in one_line_error(run("--play", "--checkpoint", cartpole, cwd=tmp_path, check=False))
    one_line_error(run("--train", "--action-repeat", "0", cwd=tmp_path, check=False))
    one_line_error(run("--train", "--actions", "joystick", cwd=tmp_path, check=False))
