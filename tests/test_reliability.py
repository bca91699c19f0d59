"""Runs a learner can trust, in all three scripts: --resume keeps a run's hyperparameters and
never touches the shipped checkpoints, signals and dead workers stop training cleanly, training,
validation and test seeds never meet, saves reach the disk, and the flags say what they do.
Signals and dead workers are tested on real processes."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import one_line_error, run_script

import a3c_carracing
import a3c_cartpole
import a3c_kungfu

SCRIPTS = {"cartpole": a3c_cartpole, "kungfu": a3c_kungfu, "carracing": a3c_carracing}
ROOT = Path(a3c_cartpole.__file__).resolve().parent


def script(name: str) -> Path:
    return Path(SCRIPTS[name].__file__).resolve()


def save_run(module, folder: Path, *train_flags) -> Path:
    """A run folder as `--train *train_flags` leaves it (model.pt and model_last.pt), without training."""
    args = module.parse_args(["--train", *train_flags])
    model = module.build_model(args)
    run = SimpleNamespace(args=args, steps=1000, episodes=3, seconds=5.0, best_eval=1.0)
    module.save_checkpoint(folder / "model.pt", model, None, run)
    module.save_checkpoint(folder / "model_last.pt", model, module.SharedAdam(model.parameters()), run)
    return folder / "model.pt"


# --------------------------------------------------------------------------- 1. --resume keeps the run's settings
@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_restores_the_saved_hyperparameters_and_typed_flags_win(name, tmp_path):
    module = SCRIPTS[name]
    run = save_run(module, tmp_path, "--lr", "0.0123", "--rollout-len", "7", "--hidden", "32")
    resumed = module.parse_args(["--train", "--resume", "--checkpoint", str(run)])
    assert (resumed.lr, resumed.rollout_len, resumed.hidden) == (0.0123, 7, 32)
    typed = module.parse_args(["--train", "--resume", "--checkpoint", str(run), "--lr", "0.5"])
    assert (typed.lr, typed.rollout_len, typed.hidden) == (0.5, 7, 32)
    same = module.parse_args(["--train", "--resume", "--checkpoint", str(run), "--hidden", "32"])
    assert same.hidden == 32  # typing the run's own value is fine


@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_refuses_a_flag_that_changes_the_network(name, tmp_path):
    run = save_run(SCRIPTS[name], tmp_path, "--hidden", "32")
    line = one_line_error(run_script(script(name), "--train", "--resume", "--checkpoint", run, "--hidden", 64,
                                     cwd=tmp_path, check=False))
    assert "--hidden 64" in line and "32" in line


def test_resume_takes_the_game_from_the_run_and_refuses_another(tmp_path):
    run = save_run(a3c_kungfu, tmp_path, "--env-id", "ALE/Pong-v5")
    assert a3c_kungfu.parse_args(["--train", "--resume", "--checkpoint", str(run)]).env_id == "ALE/Pong-v5"
    with pytest.raises(SystemExit):
        a3c_kungfu.parse_args(["--train", "--resume", "--checkpoint", str(run), "--env-id", "ALE/Breakout-v5"])


def test_resume_refuses_another_action_set_or_repeat(tmp_path):
    run = save_run(a3c_carracing, tmp_path, "--actions", "discrete")
    assert a3c_carracing.parse_args(["--train", "--resume", "--checkpoint", str(run)]).actions == "discrete"
    for flags in (["--actions", "continuous"], ["--action-repeat", "8"]):
        with pytest.raises(SystemExit):
            a3c_carracing.parse_args(["--train", "--resume", "--checkpoint", str(run), *flags])


def test_a_resumed_processes_run_keeps_its_network_and_settings(tmp_path):
    checkpoint = tmp_path / "run" / "model.pt"
    flags = ("--eval-every", 400, "--eval-episodes", 2, "--checkpoint", checkpoint)
    run_script(script("cartpole"), "--train", "--hidden", 32, "--lr", 0.0123, "--rollout-len", 7,
               "--max-steps", 400, *flags, cwd=tmp_path)
    out = run_script(script("cartpole"), "--train", "--resume", "--checkpoint", checkpoint, "--max-steps", 800,
                     cwd=tmp_path).stdout
    assert "resuming from" in out
    saved = torch.load(tmp_path / "run" / "model_last.pt", weights_only=True)["args"]
    assert (saved["hidden"], saved["lr"], saved["rollout_len"], saved["max_steps"]) == (32, 0.0123, 7, 800)


# --------------------------------------------------------------------------- 2. the shipped checkpoints stay as shipped
@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_with_nothing_to_resume_is_an_error_and_touches_no_shipped_file(name, tmp_path):
    shipped = {p: p.read_bytes() for p in (ROOT / "pretrained").glob(f"{name}*")}
    line = one_line_error(run_script(script(name), "--train", "--resume", cwd=tmp_path, check=False))
    assert "nothing to resume" in line and "--checkpoint" in line
    assert {p: p.read_bytes() for p in (ROOT / "pretrained").glob(f"{name}*")} == shipped


# --------------------------------------------------------------------------- 3. and 4. signals, dead workers
def start_training(name: str, tmp_path: Path, *flags) -> tuple[subprocess.Popen, list[int]]:
    """A --mode processes run that would go on for minutes, in its own session; and its workers' pids."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, str(script(name)), "--train", "--workers", "2", "--max-seconds", "300",
                             "--solve-score", "1e9", "--checkpoint", str(tmp_path / "model.pt"), *map(str, flags)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline, children = time.time() + 120, []
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.5)
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
    assert len(children) >= 2, "the two workers never started"
    time.sleep(3.0)  # let them train a little
    return proc, children


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.parametrize("name, sig", [("cartpole", signal.SIGTERM), ("cartpole", signal.SIGHUP),
                                       ("kungfu", signal.SIGTERM), ("carracing", signal.SIGHUP)])
