"""a3c_carracing.py: what it skips drawing changes nothing the agent sees, what training sees,
the recurrent loss, both modes end to end, bad input."""
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, run_script, train_evaluate_play

import a3c_carracing as carracing

SCRIPT = Path(carracing.__file__).resolve()


def run(*flags, cwd, check=True, timeout=300):
    return run_script(SCRIPT, *flags, cwd=cwd, check=check, timeout=timeout)


def drive_both(args, seed: int, repeat: int, make_policy) -> dict:
    """Step the fast env and the stock env side by side for a whole episode, the actions chosen by
    make_policy(fast env) from the fast env's state; assert that every observation, reward and
    episode end is the same. What happened, for the caller."""
    fast, stock = carracing.make_env(args), carracing.make_env(args, fast=False)
    assert not isinstance(stock.unwrapped, carracing.FastCarRacing)
    obs_fast, _ = fast.reset(seed=seed)
    obs_stock, _ = stock.reset(seed=seed)
    np.testing.assert_array_equal(obs_fast, obs_stock)
    policy = make_policy(fast)
    seen = {"steps": 0, "tiles": 0, "off_track_steps": 0, "ended": None}
    for step in range(1000):
        action = policy(step, repeat)
        *fast_out, _ = fast.step(action)
        *stock_out, _ = stock.step(action)
        np.testing.assert_array_equal(fast_out[0], stock_out[0], err_msg=f"step {step}")
        assert fast_out[1:] == stock_out[1:], step  # reward, terminated, truncated
        seen["steps"] += 1
        seen["off_track_steps"] += all(len(wheel.tiles) == 0 for wheel in fast.unwrapped.car.wheels)
        seen["tiles"] = fast.unwrapped.tile_visited_count
        if fast_out[2] or fast_out[3]:
            seen["ended"] = "terminated" if fast_out[2] else "truncated"
            break
    fast.close()
    stock.close()
    return seen




def pursuit(env, turn=(1, 2), gas=3, wrong_way=False, straight_frames=(300, 400)):
    """A crude driver that steers towards the track point 6 tiles ahead, for the equality tests:
    it covers many tiles (each changes colour when touched), and between straight_frames it holds
    the gas without steering, off the road onto the grass. wrong_way steers away from the track,
    until the car leaves the playfield (-100, the episode ends)."""
    def action(step, repeat):
        u = env.unwrapped
        if straight_frames[0] <= step * repeat < straight_frames[1]:
            return gas
        x, y = u.car.hull.position
        points = np.array([(t[2], t[3]) for t in u.track])
        target = points[(np.argmin(((points - (x, y)) ** 2).sum(1)) + 6) % len(points)]
        error = math.atan2(target[1] - y, target[0] - x) - (u.car.hull.angle + math.pi / 2)
        error = (error + math.pi) % (2 * math.pi) - math.pi
        if abs(error) < 0.4:
            return gas
        return turn[0] if (error > 0) == wrong_way else turn[1]
    return action


@pytest.mark.parametrize("repeat, seed, wrong_way", [(1, 11, False), (4, 12, False), (4, 13, True)])
def test_fast_env_gives_the_stock_envs_pixels_rewards_and_ends_over_whole_episodes(repeat, seed, wrong_way):
    args = carracing.parse_args(["--train", "--actions", "discrete", "--action-repeat", str(repeat)])
    seen = drive_both(args, seed, repeat, lambda env: pursuit(env, wrong_way=wrong_way))
    assert seen["off_track_steps"] >= 20, seen
    if wrong_way:
        assert seen["ended"] == "terminated", seen  # over the playfield's edge
    else:
        assert seen["ended"] == "truncated" and seen["tiles"] >= 100, seen  # 1000 frames, most of a lap


def test_fast_env_with_continuous_controls_gives_the_stock_envs_pixels():
    args = carracing.parse_args(["--train", "--actions", "continuous"])
    steer = {1: [0.2, 0.6], 2: [0.8, 0.6], 3: [0.5, 0.8]}  # [steer, pedal] for pursuit's left, right, gas
    def policy(env):
        move = pursuit(env)
        return lambda step, repeat: np.array(steer[move(step, repeat)], np.float32)
    seen = drive_both(args, 14, 4, policy)
    assert seen["ended"] is not None and seen["tiles"] >= 10 and seen["off_track_steps"] >= 20, seen


