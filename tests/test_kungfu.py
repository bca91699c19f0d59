"""a3c_kungfu.py: the protocol and preprocessing, what training sees, both modes end to end, bad input.
The A3C mechanics (gradient hand-off, shared Adam, the util) are tested through a3c_cartpole.py."""
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, run_script, train_evaluate_play

import a3c_kungfu as kungfu

SCRIPT = Path(kungfu.__file__).resolve()
ROOT = SCRIPT.parent


def run(*flags, cwd, check=True, timeout=300):
    return run_script(SCRIPT, *flags, cwd=cwd, check=check, timeout=timeout)


@pytest.mark.parametrize("env_id, n_actions", [("ALE/KungFuMaster-v5", 14), ("ALE/Pong-v5", 6),
                                               ("ALE/Breakout-v5", 4)])
def test_protocol_minimal_action_set_of_each_game(env_id, n_actions):
    args = kungfu.parse_args(["--train", "--env-id", env_id])
    env = kungfu.make_env(args)
    size = kungfu.SCREEN_SIZE[args.frame]
    assert env.action_space.n == n_actions and env.observation_space.shape == (4, size, size)
    env.close()
    envs = kungfu.make_vector_env(args, 2)
    assert envs.single_action_space.n == n_actions
    envs.close()
    assert kungfu.build_model(args).policy.out_features == n_actions


def test_play_env_sees_the_same_pixels_as_the_training_env(monkeypatch):
    # Sticky actions draw from each env's own random stream; switch them off to compare pixels.
    monkeypatch.setattr(kungfu, "STICKY_ACTIONS", 0.0)
    args = kungfu.parse_args(["--train"])
    single, vector = kungfu.make_env(args), kungfu.make_vector_env(args, 1)
    obs_single, _ = single.reset(seed=5)
    obs_vector, _ = vector.reset(seed=5)
    np.testing.assert_array_equal(obs_single, obs_vector[0])
    rng = np.random.default_rng(0)
    for _ in range(300):
        action = int(rng.integers(14))
        obs_single, reward_single, *_ = single.step(action)
        obs_vector, reward_vector, *_ = vector.step(np.array([action]))
        np.testing.assert_array_equal(obs_single, obs_vector[0])
        assert reward_single == reward_vector[0]


class ScriptedGames:
    """A stand-in for the vector env: game 0 scores 100 then 200 and loses a life; game 1 ends."""
    num_envs = 2

    def reset(self, seed):
        self.t = 0
        return np.zeros((2, 4, 42, 42), np.uint8), {"lives": np.array([4, 4])}

    def step(self, actions):
        self.t += 1
        rewards = {1: [100.0, 0.0], 2: [200.0, 500.0]}.get(self.t, [0.0, 0.0])
        lives = np.array([3 if self.t >= 2 else 4, 4])
        terminated = np.array([False, self.t == 2])
        obs = np.full((2, 4, 42, 42), self.t, np.uint8)
        return obs, np.array(rewards), terminated, np.array([False, False]), {"lives": lives, "final_obs": obs + 100}


def test_training_sees_clipped_rewards_and_life_loss_but_scores_stay_raw():
    args = kungfu.parse_args(["--train", "--rollout-len", "3", "--frame", "area42"])
    rollouts = kungfu.Rollouts(ScriptedGames(), seed=0)
    rollout, finished = rollouts.collect(kungfu.build_model(args), args)
    np.testing.assert_array_equal(rollout["rewards"], [[1, 0], [1, 1], [0, 0]])  # sign(r)
    np.testing.assert_array_equal(rollout["terminated"], [[0, 0], [1, 1], [0, 0]])  # life lost / game over
    assert rollout["next_obs"][1, 1, 0, 0, 0] == 102  # the ended game's final frame, not the reset one
    assert finished == [500.0]  # the raw score of the finished game
    assert rollouts.scores[0] == 300.0  # game 0 goes on, raw score kept across the lost life


def test_lstm_acting_and_loss_see_the_same_states():
    args = kungfu.parse_args(["--train", "--core", "lstm", "--hidden", "32", "--rollout-len", "4"])
    rollouts = kungfu.Rollouts(kungfu.make_vector_env(args, 2), seed=0)
    model = kungfu.build_model(args)
    rollouts.collect(model, args)
    rollouts.starts[1] = 1.0  # as if game 1 began anew: its state must be reset, game 0's carried
    rollout, _ = rollouts.collect(model, args)
    state0 = rollout["state0"]
    assert state0.abs().sum() > 0 and not state0.requires_grad  # memory of the first rollout, no gradient
    features = model.encode(torch.as_tensor(rollout["obs"]).flatten(0, 1)).view(4, 2, -1)
    _, states = model.unroll(features, state0, rollout["starts"])
    torch.testing.assert_close(states[-1], rollouts.state)  # the loss replays exactly what acting saw
    _, fresh = model.unroll(features[:1], torch.zeros_like(state0), rollout["starts"][:1])
    torch.testing.assert_close(states[0, 1], fresh[0, 1])  # game 1 started from a zero state
    assert not torch.allclose(states[0, 0], fresh[0, 0])  # game 0 did not
    loss, _ = kungfu.a3c_loss(model, **rollout, args=args)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.core.parameters())


@pytest.mark.parametrize("mode, core, game, frame", [("processes", "ff", "ALE/KungFuMaster-v5", "area42"),
                                                     ("batch", "lstm", "ALE/Breakout-v5", "pool84")])
