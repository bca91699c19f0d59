"""Running a script as a user does, and reading its error, for the script tests."""
import os
import subprocess
import sys
from pathlib import Path


def run_script(script: Path, *flags, cwd, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python script flags...` in cwd with no display (so --play writes a file)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, str(script), *map(str, flags)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one line on stderr that says error (after argparse's one-line
    usage, for a bad flag), and no traceback."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("usage:")]
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert len(result.stderr.splitlines()) <= 2, result.stderr
    return lines[0]


def train_evaluate_play(script: Path, mode: str, tmp_path: Path, *train_flags, common=(),
                        entropy_positive: bool = True) -> Path:
    """A short --train in `mode`, then --eval and a headless --play of what it wrote (`common`:
    flags for all three, such as the game; entropy_positive False for a continuous policy, whose
    differential entropy can be below 0)."""
    import torch

    checkpoint = tmp_path / "run" / "model.pt"
    run_script(script, "--train", "--mode", mode, *common, *train_flags, "--checkpoint", checkpoint, cwd=tmp_path)
    resume_point = () if script.name == "a3c_cartpole.py" else ("model_last.pt",)  # CartPole keeps the best only
    for name in ("model.pt", *resume_point, "model.csv", "model.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    assert torch.load(checkpoint, weights_only=True)["args"]["mode"] == mode
    assert_losses_logged(tmp_path / "run" / "model.csv", entropy_positive)

    out = run_script(script, "--eval", *common, "--episodes", 2, "--seed", 3, "--checkpoint", checkpoint,
                     cwd=tmp_path).stdout
    assert sum(line.startswith("episode") for line in out.splitlines()) == 2
    assert out.splitlines()[-1].startswith("mean")

    video = tmp_path / "play.gif"
    out = run_script(script, "--play", *common, "--checkpoint", checkpoint, "--video", video, "--video-steps", 20,
                     cwd=tmp_path).stdout
    assert video.stat().st_size > 0 and str(video) in out
    return checkpoint


def assert_losses_logged(csv_path: Path, entropy_positive: bool = True) -> None:
    """The CSV has the loss columns, and at least one row of finite numbers in them."""
    import csv
    import math

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    columns = ("policy_loss", "value_loss", "entropy", "advantage_std", "grad_norm")
    logged = [r for r in rows if r.get("entropy")]
    assert logged, "no loss rows in the CSV"
    for row in logged:
        assert all(math.isfinite(float(row[c])) for c in columns), row
        assert float(row["entropy"]) > 0 or not entropy_positive, row
