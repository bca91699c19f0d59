"""The three scripts repeat each other on purpose (each one stands alone and can be copied out), so
a fix made in one copy must reach the others. This test compares the source of every top-level
definition (and every method of a class) across the scripts: the A3C machinery must be the same
text in all three, and the long-run plumbing the same text in the two pixel scripts, unless a
block is listed below with the reason it differs."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("a3c_cartpole.py", "a3c_kungfu.py", "a3c_carracing.py")
PIXEL_SCRIPTS = SCRIPTS[1:]

# what differs between CartPole and the pixel scripts (and maybe between those two as well)
MEANT_TO_DIFFER = {
    # the environment and what the agent sees of it
    "ENV_ID": "each script's environment",
    "make_env": "each environment's own maker and preprocessing",
    "make_vector_env": "CartPole and CarRacing step gymnasium envs; Atari steps ale-py's C++ vector env",
    "run_name": "run folders and shipped weights are named after the environment (KungFu: after the game)",
    "SETTINGS": "each environment's own defaults (and its own settings: action sets, reward scale, core)",
    # the network and what follows from it
    "ActorCritic": "an MLP pair for CartPole; conv nets with an optional LSTM (Atari) or a GRU (CarRacing)",
    "ActorCritic.__init__": "each network's layers",
    "build_model": "the network's inputs and outputs come from each environment",
    "a3c_loss": "the pixel scripts replay a recurrent core through the rollout; CartPole has none",
    "Rollouts": "what training sees differs: CartPole raw rewards, Atari sign(r) and lost lives, "
                "CarRacing scaled rewards; the pixel scripts carry a recurrent state",
    "Rollouts.__init__": "the pixel scripts carry a recurrent state (and Atari the lives)",
    "Rollouts.collect": "see Rollouts",
    "evaluate": "the pixel scripts carry a recurrent state and say how far long evaluations are",
    "test_actions": "CartPole defaults to --greedy; CarRacing's continuous policy is a Beta",
    "play": "each environment renders and records its own way",
    # the modes
    "Shared": "CartPole's threads lock the update, and its GA3C mode adds a queue of rollouts",
    "SharedAdam": "the pixel scripts add state_dict and load_state_dict for --resume (its methods are compared)",
    "update_shared_model": "CartPole's threads share one .grad, so they lock step 5, and its lr is constant",
    "run_worker": "a CartPole thread shares its process's signals; a worker process sets its own",
    "train_processes": "CartPole also runs the same workers as threads",
    # the plumbing: CartPole keeps its best weights and writes its history at the end; the pixel
    # scripts add what a run of hours needs (--resume, a CSV kept across resumes, saves on signals)
    "save_checkpoint": "the pixel scripts add the optimizer and fsync for --resume",
    "load": "the pixel scripts fill settings older checkpoints lack, and --resume loads any env",
    "Run": "the pixel scripts keep a resume point, a TrainingLog and wall time across resumes",
    "Run.__init__": "see Run",
    "Run.episode": "the pixel scripts count episodes for the checkpoint",
    "Run.tick": "the pixel scripts also stop at --max-seconds and log through TrainingLog",
    "Run.validate": "the pixel scripts save a resume point (CarRacing: and a GIF)",
    "parse_args": "each script's own flags, defaults and checks (the pixel scripts: --resume)",
    "train": "the list of modes; the pixel scripts resume and save",
    "main": "the pixel scripts evaluate a checkpoint in the env it was trained in (Atari: the frames; "
            "CarRacing: the action set and repeat)",
}
# what differs between the two pixel scripts
PIXEL_MEANT_TO_DIFFER = {
    "ENV_ID": "each script's environment", "make_env": "each environment's own maker",
    "make_vector_env": "ale-py's C++ vector env, or gymnasium's", "run_name": "Atari names runs after the game",
    "SETTINGS": "each environment's own settings", "ARCHITECTURE": "what a network is made for differs",
    "BEFORE_SETTINGS_EXISTED": "Atari's --frame, --padding and --channels came after its first checkpoints",
    "ActorCritic": "an optional LSTM (Atari) or a GRU (CarRacing)", "ActorCritic.__init__": "the layers",
    "ActorCritic.core_step": "an LSTM keeps h and c; a GRU's output is its state",
    "ActorCritic.step": "its docstring says what the policy head gives",
    "build_model": "the action sets", "a3c_loss": "CarRacing's continuous policy is a Beta",
    "ROLLOUT_DTYPES": "CarRacing's actions are indices or controls",
    "Rollouts": "sign(r) and lives, or scaled rewards", "Rollouts.__init__": "Atari keeps the lives",
    "Rollouts.collect": "see Rollouts", "evaluate": "games or tracks", "test_actions": "CarRacing's Beta",
    "play": "CarRacing drives through drive()", "Run": "CarRacing draws a GIF of each validation",
    "Run.validate": "see Run", "parse_args": "Atari takes --env-id; CarRacing --reward-scale",
    "main": "the frames, or the action set and repeat, a checkpoint was made with",
}


def top_level_blocks(path: Path) -> dict[str, str]:
    """name -> source text of each top-level function, class (and Class.method) and assignment."""
    source = path.read_text()
    blocks = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            blocks[node.name] = ast.get_source_segment(source, node)
            for item in node.body if isinstance(node, ast.ClassDef) else []:
                if isinstance(item, ast.FunctionDef):
                    blocks[f"{node.name}.{item.name}"] = ast.get_source_segment(source, item)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            blocks[node.targets[0].id] = ast.get_source_segment(source, node)
    return blocks


BLOCKS = {name: top_level_blocks(ROOT / name) for name in SCRIPTS}


def in_all(scripts) -> list[str]:
    return sorted(set.intersection(*(set(BLOCKS[script]) for script in scripts)))


@pytest.mark.parametrize("scripts, differ", [(SCRIPTS, MEANT_TO_DIFFER), (PIXEL_SCRIPTS, PIXEL_MEANT_TO_DIFFER)],
                         ids=["all three", "pixel scripts"])
def test_a_block_in_several_scripts_is_the_same_in_each(scripts, differ):
    for name in in_all(scripts):
        if name not in differ:
            for script in scripts[1:]:
                assert BLOCKS[script][name] == BLOCKS[scripts[0]][name], (
                    f"{name} in {script} differs from {scripts[0]}'s: make the copies the same again, or "
                    f"list {name} with the reason")


def test_the_a3c_machinery_is_shared_by_all_three_and_the_long_run_plumbing_by_the_pixel_scripts():
    everywhere = set(in_all(SCRIPTS)) - set(MEANT_TO_DIFFER)
    assert {"worker", "SharedAdam.__init__", "SharedAdam.step", "hand_over_gradients", "report", "train_batch",
            "training_seed", "stop_workers", "take_reports", "stop_on_signal", "plot_curve"} <= everywhere
    pixel = set(in_all(PIXEL_SCRIPTS)) - set(PIXEL_MEANT_TO_DIFFER)
    assert {"SharedAdam", "update_shared_model", "schedule", "TrainingLog", "save_checkpoint", "load", "newest_run",
            "last_of", "Run.tick", "train", "run_worker", "take_reports"} <= pixel
    assert not {"TrainingLog", "last_of", "schedule"} & set(BLOCKS["a3c_cartpole.py"]), "CartPole needs none of them"


@pytest.mark.parametrize("scripts, differ", [(SCRIPTS, MEANT_TO_DIFFER), (PIXEL_SCRIPTS, PIXEL_MEANT_TO_DIFFER)],
                         ids=["all three", "pixel scripts"])
def test_every_listed_difference_is_real(scripts, differ):
    """The lists do not go stale: each name exists in the scripts it is listed for, and differs."""
    for name in differ:
        assert name in in_all(scripts), f"{name} is not in every one of {scripts}: drop it from the list"
        assert len({BLOCKS[script][name] for script in scripts}) > 1, f"{name} is the same in {scripts} now"