def test_both_modes_train_evaluate_and_play_any_game(mode, core, game, frame, tmp_path):
    checkpoint = train_evaluate_play(SCRIPT, mode, tmp_path, "--max-steps", 200, "--eval-every", 100,
                                     "--eval-episodes", 1, "--envs-per-worker", 2, "--num-envs", 4,
                                     "--rollout-len", 5, "--core", core, "--frame", frame, common=("--env-id", game))
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["env_id"] == game and saved["args"]["frame"] == frame  # --eval and --play took it from there
    assert (tmp_path / "play_input.gif").stat().st_size > 0  # what the network sees, beside the game


def test_84x84_frames_are_max_pooled_as_they_arrive_and_old_checkpoints_keep_their_network(tmp_path):
    args = kungfu.parse_args(["--train", "--env-id", "ALE/Breakout-v5", "--frame", "pool84", "--rollout-len", "2"])
    envs = kungfu.make_vector_env(args, 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and kungfu.pool(obs).shape == (2, 4, 42, 42)
    rollout, _ = kungfu.Rollouts(envs, seed=0).collect(kungfu.build_model(args), args)
    envs.close()
    assert rollout["obs"].shape[-2:] == rollout["next_obs"].shape[-2:] == (42, 42)  # the rollout holds 42x42
    frames = np.random.default_rng(0).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)  # the bytes of a 2x2 max-pool
    assert torch.equal(torch.as_tensor(kungfu.pool(frames)), torch.nn.functional.max_pool2d(torch.as_tensor(frames), 2))
    bright = np.zeros((1, 4, 84, 84), np.uint8)
    bright[..., 61, 33] = 200  # one bright pixel, as a ball: max-pooling keeps it, averaging would dim it
    assert kungfu.pool(bright).max() == 200
    area = np.ones((1, 4, 42, 42), np.uint8)
    assert kungfu.pool(area) is area  # --frame area42: ale-py's 42x42 frames as they come
    made = kungfu.parse_args(["--train", "--frame", "area42", "--padding", "0", "--channels", "16"])  # the first net
    saved = {k: str(v) if isinstance(v, Path) else v for k, v in vars(made).items()
             if k not in ("frame", "padding", "channels")}
    old = tmp_path / "old.pt"
    torch.save({"env_id": made.env_id, "model": kungfu.build_model(made).state_dict(), "args": saved}, old)
    model, checkpoint = kungfu.load(old, "ALE/KungFuMaster-v5")
    assert [checkpoint["args"][k] for k in ("frame", "padding", "channels")] == ["area42", 0, 16]
    assert model.body[0].out_channels == 16


def test_test_time_actions_are_seeded_and_greedy_takes_the_most_likely():
    args = kungfu.parse_args(["--eval"])
    assert not args.greedy  # sampling is the default for Atari: an argmax policy can lock into a loop
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    draws = kungfu.test_actions(probs.log().repeat(20000, 1), args, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, probs, atol=0.01)
    again = kungfu.test_actions(probs.log().repeat(20000, 1), args, np.random.default_rng(0))
    np.testing.assert_array_equal(draws, again)
    args.greedy = True
    assert (kungfu.test_actions(probs.log().repeat(3, 1), args, None) == 3).all()


def test_run_folders_follow_the_game_and_a_checkpoint_plays_only_its_own_game(tmp_path):
    run("--train", "--env-id", "ALE/Pong-v5", "--mode", "batch", "--num-envs", 2, "--rollout-len", 5,
        "--max-steps", 20, "--eval-every", 10, "--eval-episodes", 1, cwd=tmp_path)
    (checkpoint,) = tmp_path.glob("runs/pong_batch_*/model.pt")
    out = run("--eval", "--env-id", "ALE/Pong-v5", "--episodes", 1, cwd=tmp_path).stdout  # the newest Pong run
    assert f"loaded {checkpoint.resolve()}" in out
    line = one_line_error(run("--eval", "--checkpoint", checkpoint, cwd=tmp_path, check=False))
    assert "ALE/Pong-v5" in line and "ALE/KungFuMaster-v5" in line


def test_bad_input(tmp_path):
    missing = run("--eval", "--checkpoint", tmp_path / "x.pt", cwd=tmp_path, check=False)
    assert "no checkpoint" in one_line_error(missing)
    cartpole = ROOT / "pretrained" / "cartpole.pt"
    assert "CartPole-v1" in one_line_error(run("--play", "--checkpoint", cartpole, cwd=tmp_path, check=False))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(cartpole.read_bytes()[:1000])
    assert "cannot read" in one_line_error(run("--eval", "--checkpoint", corrupt, cwd=tmp_path, check=False))
    one_line_error(run("--train", "--envs-per-worker", "0", cwd=tmp_path, check=False))
    one_line_error(run("--train", "--mode", "threads", cwd=tmp_path, check=False))
    for env_id in ("ALE/NoSuchGame-v5", "PongNoFrameskip-v4", "ALE/Pong-v4"):
        assert "ALE v5 game" in one_line_error(run("--train", "--env-id", env_id, cwd=tmp_path, check=False))


@pytest.mark.parametrize("padding, reaches", [(0, False), (1, True)])
def test_the_last_rows_and_columns_reach_the_network_only_with_padding(padding, reaches):
    torch.manual_seed(0)
    model = kungfu.build_model(kungfu.parse_args(["--train", "--padding", str(padding)]))
    frames = (torch.rand(8, 4, 42, 42) * 255).requires_grad_()
    model.body(frames / 255).sum().backward()
    seen = frames.grad.abs().sum((0, 1)) > 0  # which input pixels change the features
    assert seen[:39, :39].all() and bool(seen[39:].any()) == reaches and bool(seen[:, 39:].any()) == reaches
