"""a3c_cartpole.py: the gradient hand-off, the shared optimizer, every mode end to end, learning,
Ctrl-C and bad input. The scripts run through subprocess, as a user runs them."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_losses_logged, one_line_error, run_script

import a3c_cartpole as a3c

SCRIPT = Path(a3c.__file__).resolve()


def run(*flags, cwd, check=True, timeout=300):
    return run_script(SCRIPT, *flags, cwd=cwd, check=check, timeout=timeout)


def tiny_model():
    return a3c.ActorCritic(4, 2, hidden=8)


# --------------------------------------------------------------------------- the A3C mechanics
def test_hand_over_gives_the_shared_model_the_latest_local_gradient():
    torch.manual_seed(0)
    shared, local = tiny_model(), tiny_model()
    obs = torch.randn(5, 4)
    grads = []
    for scale in (1.0, 3.0):  # two updates whose gradients differ
        local.zero_grad()
        logits, values = local(obs)
        (scale * (logits.sum() + values.pow(2).sum())).backward()
        a3c.hand_over_gradients(local, shared)
        grads.append([p.grad.clone() for p in local.parameters()])
    for shared_p, first, latest in zip(shared.parameters(), *grads):
        torch.testing.assert_close(shared_p.grad, latest)  # not the first, not first + latest
        assert not torch.allclose(shared_p.grad, first + latest)


def test_shared_adam_matches_torch_adam_and_keeps_its_state_in_shared_memory():
    torch.manual_seed(0)
    mine, reference = tiny_model(), tiny_model()
    reference.load_state_dict(mine.state_dict())
    ours = a3c.SharedAdam(mine.parameters())
    theirs = torch.optim.Adam(reference.parameters(), lr=1e-2)
    obs = torch.randn(6, 4)
    for _ in range(5):
        for model, opt in ((mine, ours), (reference, theirs)):
            model.zero_grad()
            logits, values = model(obs)
            (logits.pow(2).sum() + values.sum()).backward()
            opt.step(1e-2) if opt is ours else opt.step()
    for p, q in zip(mine.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert ours.t.is_shared() and all(t.is_shared() for t in ours.m + ours.v)
    assert int(ours.t) == 5


def test_a3c_loss_bootstraps_a_truncation_but_not_a_termination():
    model = tiny_model()
    args = a3c.parse_args(["--train", "--entropy-coef", "0", "--value-coef", "1"])
    obs = np.zeros((1, 4), np.float32)
    next_obs = np.ones((1, 4), np.float32)
    common = dict(obs=obs, actions=np.array([0]), rewards=np.array([1.0], np.float32), next_obs=next_obs)
    with torch.no_grad():
        v, v_next = model.critic(torch.as_tensor(obs)).item(), model.critic(torch.as_tensor(next_obs)).item()
        log_p = torch.log_softmax(model.actor(torch.as_tensor(obs)), -1)[0, 0].item()
        for terminated, truncated, bootstrap in ((1.0, 0.0, 0.0), (0.0, 1.0, v_next)):
            target = 1.0 + args.gamma * bootstrap
            loss, _ = a3c.a3c_loss(model, **common, terminated=np.array([terminated], np.float32),
                                   truncated=np.array([truncated], np.float32), args=args)
            want = -log_p * (target - v) + (target - v) ** 2
            assert loss.item() == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("mode", ["processes", "threads", "batch", "ga3c"])
def test_every_mode_trains_evaluates_and_plays(mode, tmp_path):
    checkpoint = tmp_path / "run" / "model.pt"
    run("--train", "--mode", mode, "--max-steps", 400, "--eval-every", 200, "--eval-episodes", 2,
        "--num-envs", 4, "--checkpoint", checkpoint, cwd=tmp_path)
    for name in ("model.pt", "model.csv", "model.png"):  # the best weights and the run's history: no resume point
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    assert not list((tmp_path / "run").glob("*_last.pt"))
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["env_id"] == "CartPole-v1" and saved["args"]["mode"] == mode
    assert_losses_logged(tmp_path / "run" / "model.csv")

    out = run("--eval", "--episodes", 3, "--seed", 7, "--checkpoint", checkpoint, cwd=tmp_path).stdout
    assert sum(line.startswith("episode") for line in out.splitlines()) == 3
    assert out.splitlines()[-1].startswith("mean")

    video = tmp_path / "play.gif"
    out = run("--play", "--checkpoint", checkpoint, "--video", video, cwd=tmp_path).stdout
    assert video.stat().st_size > 0 and str(video) in out


def test_play_and_eval_default_to_the_newest_validated_run(tmp_path):
    run("--train", "--mode", "batch", "--max-steps", 200, "--eval-every", 100, "--eval-episodes", 1,
        cwd=tmp_path)
    validated = max(tmp_path.glob("runs/*/model.pt"), key=lambda p: p.stat().st_mtime)
    assert f"loaded {validated.resolve()}" in run("--eval", "--episodes", 1, cwd=tmp_path).stdout
    time.sleep(1.1)  # a newer run folder, stopped before its first validation: it has no weights
    out = run("--train", "--mode", "batch", "--max-steps", 200, "--eval-every", 1000, cwd=tmp_path).stdout
    assert "no validation yet" in out and len(list(tmp_path.glob("runs/*/model.csv"))) == 2
    assert f"loaded {validated.resolve()}" in run("--eval", "--episodes", 1, cwd=tmp_path).stdout


def test_play_matches_eval_on_a_seed_and_writes_one_gif_per_checkpoint(tmp_path):
    shipped = a3c.PRETRAINED / "cartpole.pt"
    played = run("--play", "--no-greedy", "--seed", 77, "--checkpoint", shipped, cwd=tmp_path).stdout
    evaluated = run("--eval", "--no-greedy", "--seed", 77, "--episodes", 1, "--checkpoint", shipped,
                    cwd=tmp_path).stdout
    assert played.splitlines()[1].split()[-1] == evaluated.splitlines()[1].split()[-1]  # the same return
    assert (tmp_path / "runs" / "videos" / "pretrained_cartpole.gif").exists()
    assert not list(a3c.PRETRAINED.glob("*.gif")), "nothing is written into pretrained/"


def test_training_prints_each_validation_and_writes_the_run_history(tmp_path):
    out = run("--train", "--mode", "batch", "--max-steps", 400, "--eval-every", 200, "--eval-episodes", 1,
              "--checkpoint", tmp_path / "model.pt", cwd=tmp_path).stdout
    validations = [line for line in out.splitlines() if line.startswith("step")]
    assert len(validations) == 2 and all(": validation" in line and "training episodes" in line for line in validations)
    assert_losses_logged(tmp_path / "model.csv")


def test_shipped_pretrained_checkpoint_balances_the_pole(tmp_path):
    out = run("--eval", "--episodes", 20, "--seed", 12345, cwd=tmp_path).stdout  # no runs/: pretrained
    assert "pretrained" in out.splitlines()[0]
    assert float(out.splitlines()[-1].split()[1]) >= 475


def test_return_rises_within_a_step_budget(tmp_path):
    # batch mode is single-process, so with a fixed seed this run is the same every time
    checkpoint = tmp_path / "model.pt"
    run("--train", "--mode", "batch", "--seed", 1, "--max-steps", 60_000, "--checkpoint", checkpoint,
        cwd=tmp_path)
    args = a3c.parse_args(["--train"])
    untrained = a3c.build_model(args)
    before = np.mean(a3c.evaluate(untrained, args, 20, seed=500))
    trained, _ = a3c.load(checkpoint, a3c.ENV_ID)
    after = np.mean(a3c.evaluate(trained, args, 20, seed=500))
    assert before < 100 and after >= 400, (before, after)


def test_batch_mode_is_reproducible_with_a_seed(tmp_path):
    weights = []
    for run_name in ("a", "b"):
        checkpoint = tmp_path / run_name / "model.pt"
        run("--train", "--mode", "batch", "--seed", 3, "--max-steps", 2000, "--eval-every", 1000,
            "--eval-episodes", 2, "--checkpoint", checkpoint, cwd=tmp_path)
        weights.append(torch.load(checkpoint, weights_only=True)["model"])
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0)


def test_processes_mode_learns(tmp_path):
    # Hogwild runs are not reproducible, so the bar is lower than the benchmark's 475
    checkpoint = tmp_path / "model.pt"
    run("--train", "--max-steps", 100_000, "--checkpoint", checkpoint, cwd=tmp_path)
    assert torch.load(checkpoint, weights_only=True)["best_eval"] >= 300


def test_ctrl_c_stops_every_worker_and_keeps_the_history(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--train", "--solve-score", "1e9",
                             "--checkpoint", str(tmp_path / "model.pt")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as `cmd &` in a shell script starts it: SIGINT ignored, which the trainer
                            # must undo (CI once ran from such a shell, and this test hung)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 60
    children = []
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.5)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2, "the two workers never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted" in stdout
    assert len((tmp_path / "model.csv").read_text().splitlines()) > 1  # the history up to Ctrl-C
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the Ctrl-C"


# --------------------------------------------------------------------------- bad input
def test_missing_checkpoint(tmp_path):
    line = one_line_error(run("--eval", "--checkpoint", tmp_path / "nope.pt", cwd=tmp_path, check=False))
    assert "no checkpoint" in line


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + bytes(100)])
def test_corrupt_checkpoint(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    line = one_line_error(run("--play", "--checkpoint", bad, cwd=tmp_path, check=False))
    assert "cannot read" in line


def test_truncated_checkpoint(tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes((a3c.PRETRAINED / "cartpole.pt").read_bytes()[:2000])
    assert "cannot read" in one_line_error(run("--eval", "--checkpoint", bad, cwd=tmp_path, check=False))


def test_checkpoint_of_another_env_or_architecture(tmp_path):
    saved = torch.load(a3c.PRETRAINED / "cartpole.pt", weights_only=True)
    other_env = tmp_path / "other_env.pt"
    torch.save({**saved, "env_id": "ALE/KungFuMaster-v5"}, other_env)
    assert "KungFuMaster" in one_line_error(run("--eval", "--checkpoint", other_env, cwd=tmp_path, check=False))

    wrong_shape = tmp_path / "wrong_shape.pt"
    model = {k: torch.zeros(3, *v.shape[1:]) if v.dim() else v for k, v in saved["model"].items()}
    torch.save({**saved, "model": model}, wrong_shape)
    line = one_line_error(run("--eval", "--checkpoint", wrong_shape, cwd=tmp_path, check=False))
    assert "architecture" in line

    not_ours = tmp_path / "weights_only.pt"
    torch.save(saved["model"], not_ours)
    assert "not a checkpoint" in one_line_error(run("--eval", "--checkpoint", not_ours, cwd=tmp_path, check=False))


@pytest.mark.parametrize("flags", [
    ["--train", "--workers", "0"], ["--train", "--mode", "hogwild"], ["--train", "--lr", "-1"],
    ["--train", "--gamma", "1.5"], ["--eval", "--episodes", "0"], ["--play", "--resume"], ["--train", "--play"], [],
])
def test_invalid_flags(tmp_path, flags):
    one_line_error(run(*flags, cwd=tmp_path, check=False))


def test_a_misspelt_flag_is_named(tmp_path):
    assert "unrecognized arguments: --trian" in one_line_error(run("--trian", cwd=tmp_path, check=False))
