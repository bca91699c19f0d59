"""Every script in benchmarks/ still runs against today's a3c_*.py: each for a few seconds, on
small inputs, and must exit cleanly and print what it measures. (The numbers are not checked:
they belong to the benchmarks' own long runs.) And the random agent takes the scripts' flags."""
from pathlib import Path

import pytest
from helpers import run_script

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
CSV = ROOT / "pretrained" / "cartpole.csv"
EVAL_OUTPUT = ("episode   1 (seed 7): return 10.0\nepisode   2 (seed 8): return 30.0\n"
               "mean 20.0 std 10.0 over 2 episodes\n")

# script -> (flags, a word its output must contain); {tmp} is the test's own folder
RUNS = {
    "bench_carracing.py": (["--seconds", "2"], "speed-up"),
    "bench_cartpole.py": (["--modes", "batch", "--seeds", "1", "--", "--max-steps", "2000", "--eval-every", "1000",
                           "--eval-episodes", "2"], "batch"),
    "bench_kungfu.py": (["--seconds", "3", "--modes", "batch", "--nets"], "today's defaults (32, 64, 64"),
    "carracing_action_choice.py": (["--checkpoint", ROOT / "pretrained" / "carracing.pt", "--episodes", "1",
                                    "--choices", "mean", "sample", "--sharpen", "2", "--pedal", "1.1", "1"],
                                   "sample/2"),
    "compare_evals.py": (["{tmp}/a.txt", "{tmp}/a.txt", "--bars", "20"], "mean"),
    "loss_balance.py": ([CSV, "--every", "10000"], "entropy"),
    "plot_kungfu_cores.py": ([BENCH / "kungfu" / "ff_2h.csv", BENCH / "kungfu" / "lstm_2h.csv", "--out", "{tmp}/c.png"],
                             ""),
    "plot_runs.py": ([CSV, "--out", "{tmp}/r.png"], ""),
    "profile_kungfu_worker.py": (["ff", "2", "1.5"], "per agent step"),
    "script_sections.py": (["--rev", "HEAD"], "the worker"),
    "summarize_runs.py": ([CSV, "--at", "10000", "--within", "60"], "500 at 0.03M steps"),
}


def test_every_benchmark_script_is_listed():
    assert {p.name for p in BENCH.glob("*.py")} == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs(name, tmp_path):
    flags, expected = RUNS[name]
    (tmp_path / "a.txt").write_text(EVAL_OUTPUT)
    flags = [str(f).replace("{tmp}", str(tmp_path)) for f in flags]
    result = run_script(BENCH / name, *flags, cwd=ROOT, timeout=240)
    assert expected in result.stdout, result.stdout[-2000:]
    for flag in flags:
        if flag.endswith(".png"):
            assert Path(flag).stat().st_size > 0


def test_the_random_agent_speaks_as_the_scripts_do(tmp_path):
    baseline = ROOT / "random_baseline.py"
    out = run_script(baseline, "--env-id", "CartPole-v1", "--episodes", 3, "--seed", 5, cwd=tmp_path).stdout
    assert "(seed 5): return" in out and out.splitlines()[-1].startswith("mean") and "over 3 episodes" in out
    assert "[CartPole-v1]" in run_script(baseline, "--help", cwd=tmp_path).stdout
    bad = run_script(baseline, "--env-id", "PongNoFrameskip-v4", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "ALE/...-v5" in bad.stderr
