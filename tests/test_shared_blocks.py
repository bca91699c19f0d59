"""The three scripts repeat each other on purpose (each one stands alone and can be copied out), so
a fix made in one copy must reach the others. This test compares the source of every top-level
definition across a3c_cartpole.py, a3c_kungfu.py and a3c_carracing.py: a block in all three must
be the same text, unless it is listed below with the reason it differs."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("a3c_cartpole.py", "a3c_kungfu.py", "a3c_carracing.py")

MEANT_TO_DIFFER = {
    # the environment and what the agent sees of it
    "ENV_ID": "each script's environment",
    "make_env": "each environment's own maker and preprocessing",
    "make_vector_env": "CartPole and CarRacing step gymnasium envs; Atari steps ale-py's C++ vector env",
    "run_name": "run folders and shipped weights are named after the environment (KungFu: after the game)",
    "SETTINGS": "each environment's own defaults (and its own settings: action sets, reward scale, core)",
    "ARCHITECTURE": "what a resumed run cannot change depends on the network and the env",
    "BEFORE_SETTINGS_EXISTED": "Atari's --frame came after its shipped checkpoints; the others have no such setting",
    # the network and what follows from it
    "ActorCritic": "an MLP pair for CartPole; conv nets with an optional LSTM (Atari) or a GRU (CarRacing)",
    "build_model": "the network's inputs and outputs come from each environment",
    "a3c_loss": "the pixel scripts replay a recurrent core through the rollout; CartPole has none",
    "ROLLOUT_DTYPES": "pixels are uint8 and the recurrent scripts record where episodes start",
    "Rollouts": "what training sees differs: CartPole raw rewards, Atari sign(r) and lost lives, "
                "CarRacing scaled rewards; the pixel scripts carry a recurrent state",
    "evaluate": "the pixel scripts carry a recurrent state and say how far long evaluations are",
    "test_actions": "CartPole defaults to --greedy; CarRacing's continuous policy is a Beta",
    "act": "CartPole keeps the GA3C seed's epsilon-greedy; CarRacing also samples a Beta",
    "play": "each environment renders and records its own way",
    # the modes
    "Shared": "CartPole's threads lock the update, and its GA3C mode adds a queue of rollouts",
    "update_shared_model": "CartPole's threads share one .grad, so they lock step 5; processes need no lock",
    "run_worker": "a CartPole thread shares its process's signals; a worker process sets its own",
    "train_processes": "CartPole also runs the same workers as threads",
    "Run": "CarRacing draws a GIF of each validation",
    "build_parser": "each script's own flags and defaults (Atari: --env-id; --greedy's default; the pixel "
                    "scripts: --video-steps)",
    "parse_args": "each script's own defaults for --episodes and its own checks",
    "train": "the list of modes, and CartPole says whether it solved the env",
    "main": "the pixel scripts evaluate a checkpoint in the env it was trained in (Atari: the frames; "
            "CarRacing: the action set and repeat)",
}


def top_level_blocks(path: Path) -> dict[str, str]:
    """name -> source text of each top-level function, class and assignment."""
    source = path.read_text()
    blocks = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            blocks[node.name] = ast.get_source_segment(source, node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            blocks[node.targets[0].id] = ast.get_source_segment(source, node)
    return blocks


BLOCKS = {name: top_level_blocks(ROOT / name) for name in SCRIPTS}
IN_ALL = sorted(set.intersection(*(set(blocks) for blocks in BLOCKS.values())))


@pytest.mark.parametrize("name", [n for n in IN_ALL if n not in MEANT_TO_DIFFER])
def test_a_block_in_every_script_is_the_same_in_every_script(name):
    reference = BLOCKS[SCRIPTS[0]][name]
    for script in SCRIPTS[1:]:
        assert BLOCKS[script][name] == reference, (
            f"{name} in {script} differs from {SCRIPTS[0]}'s: make the copies the same again, or list "
            f"{name} in MEANT_TO_DIFFER with the reason")


def test_the_shared_blocks_include_the_a3c_machinery():
    shared = set(IN_ALL) - set(MEANT_TO_DIFFER)
    assert {"worker", "SharedAdam", "hand_over_gradients", "report", "learning_rate", "newest_run", "paths_for",
            "schedule", "entropy_weight", "save_checkpoint", "load", "TrainingLog", "stop_on_signal",
            "plot_curve"} <= shared


@pytest.mark.parametrize("name", sorted(MEANT_TO_DIFFER))
def test_every_listed_difference_is_real(name):
    """The list does not go stale: each name exists in all three scripts, and differs."""
    assert name in IN_ALL, f"{name} is not in every script: drop it from MEANT_TO_DIFFER"
    assert len({BLOCKS[script][name] for script in SCRIPTS}) > 1, f"{name} is the same everywhere now"
