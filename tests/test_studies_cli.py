"""The study scripts' command line: every user error fails before Ray starts, with one clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import ray

from salgl_core.config import ConfigError
from salgl_core.data import DataError
from studies import ablation, graph_depth, momentum, scene_count
from studies import tune as tune_study
from studies.ablation import PAPER, StudyError

REPO = Path(__file__).resolve().parents[1]


def _args(module, tmp: Path, *argv: str):
    return module.get_args_parser().parse_args(
        [*argv, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray")])


@pytest.mark.parametrize("module, argv, error, match", [
    (scene_count, ["--set", "foo=1"], ConfigError, r"unknown config field\(s\) \['foo'\]"),
    (scene_count, ["--values", "0", "2"], ConfigError, r"num_scenes = 0 is invalid: expected an integer >= 1"),
    (momentum, ["--values", "0.5", "1.5"], ConfigError, r"comat_momentum = 1.5 is invalid"),
    (graph_depth, ["--set", "lr=-1"], ConfigError, r"TrainConfig.lr = -1.0 is invalid"),
    (scene_count, ["--values", "two"], StudyError, r"--values 'two' is invalid: num_scenes takes int values"),
    (scene_count, ["--set", "num_scenes=2"], StudyError, r"num_scenes is this study's axis"),
    (scene_count, ["--set", "lr"], StudyError, r"expected FIELD=VALUE"),
    (scene_count, ["--seeds", "0", "0"], StudyError, r"repeats a seed"),
    (scene_count, ["--smoke", "--dataset", "coco"], StudyError, r"synthetic dataset only"),
    (scene_count, ["--dataset", "coco", "--data-root", "/nonexistent/coco"], DataError, r"/nonexistent/coco"),
    (scene_count, ["--resume", "--name", "nope"], StudyError, r"nothing to resume at .*scene_count/nope"),
    (scene_count, ["--resume"], StudyError, r"--resume needs --name"),
    (tune_study, ["--smoke", "--num-samples", "0"], StudyError, r"--num-samples 0 is invalid"),
    (tune_study, ["--epochs", "4", "--grace-period", "4"], StudyError, r"--grace-period 4 is invalid: expected 1 to 3"),
    (tune_study, ["--reduction-factor", "1"], StudyError, r"--reduction-factor 1.0 is invalid"),
])
def test_bad_configuration_fails_before_ray_starts(tmp_path, module, argv, error, match):
    with pytest.raises(error, match=match):
        module.main(_args(module, tmp_path, *argv))
    assert not ray.is_initialized()
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    argv = ["--dataset", "coco", "--data-root", str(tmp_path / "missing"), "--results-dir", str(tmp_path)]
    assert ablation.cli(scene_count.SPEC, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "missing") in err[0]
    assert not ray.is_initialized()


def test_an_existing_run_is_not_overwritten_silently(tmp_path):
    (tmp_path / "results" / "scene_count" / "r").mkdir(parents=True)
    with pytest.raises(StudyError, match="already exists.*--resume --name r.*--overwrite"):
        scene_count.main(_args(scene_count, tmp_path, "--smoke", "--name", "r"))
    assert not ray.is_initialized()


def test_defaults_and_the_paper_value_always_in_the_grid(tmp_path):
    plan = ablation.make_plan(_args(scene_count, tmp_path), scene_count.SPEC)
    assert plan.values == [1, 2, 4, 8] and plan.seeds == [0, 1] and plan.num_samples == 8
    assert plan.base["dataset"] == "synthetic" and plan.base["backbone"] == "small_cnn"
    plan = ablation.make_plan(_args(graph_depth, tmp_path, "--values", "1", "0"), graph_depth.SPEC)
    assert plan.values == [0, 1, PAPER["gnn_steps"]] and plan.paper_config == {"gnn_steps": 3}
    plan = ablation.make_plan(_args(momentum, tmp_path, "--smoke"), momentum.SPEC)
    assert plan.values == [0.0, 1.0] and plan.seeds == [0]
    # --dataset coco with no other override is the paper's recipe.
    plan = ablation.make_plan(_args(scene_count, tmp_path, "--dataset", "coco"), scene_count.SPEC)
    assert {k: plan.base[k] for k in ("backbone", "image_size", "batch_size", "epochs", "lr")} == {
        "backbone": "resnet101", "image_size": 448, "batch_size": 128, "epochs": 80, "lr": 1e-4}
    assert {k: v for k, v in plan.base.items() if k != "dataset"} == {k: v for k, v in PAPER.items()
                                                                       if k != "dataset"}
    plan = ablation.make_plan(_args(tune_study, tmp_path, "--set", "lr=0.01"), tune_study.SPEC)
    assert plan.points[0]["lr"] == 0.01 and plan.space["lr"].low == pytest.approx(1e-3)
    assert plan.paper_config["num_scenes"] == PAPER["num_scenes"] and plan.num_samples == 16
    # ASHA's rungs stay below the last epoch (5 synthetic epochs: decisions after epochs 1 and 3).
    assert plan.asha == {"time_attr": "training_iteration", "grace_period": 1, "max_t": 4, "reduction_factor": 3.0}
    assert ablation.make_plan(_args(tune_study, tmp_path, "--smoke"), tune_study.SPEC).asha is None  # 1 epoch


def test_resources_follow_the_cluster():
    args = scene_count.get_args_parser().parse_args([])
    assert ablation.resources(args, {"cpus": 2.0, "gpus": 0.0}, 8) == (0.0, 1.0, 2)
    assert ablation.resources(args, {"cpus": 16.0, "gpus": 2.0}, 8) == (1.0, 8.0, 2)
    args = scene_count.get_args_parser().parse_args(["--gpus-per-trial", "0.5", "--max-concurrent", "3"])
    assert ablation.resources(args, {"cpus": 16.0, "gpus": 2.0}, 8) == (0.5, 4.0, 3)
    with pytest.raises(StudyError, match="more than the Ray cluster has"):
        ablation.resources(scene_count.get_args_parser().parse_args(["--gpus-per-trial", "1"]),
                           {"cpus": 2.0, "gpus": 0.0}, 8)


@pytest.mark.parametrize("script", ["scene_count", "tune"])  # the one-axis scripts share scene_count's parser
def test_scripts_run_from_the_repo_root(script):
    out = subprocess.run([sys.executable, f"studies/{script}.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--dataset", "--gpus-per-trial", "--cpus-per-trial", "--max-concurrent", "--address", "--name",
                 "--results-dir", "--resume", "--smoke", "--seeds", "--dashboard-host"):
        assert flag in out.stdout


def test_dashboard_stays_local_unless_asked():
    parse = scene_count.get_args_parser().parse_args
    assert parse([]).dashboard_host == "127.0.0.1" and ablation.dashboard_warning(parse([])) is None
    warning = ablation.dashboard_warning(parse(["--dashboard-host", "0.0.0.0"]))
    assert "0.0.0.0" in warning and "arbitrary code" in warning
    assert ablation.dashboard_warning(parse(["--dashboard-host", "0.0.0.0", "--no-dashboard"])) is None


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Trials run in working directories of their own: the driver hands them absolute paths only."""
    monkeypatch.chdir(tmp_path)
    args = _args(scene_count, tmp_path, "--dataset", "coco", "--data-root", "data/coco", "--set",
                 "label_embedding=emb/bert.npy", "--set", "backbone_weights=w/r101.pth")
    base, _ = ablation.base_config(args)
    assert base["data_root"] == str(tmp_path / "data" / "coco")
    assert base["label_embedding"] == str(tmp_path / "emb" / "bert.npy")
    assert base["backbone_weights"] == str(tmp_path / "w" / "r101.pth")
    assert base["cache_dir"] is None  # only the synthetic dataset uses the cache
    monkeypatch.setenv("SALGL_CACHE", "rel/cache")
    base, _ = ablation.base_config(_args(scene_count, tmp_path))
    assert base["cache_dir"] == str(tmp_path / "rel" / "cache")
    base, _ = ablation.base_config(_args(scene_count, tmp_path, "--backbone-weights", "none"))
    assert base["backbone_weights"] is None
