"""Where a study's files go (runs/ by default, git-ignored) and what its Ray folder keeps once it has finished
(studies/tuning/workspace.py, the output flags of studies/design/cli.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from studies import scene_count
from studies.design import cli
from studies.design.paths import REPO
from studies.tuning import resume, workspace


def _experiment(exp: Path) -> dict[str, int]:
    """A Ray experiment folder as a study leaves it: state files, and per trial its logs and last checkpoint."""
    sizes = {}
    exp.mkdir(parents=True)
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trials": []}))
    (exp / resume.STUDY_ARGS).write_text("{}")
    for i, tid in enumerate(("a", "b")):
        trial = exp / f"train_trial_{tid}_{i}_num_scenes=4,seed=0"
        (trial / "checkpoint_000002").mkdir(parents=True)
        (trial / "checkpoint_000002" / "checkpoint.pt").write_bytes(b"x" * 5000)
        (trial / "checkpoint_000002" / ".metadata.json").write_text("{}")
        for name in ("result.json", "progress.csv", "params.json"):
            (trial / name).write_text("{}\n")
        sizes[tid] = 5002
    # Not Ray's checkpoints: a file that happens to share the prefix, and a folder not numbered.
    (exp / "train_trial_a_0_num_scenes=4,seed=0" / "checkpoint_notes").mkdir()
    (exp / "train_trial_b_1_num_scenes=4,seed=0" / "checkpoint_000003").write_text("a file")
    return sizes


def test_a_finished_study_drops_its_checkpoints_and_keeps_the_rest(tmp_path):
    exp = tmp_path / "ray" / "scene_count" / "r"
    sizes = _experiment(exp)
    before = {p.relative_to(exp) for p in exp.rglob("*")}
    assert len(workspace.checkpoint_dirs(exp)) == 2
    freed = workspace.drop_checkpoints(exp)
    assert freed == sum(sizes.values())
    after = {p.relative_to(exp) for p in exp.rglob("*")}
    gone = before - after
    assert gone and all("checkpoint_000002" in p.parts for p in gone)
    # What Ray needs to read the run back stays, and what is not a checkpoint folder is left alone.
    for trial in exp.glob("train_trial_*"):
        assert {p.name for p in trial.iterdir()} >= {"result.json", "progress.csv", "params.json"}
    assert (exp / "train_trial_a_0_num_scenes=4,seed=0" / "checkpoint_notes").is_dir()
    assert (exp / "train_trial_b_1_num_scenes=4,seed=0" / "checkpoint_000003").is_file()
    assert (exp / resume.STUDY_ARGS).is_file() and workspace.checkpoint_dirs(exp) == []
    assert workspace.drop_checkpoints(exp) == 0  # twice is harmless


def test_the_summary_line_of_the_policy(tmp_path):
    exp = tmp_path / "r"
    _experiment(exp)
    kept = workspace.finish_ray_folder(exp, keep_checkpoints=True, shown=".ray_results/scene_count/r")
    assert "trial checkpoints kept" in kept and len(workspace.checkpoint_dirs(exp)) == 2
    line = workspace.finish_ray_folder(exp, keep_checkpoints=False, shown=".ray_results/scene_count/r")
    assert line.startswith("  Ray's folder: .ray_results/scene_count/r (0.0 MB; deleted the trial checkpoints")
    assert "--keep-checkpoints keeps them" in line and workspace.checkpoint_dirs(exp) == []


def test_runs_go_to_the_git_ignored_runs_folder_by_default():
    args = scene_count.get_args_parser().parse_args([])
    assert Path(args.results_dir) == REPO / "runs" and Path(args.storage_path) == REPO / ".ray_results"
    assert args.keep_checkpoints is False
    assert "runs/" in cli.get_args_parser(scene_count.SPEC).format_help()


@pytest.mark.parametrize("folder", ["runs/scene_count/r/study.json", ".ray_results/scene_count/r/tuner.pkl"])
def test_study_folders_are_git_ignored(folder):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", folder], cwd=REPO)
    assert out.returncode == 0, f"{folder} is not git-ignored: add its folder to .gitignore"


def test_keep_checkpoints_is_taken_from_the_resume_command_line(tmp_path):
    args = argparse.Namespace(storage_path=str(cli.DEFAULT_STORAGE), address=None, keep_checkpoints=True)
    cmd = resume.resume_command(args, scene_count.SPEC, "r")
    assert cmd.endswith("--resume --name r --keep-checkpoints")
    assert "keep_checkpoints" in resume.RUNTIME_FLAGS  # so the resumed run keeps what this command asks
    args.keep_checkpoints = False
    assert "--keep-checkpoints" not in resume.resume_command(args, scene_count.SPEC, "r")
