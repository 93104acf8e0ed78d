"""The study scripts' command line: every user error fails before Ray starts, with one clear message."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from salgl_core.config import ConfigError
from salgl_core.data import DataError
from studies import graph_depth, momentum, scene_count
from studies import tune as tune_study
from studies.catalog import named_studies
from studies.design import cli
from studies.design.spec import StudyError
from studies.script import run_script
from studies.tuning import resume

REPO = Path(__file__).resolve().parents[1]


def _args(module, tmp: Path, *argv: str):
    return module.get_args_parser().parse_args(
        [*argv, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray")])


@pytest.mark.parametrize("module, argv, error, match", [
    (scene_count, ["--set", "foo=1"], ConfigError, r"unknown config field 'foo'"),
    # A value outside the field's range is refused with the range, from the field's declaration.
    (scene_count, ["--values", "0", "2"], StudyError, r"--values '0' is invalid: num_scenes takes an integer >= 1"),
    (momentum, ["--values", "0.5", "1.5"], StudyError, r"comat_momentum takes a number in \[0.0, 1.0\]"),
    (graph_depth, ["--set", "lr=-1"], ConfigError, r"TrainConfig.lr = -1.0 is invalid"),
    (scene_count, ["--values", "two"], StudyError, r"--values 'two' is invalid: num_scenes takes an integer >= 1"),
    (momentum, ["--values", "fast"], StudyError, r"--values 'fast' is invalid: comat_momentum takes a number in \["),
    (scene_count, ["--set", "num_scenes=2"], StudyError, r"num_scenes is this study's axis"),
    (scene_count, ["--set", "lr"], StudyError, r"expected FIELD=VALUE"),
    (scene_count, ["--seeds", "0", "0"], StudyError, r"repeats a seed"),
    (scene_count, ["--values", "2", "2"], StudyError, r"repeats a value"),
    (scene_count, ["--smoke", "--dataset", "coco"], StudyError, r"synthetic dataset only"),
    (scene_count, ["--dataset", "coco", "--data-root", "/nonexistent/coco"], DataError, r"/nonexistent/coco"),
    (scene_count, ["--resume", "--name", "nope"], StudyError, r"nothing to resume at .*scene_count/nope"),
    (scene_count, ["--resume"], StudyError, r"--resume needs --name"),
    (scene_count, ["--name", "a/b"], StudyError, r"--name 'a/b' is invalid"),
    (tune_study, ["--smoke", "--num-samples", "0"], StudyError, r"--num-samples 0 is invalid"),
    (tune_study, ["--epochs", "4", "--grace-period", "4"], StudyError, r"--grace-period 4 is invalid: expected 1 to 3"),
    (tune_study, ["--reduction-factor", "1"], StudyError, r"--reduction-factor 1.0 is invalid"),
])
@pytest.mark.slow
def test_bad_configuration_fails_before_ray_starts(tmp_path, module, argv, error, match):
    with pytest.raises(error, match=match):
        module.main(_args(module, tmp_path, *argv))
    assert not ray.is_initialized()
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    argv = ["--dataset", "coco", "--data-root", str(tmp_path / "missing"), "--results-dir", str(tmp_path)]
    assert run_script(scene_count.SPEC, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "missing") in err[0]
    assert not ray.is_initialized()


def test_an_existing_run_is_not_overwritten_silently(tmp_path):
    (tmp_path / "results" / "scene_count" / "r").mkdir(parents=True)
    with pytest.raises(StudyError, match="already exists.*--resume --name r.*--overwrite"):
        scene_count.main(_args(scene_count, tmp_path, "--smoke", "--name", "r"))
    assert not ray.is_initialized()


def test_set_values_are_json_or_bare_strings():
    assert cli.parse_set(["soft_assignment=true", "lr=1e-3", "data_root=/d/coco", " gnn_steps =2"]) == {
        "soft_assignment": True, "lr": 1e-3, "data_root": "/d/coco", "gnn_steps": 2}
    with pytest.raises(StudyError, match="expected FIELD=VALUE"):
        cli.parse_set(["=1"])


def test_resume_command_and_saved_args(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _args(scene_count, Path("rel"), "--address", "auto")
    cmd = resume.resume_command(args, scene_count.SPEC, "r1")
    assert cmd.endswith(f"--resume --name r1 --storage-path {tmp_path / 'rel' / 'ray'} --address auto")
    saved = resume.saved_args(args, name="r1", gpus_per_trial=0.0)
    assert saved["results_dir"] == str(tmp_path / "rel" / "results") and saved["name"] == "r1"
    assert saved["gpus_per_trial"] == 0.0 and saved["seeds"] is None


@pytest.mark.parametrize("script", ["scene_count", "mechanism", "tune"])  # one-axis and arm scripts share a parser
def test_scripts_run_from_the_repo_root(script):
    out = subprocess.run([sys.executable, f"studies/{script}.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--dataset", "--gpus-per-trial", "--cpus-per-trial", "--max-concurrent", "--address", "--name",
                 "--results-dir", "--resume", "--smoke", "--seeds", "--dashboard-host"):
        assert flag in out.stdout


@pytest.mark.parametrize("script", list(named_studies()))  # every named study the catalog finds
def test_help_imports_neither_torch_ray_nor_optuna(script):
    """--help answers from the light parser module: the heavy packages are imported only for a real run."""
    out = subprocess.run([sys.executable, "-X", "importtime", f"studies/{script}.py", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "studies.design.cli" in imported and "salgl_core.presets" in imported
    assert not imported & {"torch", "ray", "optuna", "numpy"}, sorted(imported & {"torch", "ray", "optuna", "numpy"})
    assert out.stdout.startswith(f"usage: python studies/{script}.py ")


def test_help_shows_the_recipe_it_will_use_and_each_default_once():
    def flat(text: str) -> str:
        return re.sub(r"\s+", " ", text)

    synthetic = flat(scene_count.get_args_parser().format_help())
    assert "the synthetic preset with the studies' sizing" in synthetic and "(default: 0 1 2)" in synthetic
    assert "the value of the synthetic preset's configuration (4) is always added" in synthetic
    assert "--lr X" in synthetic and "default: 0.002)" in synthetic
    for parser in (scene_count.get_args_parser(), tune_study.get_args_parser()):
        for block in re.split(r"\n  (?=-)", parser.format_help())[1:]:
            assert flat(block).count("default:") <= 1, block
    coco = flat(scene_count.get_args_parser(["--dataset", "coco"]).format_help())
    assert "(defaults: recipe paper-coco-r101-448)" in coco
    assert "the value of the paper's configuration (6) is always added" in coco
    parser = scene_count.get_args_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    with pytest.raises(SystemExit):
        parser.parse_args(["--recipe", "nope"])


@pytest.mark.parametrize("argv, message", [
    (["--values", "x"], "--values 'x' is invalid: num_scenes takes an integer >= 1"),
    (["--set", "num_scenes=abc"], "num_scenes is this study's axis"),
    (["--set", "gnn_steps=abc"], "--set: gnn_steps = 'abc' is invalid: expected an integer >= 0"),
    (["--set", "num_scnes=3"], "unknown config field 'num_scnes' (did you mean num_scenes?)"),
    (["--epochs", "0"], "TrainConfig.epochs = 0 is invalid: expected an integer >= 1"),
    (["--seeds", "-1"], "TrainConfig.seed = -1 is invalid"),
    # A rule across fields: the whole trial config is built by the light parser too.
    (["--set", "feature_cache=true", "--set", "freeze_backbone=false"], "feature_cache = True needs"),
    # A value the config would ignore (the paper recipes' per-epoch EMA rule overrides ema_decay) is refused.
    (["--dataset", "coco", "--set", "ema_decay=0.999"], "ema_decay is not used while ema_epoch_retention = 0.82"),
])
def test_bad_values_and_sets_answer_before_the_heavy_imports(argv, message):
    """A wrong --values, --set or config flag is reported by the light CLI module in one line, without importing
    torch, ray or optuna (a newcomer waited 8-9 s for these)."""
    code = (f"import sys; sys.argv = ['scene_count.py', *{argv!r}]; import runpy\n"
            "try:\n    runpy.run_path('studies/scene_count.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 2, e.code\n"
            "heavy = [m for m in ('torch', 'ray', 'optuna') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "known fields" not in out.stderr  # no list of 69 names burying the suggestion


def test_an_arm_that_does_not_exist_is_refused_by_the_light_parser():
    out = subprocess.run([sys.executable, "studies/mechanism.py", "--values", "best"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice: 'best'" in out.stderr and "no_graph" in out.stderr


def test_the_overhead_benchmarks_trainable_takes_what_the_real_one_takes():
    """studies.bench_overhead swaps its sleeping trainable in for train_trial: the runner calls both alike."""
    import inspect

    from studies.bench_overhead import sleeping_trial
    from studies.tuning.trainable import train_trial

    assert list(inspect.signature(sleeping_trial(1.0)).parameters) == list(inspect.signature(train_trial).parameters)


def test_resume_refuses_other_trackers_than_the_run_started_with(tmp_path, monkeypatch):
    """Ray restores the tracker callbacks with the run: a --log-to typed on --resume could not take effect."""
    from ray import tune

    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: True))
    exp = tmp_path / "ray" / "scene_count" / "r1"
    exp.mkdir(parents=True)
    (exp / resume.STUDY_ARGS).write_text(json.dumps({"log_to": ["mlflow"], "name": "r1"}))
    for given in (["--log-to", "wandb"], ["--log-to", "mlflow", "--log-to", "wandb"]):
        with pytest.raises(StudyError, match=r"--log-to .*run r1 logs to mlflow, fixed when it started"):
            resume.restore_args(_args(scene_count, tmp_path, "--resume", "--name", "r1", *given), scene_count.SPEC)
    for given in ([], ["--log-to", "mlflow"]):  # nothing typed, or what it started with
        args = resume.restore_args(_args(scene_count, tmp_path, "--resume", "--name", "r1", *given), scene_count.SPEC)
        assert args.log_to == ["mlflow"]