def test_sigterm_and_sighup_save_and_stop_every_worker(name, sig, tmp_path):
    proc, workers = start_training(name, tmp_path)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted" in stderr + stdout
    assert "optimizer" in torch.load(tmp_path / "model_last.pt", weights_only=True)  # a resume point was saved
    assert wait_gone(workers, 5) == [], "workers outlived their parent"


@pytest.mark.parametrize("name", ["cartpole", "carracing"])
def test_workers_leave_when_their_parent_is_killed(name, tmp_path):
    proc, workers = start_training(name, tmp_path)
    proc.kill()  # SIGKILL: no handler runs, the workers are not told
    proc.communicate(timeout=30)
    assert wait_gone(workers, 10) == [], "workers outlived a killed parent"


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_killed_worker_stops_the_run_with_an_error(name, tmp_path):
    proc, workers = start_training(name, tmp_path)
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "error: training stopped" in stderr and "exit code -9" in stderr, stderr
    assert "optimizer" in torch.load(tmp_path / "model_last.pt", weights_only=True)  # a resume point was saved
    assert wait_gone(workers, 5) == []


def test_a_dead_ga3c_actor_stops_the_trainer(tmp_path):
    proc, actors = start_training("cartpole", tmp_path, "--mode", "ga3c")
    os.kill(actors[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "error: training stopped" in stderr, stderr
    assert wait_gone(actors, 5) == []


@pytest.mark.parametrize("mode", ["processes", "threads", "batch"])
def test_a_diverging_run_stops_with_the_error_and_keeps_finite_weights(mode, tmp_path):
    # lr 1e30 makes the weights explode within a few updates: the loss stops being a number
    result = run_script(script("cartpole"), "--train", "--mode", mode, "--lr", "1e30", "--max-steps", 100_000,
                        "--checkpoint", tmp_path / "model.pt", cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 1 and "error: training stopped" in result.stderr, result.stderr[-3000:]
    assert "the loss or its gradient is not finite" in result.stderr, result.stderr[-3000:]
    if mode != "batch":
        assert "Traceback" in result.stderr  # the worker's own traceback says where
    last = torch.load(tmp_path / "model_last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


# --------------------------------------------------------------------------- 5. seeds
@pytest.mark.parametrize("name", SCRIPTS)
def test_training_validation_and_test_seeds_never_meet(name):
    module = SCRIPTS[name]
    train_seeds = {module.training_seed(seed, rank, steps)
                   for seed in range(3) for rank in range(8) for steps in (0, 20_000, 5_000_000)}
    assert len(train_seeds) == 72  # every worker and every resumed run (a new step count) starts anew
    assert max(train_seeds) + 1000 <= module.VALIDATION_SEED  # + the envs of a vector: seed, seed+1, ...
    assert module.VALIDATION_SEED + 100_000 <= module.TEST_SEED  # --eval-episodes is at most 100,000
    assert module.parse_args(["--train"]).seed == 0
    assert module.parse_args(["--eval"]).seed == module.parse_args(["--play"]).seed == module.TEST_SEED


# --------------------------------------------------------------------------- 6. saves reach the disk
@pytest.mark.parametrize("name", SCRIPTS)
def test_a_checkpoint_is_flushed_to_disk_before_it_replaces_the_old_one(name, tmp_path, monkeypatch):
    module = SCRIPTS[name]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(module.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or
                        real_fsync(fd))
    run = save_run(module, tmp_path)
    assert [Path(p).name for p in synced] == ["model.pt.tmp", "model_last.pt.tmp"]
    assert module.load(run, module.ENV_ID)[1]["steps"] == 1000 and not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------- 7. and the defaults users copy
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_validation_plays_the_same_seeds(name, tmp_path, monkeypatch):
    module, seeds = SCRIPTS[name], []
    monkeypatch.setattr(module, "evaluate", lambda model, args, episodes, seed: seeds.append(seed) or [1.0] * episodes)
    monkeypatch.setattr(module, "drive", lambda *a, **k: 0.0, raising=False)  # (CarRacing's validation GIF)
    args = module.parse_args(["--train", "--hidden", "8"])
    paths = module.paths_for(tmp_path / "model.pt")
    run = SimpleNamespace(args=args, paths=paths, model=module.build_model(args), steps=100, episodes=0, seconds=1.0,
                          best_eval=-math.inf, optimizer=module.SharedAdam(module.build_model(args).parameters()),
                          log=SimpleNamespace(validation=lambda *a: None))
    module.Run.validate(run)
    module.Run.validate(run)
    assert seeds == [module.VALIDATION_SEED] * 2 and paths["best"].exists()


def test_epsilon_explores_in_cartpole_only():
    logits = torch.tensor([[50.0, -50.0]]).repeat(2000, 1)  # a sure policy: always action 0
    rng = np.random.default_rng(0)
    assert (a3c_cartpole.act(logits, 0.0, rng) == 0).all()
    share = (a3c_cartpole.act(logits, 0.5, rng) == 1).mean()  # half explore, half of those pick action 1
    assert 0.2 < share < 0.3
    assert "off-policy" in a3c_cartpole.SETTINGS["epsilon"][1]
    for module in (a3c_kungfu, a3c_carracing):
        assert "--epsilon" not in module.build_parser().format_help()


@pytest.mark.parametrize("name", SCRIPTS)
def test_more_workers_than_cores_is_warned_about(name, capsys):
    module = SCRIPTS[name]
    assert 1 <= module.parse_args(["--train"]).workers <= module.CORES
    assert "warning" not in capsys.readouterr().err
    module.parse_args(["--train", "--workers", str(module.CORES + 1)])
    assert "warning: --workers" in capsys.readouterr().err


@pytest.mark.parametrize("name, env_id, module", [
    ("cartpole", "CartPole-v1", a3c_cartpole), ("kungfu", "ALE/KungFuMaster-v5", a3c_kungfu),
    ("pong", "ALE/Pong-v5", a3c_kungfu), ("breakout", "ALE/Breakout-v5", a3c_kungfu),
    ("spaceinvaders", "ALE/SpaceInvaders-v5", a3c_kungfu), ("carracing", "CarRacing-v3", a3c_carracing),
    ("carracing_discrete", "CarRacing-v3", a3c_carracing)])
def test_every_shipped_checkpoint_loads_weights_only_with_its_step(name, env_id, module):
    path = ROOT / "pretrained" / f"{name}.pt"
    model, checkpoint = module.load(path, env_id)
    assert "optimizer" not in checkpoint and checkpoint["steps"] > 0 and path.stat().st_size < 2_000_000
    assert set(checkpoint["args"]) >= set(module.SETTINGS)  # every setting has a value, older files included
