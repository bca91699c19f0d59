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
    """The run failed with exactly one line on stderr that says error, and no traceback."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    return lines[0]
