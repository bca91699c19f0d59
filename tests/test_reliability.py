"""Runs a learner can trust: in the pixel scripts, whose runs take hours, --resume keeps a run's
hyperparameters and step count and never touches the shipped checkpoints, signals save a resume
point, and saves reach the disk; in all three, signals and dead workers stop every worker, a
diverging run stops with a one-line reason, and training, validation and test seeds never meet.
Signals and dead workers are tested on real processes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import one_line_error, run_script

import a3c_carracing
import a3c_cartpole
import a3c_kungfu

SCRIPTS = {"cartpole": a3c_cartpole, "kungfu": a3c_kungfu, "carracing": a3c_carracing}
LONG_RUNS = ["kungfu", "carracing"]  # the scripts with --resume
ROOT = Path(a3c_cartpole.__file__).resolve().parent


def script(name: str) -> Path:
    return Path(SCRIPTS[name].__file__).resolve()


def save_run(module, folder: Path, *train_flags) -> Path:
    """A run folder as `--train *train_flags` leaves it (model.pt and model_last.pt), without training."""
    args = module.parse_args(["--train", *train_flags])
    args.checkpoint = folder / "model.pt"
    model = module.build_model(args)
    run = SimpleNamespace(args=args, steps=1000, episodes=3, seconds=5.0, best_eval=1.0)
    module.save_checkpoint(folder / "model.pt", model, None, run)
    module.save_checkpoint(folder / "model_last.pt", model, module.SharedAdam(model.parameters()), run)
    return folder / "model.pt"


# --------------------------------------------------------------------------- 1. --resume keeps the run's settings
@pytest.mark.parametrize("name", LONG_RUNS)
def test_resume_restores_the_saved_hyperparameters_and_typed_flags_win(name, tmp_path):
    module = SCRIPTS[name]
    run = save_run(module, tmp_path, "--lr", "0.0123", "--rollout-len", "7", "--hidden", "32")
    resumed = module.parse_args(["--train", "--resume", "--checkpoint", str(run)])
    assert (resumed.lr, resumed.rollout_len, resumed.hidden) == (0.0123, 7, 32)
    typed = module.parse_args(["--train", "--resume", "--checkpoint", str(run), "--lr", "0.5"])
    assert (typed.lr, typed.rollout_len, typed.hidden) == (0.5, 7, 32)
    same = module.parse_args(["--train", "--resume", "--checkpoint", str(run), "--hidden", "32"])
    assert same.hidden == 32  # typing the run's own value is fine


@pytest.mark.parametrize("name", LONG_RUNS)
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


def test_a_resumed_run_keeps_its_network_settings_step_count_and_log(tmp_path):
    checkpoint = tmp_path / "run" / "model.pt"
    flags = ("--eval-every", 10**9, "--checkpoint", checkpoint)  # no validation: the resume point alone
    run_script(script("carracing"), "--train", "--actions", "discrete", "--hidden", 32, "--lr", 0.0123,
               "--rollout-len", 5, "--envs-per-worker", 1, "--max-steps", 20, *flags, cwd=tmp_path)
    rows = len((tmp_path / "run" / "model.csv").read_text().splitlines())
    stopped_at = torch.load(tmp_path / "run" / "model_last.pt", weights_only=True)["steps"]  # 20, or a rollout past it
    out = run_script(script("carracing"), "--train", "--resume", "--max-steps", 40, *flags, cwd=tmp_path).stdout
    assert 20 <= stopped_at < 40 and "resuming from" in out and f"at step {stopped_at}" in out
    saved = torch.load(tmp_path / "run" / "model_last.pt", weights_only=True)
    assert (saved["args"]["hidden"], saved["args"]["lr"], saved["args"]["max_steps"]) == (32, 0.0123, 40)
    assert saved["args"]["actions"] == "discrete" and 40 <= saved["steps"] < 60 and saved["seconds"] > 0
    assert len((tmp_path / "run" / "model.csv").read_text().splitlines()) > rows  # the same CSV, appended to


# --------------------------------------------------------------------------- 2. the shipped checkpoints stay as shipped
@pytest.mark.parametrize("name", LONG_RUNS)
def test_resume_with_nothing_to_resume_is_an_error_and_touches_no_shipped_file(name, tmp_path):
    shipped = {p: p.read_bytes() for p in (ROOT / "pretrained").glob(f"{name}*")}
    line = one_line_error(run_script(script(name), "--train", "--resume", cwd=tmp_path, check=False))
    assert "nothing to resume" in line and "--checkpoint" in line
    assert {p: p.read_bytes() for p in (ROOT / "pretrained").glob(f"{name}*")} == shipped


# --------------------------------------------------------------------------- 3. and 4. signals, dead workers
def start_training(name: str, tmp_path: Path, *flags) -> tuple[subprocess.Popen, list[int]]:
    """A --mode processes run that would go on for minutes, in its own session; and its workers' pids."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    budget = () if name == "cartpole" else ("--max-seconds", "300")
    proc = subprocess.Popen([sys.executable, str(script(name)), "--train", "--workers", "2", *budget,
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
def test_sigterm_and_sighup_stop_every_worker_and_the_pixel_scripts_save_a_resume_point(name, sig, tmp_path):
    proc, workers = start_training(name, tmp_path)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted" in stderr + stdout
    if name in LONG_RUNS:
        assert "optimizer" in torch.load(tmp_path / "model_last.pt", weights_only=True)  # a resume point was saved
    else:  # CartPole has nothing to resume: its best weights are on disk already
        assert not (tmp_path / "model_last.pt").exists() and (tmp_path / "model.csv").exists()
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
    if name in LONG_RUNS:
        assert "optimizer" in torch.load(tmp_path / "model_last.pt", weights_only=True)  # a resume point was saved
    assert wait_gone(workers, 5) == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_worker_that_raises_stops_the_run_with_its_traceback(name, tmp_path):
    # forked workers inherit the patched module: every worker raises at once
    code = (f"import sys, {SCRIPTS[name].__name__} as script\n"
            "def worker(*args):\n    raise ValueError('boom in the worker')\n"
            "script.worker = worker\n"
            f"sys.exit(script.main(['--train', '--workers', '2', '--checkpoint', {str(tmp_path / 'model.pt')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "error: training stopped: worker" in result.stderr, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "ValueError: boom in the worker" in result.stderr


def test_a_dead_ga3c_actor_stops_the_trainer(tmp_path):
    proc, actors = start_training("cartpole", tmp_path, "--mode", "ga3c")
    os.kill(actors[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "error: training stopped" in stderr, stderr
    assert wait_gone(actors, 5) == []


@pytest.mark.parametrize("name, mode", [("cartpole", "processes"), ("cartpole", "threads"), ("cartpole", "batch"),
                                        ("cartpole", "ga3c"), ("kungfu", "processes"), ("kungfu", "batch"),
                                        ("carracing", "processes")])
def test_a_diverging_run_stops_with_its_reason_and_leaves_only_finite_weights(name, mode, tmp_path):
    # lr 1e30 makes the weights explode within a few updates: the loss or the policy stops being a number
    small = () if name == "cartpole" else ("--envs-per-worker", 2, "--num-envs", 2, "--rollout-len", 5)
    result = run_script(script(name), "--train", "--mode", mode, "--lr", "1e30", "--max-steps", 100_000, *small,
                        "--checkpoint", tmp_path / "model.pt", cwd=tmp_path, check=False, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "training stopped" in error[0] and "not finite" in error[0], result.stderr[-3000:]
    for left in tmp_path.glob("*.pt"):
        assert all(torch.isfinite(v).all() for v in torch.load(left, weights_only=True)["model"].values()), left


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
@pytest.mark.parametrize("name", LONG_RUNS)
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
    args = module.parse_args(["--train", "--hidden", "8", "--checkpoint", str(tmp_path / "model.pt")])
    model = module.build_model(args)
    if name == "cartpole":
        run = module.Run(args, model)
    else:
        start = dict(zip(module.COUNTERS, (0, 0, 0.0, -1.0)))
        run = module.Run(args, model, module.SharedAdam(model.parameters()), start)
    run.validate()
    run.validate()
    assert seeds == [module.VALIDATION_SEED] * 2 and args.checkpoint.exists()
    if name != "cartpole":
        run.log.close()


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
    weights = sum(4 * p.numel() for p in model.parameters())  # float32: the Atari network's 1.24M are 5 MB
    assert "optimizer" not in checkpoint and checkpoint["steps"] > 0 and path.stat().st_size < weights + 100_000
    assert set(checkpoint["args"]) >= set(module.SETTINGS)  # every setting has a value, older files included