def test_the_stock_methods_fast_car_racing_overrides_keep_their_signatures():
    # FastCarRacing overrides private methods of gymnasium's CarRacing, checked against 1.4.0
    import gymnasium
    from gymnasium.envs.box2d.car_racing import CarRacing

    assert gymnasium.__version__ == "1.4.0", "re-check FastCarRacing against this gymnasium"
    signatures = {name: str(inspect.signature(getattr(CarRacing, name)))
                  for name in ("_render", "_render_road", "_draw_colored_polygon", "_render_indicators",
                               "_create_image_array", "reset")}
    assert signatures == {
        "_render": "(self, mode: str)",
        "_render_road": "(self, zoom, translation, angle)",
        "_draw_colored_polygon": "(self, surface, poly, color, zoom, translation, angle, clip=True)",
        "_render_indicators": "(self, W, H)",
        "_create_image_array": "(self, screen, size)",
        "reset": "(self, *, seed: int | None = None, options: dict | None = None)",
    }


def test_an_episode_ending_between_drawn_frames_shows_its_last_frame():
    args = carracing.parse_args(["--train", "--actions", "discrete", "--action-repeat", "3"])
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


def test_training_cuts_hopeless_episodes_and_scales_rewards_evaluation_does_not():
    args = carracing.parse_args(["--train", "--actions", "discrete", "--patience", "5", "--rollout-len", "8"])
    rollouts = carracing.Rollouts(carracing.make_vector_env(args, 1, training=True), seed=0)
    model = carracing.build_model(args)
    with torch.no_grad():
        model.policy.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0]))  # always "nothing": the car stands still
    rollout, finished = rollouts.collect(model, args)
    # the first step reaches the start tiles (raw reward > 1); after it every step costs -0.4 raw
    # (4 frames), and the 5th negative step in a row cuts the episode, as a truncation
    np.testing.assert_array_equal(rollout["truncated"][:, 0], [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(rollout["terminated"][:, 0], 0)
    np.testing.assert_array_equal(rollout["starts"][:, 0], [1, 0, 0, 0, 0, 0, 1, 0])
    assert rollout["rewards"][0, 0] > 0.1 and rollout["rewards"][1, 0] == pytest.approx(-0.04)  # raw * 0.1
    assert finished == [pytest.approx(raw_return_standing_still(args, training=True))]  # raw
    full = raw_return_standing_still(args, training=False)  # no cut: all 1000 frames
    assert full < finished[0] - 90
    assert carracing.evaluate(model, args, 1, seed=0) == [pytest.approx(full)]


def test_recurrent_loss_backpropagates_through_the_rollout():
    args = carracing.parse_args(["--train", "--rollout-len", "4"])
    envs = carracing.make_vector_env(args, 2, training=True)
    rollouts = carracing.Rollouts(envs, seed=0)
    model = carracing.build_model(args)
    rollout, _ = rollouts.collect(model, args)
    rollout, _ = rollouts.collect(model, args)  # state0 now carries the first rollout's memory
    assert rollout["state0"].abs().sum() > 0 and not rollout["state0"].requires_grad
    loss, _ = carracing.a3c_loss(model, **rollout, args=args)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.core.parameters())


def test_continuous_log_probability_and_entropy_are_the_beta_policys():
    params = torch.randn(5, 4)
    actions = torch.as_tensor(carracing.act(params, carracing.parse_args(["--train", "--actions", "continuous"])))
    assert actions.shape == (5, 2) and actions.dtype == torch.float32 and ((actions > 0) & (actions < 1)).all()
    log_probs, entropies = carracing.log_prob_and_entropy(params, actions, continuous=True)
    alpha, beta = 1 + torch.nn.functional.softplus(params[:, :2]), 1 + torch.nn.functional.softplus(params[:, 2:])
    by_control = [torch.distributions.Beta(alpha[:, i], beta[:, i]) for i in range(2)]  # steer, pedal
    torch.testing.assert_close(log_probs, sum(d.log_prob(actions[:, i]) for i, d in enumerate(by_control)))
    torch.testing.assert_close(entropies, sum(d.entropy() for d in by_control))
    a, b, x = alpha[0, 0].item(), beta[0, 0].item(), actions[0, 0].item()  # the Beta density, written out
    log_beta_function = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_density = (a - 1) * math.log(x) + (b - 1) * math.log(1 - x) - log_beta_function
    assert by_control[0].log_prob(actions[:, 0])[0].item() == pytest.approx(log_density, rel=1e-4)


def test_continuous_actions_reach_the_env_as_steer_gas_brake():
    args = carracing.parse_args(["--train", "--actions", "continuous"])
    env = carracing.make_env(args)
    assert env.action_space.shape == (2,) and env.action_space.low.min() == 0 and env.action_space.high.max() == 1
    wrapper = env
    while not isinstance(wrapper, carracing.SteerAndPedal):
        wrapper = wrapper.env
    assert wrapper.env.action_space.low.tolist() == [-1, 0, 0]  # the stock env's [steer, gas, brake] underneath
    for policy, stock in [([0.0, 1.0], [-1, 1, 0]), ([1.0, 0.0], [1, 0, 1]), ([0.5, 0.75], [0, 0.5, 0]),
                          ([0.25, 0.25], [-0.5, 0, 0.5]), ([0.5, 0.5], [0, 0, 0])]:
        np.testing.assert_allclose(wrapper.action(np.array(policy, np.float32)), stock)
    model = carracing.build_model(args)
    with torch.no_grad():  # a policy whose mean is [0.5, 1]: straight ahead, full gas
        model.policy.weight.zero_()
        model.policy.bias.copy_(torch.tensor([0.0, 50.0, 0.0, -50.0]))
        logits, _, _ = model.step(torch.zeros(1, 4, 64, 64, dtype=torch.uint8), model.initial_state(1))
    args.greedy = True
    action = carracing.test_actions(logits, args, np.random.default_rng(0))[0]
    np.testing.assert_allclose(action, [0.5, 1.0], atol=0.03)  # --greedy takes the Beta's mean
    env.reset(seed=0)
    for _ in range(50):
        env.step(action)
    assert env.unwrapped.car.hull.linearVelocity.length > 20  # full gas reached the car
    assert abs(env.unwrapped.car.wheels[0].joint.angle) < 0.01  # and no steering


def test_test_time_actions_are_drawn_from_the_policy_and_repeat_on_the_same_tracks(tmp_path):
    args = carracing.parse_args(["--eval", "--actions", "continuous"])
    assert not args.greedy  # sampling is the default: it drives better (benchmarks/carracing_results.md)
    params = torch.tensor([[0.0, 2.0, 0.0, -1.0]]).repeat(20000, 1)  # Beta(1.69, 1.69) and Beta(3.13, 1.31)
    draws = carracing.test_actions(params, args, np.random.default_rng(0))
    policy = carracing.beta_policy(params[:1])
    assert draws.shape == (20000, 2) and draws.dtype == np.float32 and 0 <= draws.min() and draws.max() <= 1
    np.testing.assert_allclose(draws.mean(0), policy.mean[0], atol=0.01)
    np.testing.assert_allclose(draws.var(0), policy.variance[0], rtol=0.05)
    np.testing.assert_array_equal(draws, carracing.test_actions(params, args, np.random.default_rng(0)))
    args.actions = "discrete"
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    counts = np.bincount(carracing.test_actions(probs.log().repeat(20000, 1), args, np.random.default_rng(0)),
                         minlength=5)
    np.testing.assert_allclose(counts / 20000, probs, atol=0.01)
    args.greedy = True
    assert (carracing.test_actions(probs.log().repeat(3, 1), args, None) == 3).all()
    args = carracing.parse_args(["--eval", "--actions", "continuous", "--action-repeat", "8"])
    model = carracing.build_model(args)
    first, again = (carracing.evaluate(model, args, 2, seed=7) for _ in range(2))
    assert first == again  # the generator is seeded by the first track
    alone = carracing.evaluate(model, args, 1, seed=7)[0]
    played = carracing.drive(model, args, 7, video=tmp_path / "drive.gif")
    assert played == pytest.approx(alone)  # --play's episode is --eval --episodes 1's
    assert (tmp_path / "drive.gif").exists() and (tmp_path / "drive_input.gif").exists()


def test_continuous_acting_and_loss_see_the_same_policy():
    args = carracing.parse_args(["--train", "--actions", "continuous", "--rollout-len", "3"])
    rollouts = carracing.Rollouts(carracing.make_vector_env(args, 2, training=True), seed=0)
    model = carracing.build_model(args)
    rollouts.collect(model, args)  # the next rollout starts from a carried state
    seen, step = [], model.step
    model.step = lambda obs, state: seen.append(step(obs, state)) or seen[-1]
    rollout, _ = rollouts.collect(model, args)
    assert rollout["actions"].shape == (3, 2, 2) and rollout["actions"].dtype == np.float32
    features = model.encode(torch.as_tensor(rollout["obs"]).flatten(0, 1)).view(3, 2, -1)
    outputs, _ = model.unroll(features, rollout["state0"], rollout["starts"])
    params, _ = model.heads(outputs)
    torch.testing.assert_close(params, torch.stack([logits for logits, _, _ in seen]))  # the loss's pi is acting's
    loss, terms = carracing.a3c_loss(model, **rollout, args=args)
    loss.backward()
    assert all(math.isfinite(t) for t in terms) and model.policy.weight.grad.abs().sum() > 0


def test_the_entropy_bonus_falls_to_zero_at_max_steps():
    args = carracing.parse_args(["--train", "--actions", "continuous", "--rollout-len", "3", "--max-steps", "1000"])
    model = carracing.build_model(args)
    rollout, _ = carracing.Rollouts(carracing.make_vector_env(args, 2, training=True), seed=0).collect(model, args)
    assert [carracing.schedule(args.entropy_schedule, s, 1000) for s in (0, 500, 1000, 2000)] == [1, 0.5, 0, 0]
    start, (_, _, entropy, _) = carracing.a3c_loss(model, **rollout, args=args, steps=0)
    end, _ = carracing.a3c_loss(model, **rollout, args=args, steps=1000)
    assert start.item() == pytest.approx(end.item() - 0.01 * entropy, abs=1e-5)  # only the bonus differs
    args.entropy_schedule = "constant"
    constant, _ = carracing.a3c_loss(model, **rollout, args=args, steps=1000)
    assert constant.item() == pytest.approx(start.item(), abs=1e-5)


@pytest.mark.parametrize("mode, actions", [("processes", "discrete"), ("batch", "continuous")])
def test_both_modes_train_evaluate_and_play(mode, actions, tmp_path):
    checkpoint = train_evaluate_play(SCRIPT, mode, tmp_path, "--actions", actions, "--max-steps", 40,
                                     "--eval-every", 20, "--eval-episodes", 1, "--envs-per-worker", 1,
                                     "--num-envs", 2, "--rollout-len", 5, entropy_positive=actions != "continuous")
    assert list((tmp_path / "run" / "model_videos").glob("step_*.gif")), "a video of each evaluation"
    assert torch.load(checkpoint, weights_only=True)["args"]["actions"] == actions  # eval and play took it from there


def test_bad_input(tmp_path):
    missing = run("--eval", "--checkpoint", tmp_path / "x.pt", cwd=tmp_path, check=False)
    assert "no checkpoint" in one_line_error(missing)
    cartpole = SCRIPT.parent / "pretrained" / "cartpole.pt"
    assert "CartPole-v1" in one_line_error(run("--play", "--checkpoint", cartpole, cwd=tmp_path, check=False))
    one_line_error(run("--train", "--action-repeat", "0", cwd=tmp_path, check=False))
    one_line_error(run("--train", "--actions", "joystick", cwd=tmp_path, check=False))


def test_a_closed_window_does_not_break_the_next_env(monkeypatch):
    # closing a "human" env quits pygame, fonts included: --play drives one env per episode
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    args = carracing.parse_args(["--eval", "--actions", "discrete"])
    for render_mode in ("human", None):
        env = carracing.make_env(args, render_mode=render_mode)
        env.reset(seed=3)
        obs, *_ = env.step(3)
        env.close()
    assert obs.shape == (4, 64, 64)
