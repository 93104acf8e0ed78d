import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from salgl_core.cli import add_config_arguments, config_from_args
from salgl_core.config import BACKBONES, DATASETS, FIELD_OWNER, ConfigError, ExperimentConfig
from salgl_core.train import _resolve_config, get_args_parser

REPO = Path(__file__).resolve().parents[1]


def _parser(**kw) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, **kw)
    return parser


def _option_help(parser: argparse.ArgumentParser, dest: str) -> str:
    return next(a.help for a in parser._actions if a.dest == dest)


def test_cli_has_a_flag_with_help_for_every_field():
    text = get_args_parser().format_help()
    for name in FIELD_OWNER:  # `recipe` included: it is the train script's own --recipe
        assert "--" + name.replace("_", "-") in text, name
    assert "HELP" not in text
    assert "--recipe" not in _parser().format_help()  # the recipe chooses the base; it is not an override
    parser = get_args_parser()
    args = parser.parse_args(["--num-scenes", "6", "--soft-assignment", "--backbone-weights", "none"])
    cfg = config_from_args(args)
    assert cfg.model.num_scenes == 6 and cfg.model.soft_assignment and cfg.model.backbone_weights is None
    assert cfg.data.dataset == "synthetic" and cfg.model.backbone == "small_cnn"  # synthetic preset below flags
    assert cfg.train.recipe == "synthetic"
    coco = config_from_args(parser.parse_args(["--dataset", "coco"]))
    assert coco.model.backbone == "resnet101" and coco.data.image_size == 448 and coco.train.batch_size == 128
    # --dataset coco alone means --recipe paper-coco-r101-448
    assert coco == config_from_args(parser.parse_args(["--recipe", "paper-coco-r101-448"]))
    assert coco.train.recipe == "paper-coco-r101-448" and coco.model.num_scenes == 6
    with pytest.raises(ConfigError, match="num_scenes"):
        config_from_args(parser.parse_args(["--num-scenes", "0"]))
    with pytest.raises(ConfigError, match=r"recipe 'paper-coco-r101-576' is for dataset 'coco', not 'nuswide'"):
        config_from_args(parser.parse_args(["--recipe", "paper-coco-r101-576", "--dataset", "nuswide"]))


def test_flags_take_types_choices_and_ranges_from_the_config():
    parser = _parser()
    choices = {a.dest: a.choices for a in parser._actions if a.choices is not None}
    assert choices["backbone"] == BACKBONES and choices["dataset"] == DATASETS
    assert choices["loss"] == ("asl", "bce")
    with pytest.raises(SystemExit):
        parser.parse_args(["--backbone", "vgg"])
    args = parser.parse_args(["--lr", "3e-4", "--epochs", "2", "--no-drop-last", "--data-root", "None"])
    assert (args.lr, args.epochs, args.drop_last, args.data_root) == (3e-4, 2, False, None)
    assert _option_help(parser, "num_scenes").endswith("(an integer >= 1; default: 4)")
    assert _option_help(parser, "comat_momentum").endswith("(a number in [0.0, 1.0]; default: 1.0)")
    assert _option_help(parser, "outmess").endswith("(default: False)")
    # Only typed flags land in the namespace, so the preset is not overwritten by defaults.
    assert vars(parser.parse_args([])) == {}


def test_only_exclude_and_shown_defaults():
    parser = _parser(only=("num_scenes", "lr"), shown_defaults={"lr": 2e-3})
    assert {a.dest for a in parser._actions} == {"help", "num_scenes", "lr"}
    assert _option_help(parser, "lr").endswith("default: 0.002)")
    assert _option_help(parser, "num_scenes").endswith("default: 4)")
    assert "backbone" not in {a.dest for a in _parser(exclude=("backbone",))._actions}


def test_train_help_names_the_real_command_and_shows_each_default_once():
    text = get_args_parser().format_help()
    assert text.startswith("usage: python -m salgl_core.train ")
    options = re.split(r"\n  (?=-)", text)[1:]  # each option's block of the help
    assert len(options) == len(get_args_parser()._actions)
    for block in options:
        assert re.sub(r"\s+", " ", block).count("default:") <= 1, block
    for action in get_args_parser()._actions:
        assert action.help, action.option_strings
    out = subprocess.run([sys.executable, "-m", "salgl_core.train", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.startswith("usage: python -m salgl_core.train ")


def test_train_config_resolution(tmp_path):
    parser = get_args_parser()
    saved = ExperimentConfig.from_flat({"dataset": "synthetic", "backbone": "small_cnn", "num_scenes": 6})
    saved.save(tmp_path / "config.json")
    # --config starts from a saved config; typed flags override it
    cfg, sources = _resolve_config(parser.parse_args(["--config", str(tmp_path / "config.json"), "--gnn-steps", "1"]))
    assert (cfg.model.num_scenes, cfg.model.gnn_steps, cfg.model.backbone) == (6, 1, "small_cnn")
    assert sources["num_scenes"] == f"config {tmp_path / 'config.json'}" and sources["gnn_steps"] == "flag --gnn-steps"
    with pytest.raises(ConfigError, match="pass only one"):
        _resolve_config(parser.parse_args(["--config", str(tmp_path / "config.json"), "--recipe", "synthetic"]))
    # --resume reads <out>/config.json and refuses flags that disagree with it
    cfg, _ = _resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--num-scenes", "6"]))
    assert cfg == saved
    with pytest.raises(ConfigError, match=r"--resume uses the config saved in .*'num_scenes': \(4, 6\)"):
        _resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--num-scenes", "4"]))
    with pytest.raises(ConfigError, match=r"'recipe': \('synthetic', None\)"):
        _resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--recipe", "synthetic"]))


def _train(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "salgl_core.train", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(name + " "))


def test_print_config_shows_the_recipe_and_each_source_without_running(tmp_path):
    out = _train("--recipe", "paper-coco-r101-448", "--print-config", "--lr", "3e-4", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for name, value in (("num_scenes", "6"), ("outmess", "true"), ("normalize_adjacency", "true"),
                        ("label_embedding", '"bert"'), ("randaugment", '"official"'), ("early_stop_patience", "6"),
                        ("amp", '"fp16"')):
        line = _line(text, name)
        assert f"= {value} " in line and "# recipe paper-coco-r101-448: " in line, line
    assert "UNOFF" in _line(text, "num_scenes") and "0.82^(1/641)" in _line(text, "ema_decay")
    assert _line(text, "lr").endswith("# flag --lr") and "= 0.0003 " in _line(text, "lr")
    assert _line(text, "gnn_steps").endswith("# default")
    assert '"paper-coco-r101-448"' in _line(text, "recipe") and "--recipe" in _line(text, "recipe")
    assert not (tmp_path / "r").exists() and "training SALGL" not in text  # nothing was run
    # --dataset coco alone resolves to the same recipe
    assert _line(_train("--dataset", "coco", "--print-config").stdout, "recipe").split("#")[0] == \
        _line(text, "recipe").split("#")[0]


@pytest.mark.slow
def test_recipe_and_embedding_mistakes_are_one_line(tmp_path):
    bad = _train("--recipe", "paper-coco", "--print-config")
    assert bad.returncode == 2 and "invalid choice: 'paper-coco'" in bad.stderr
    for name in ("paper-coco-r101-448", "paper-coco-r101-576", "paper-nuswide-r101-448", "paper-voc2007-r101-448"):
        assert name in bad.stderr
    bert = _train("--dataset", "synthetic", "--label-embedding", "bert", "--print-config")
    assert bert.returncode == 2 and "Traceback" not in bert.stderr
    assert "ships bert vectors for coco, nuswide, voc2007, not for dataset 'synthetic'" in bert.stderr
    # A recipe whose data is missing: the error names the files expected and where.
    voc = _train("--recipe", "paper-voc2007-r101-448", "--data-root", str(tmp_path / "voc"), "--out", str(tmp_path))
    assert voc.returncode == 2 and str(tmp_path / "voc") in voc.stderr and "VOCdevkit/VOC2007" in voc.stderr
    coco = _train("--recipe", "paper-coco-r101-448", "--out", str(tmp_path))
    assert coco.returncode == 2 and "--data-root" in coco.stderr and "Traceback" not in coco.stderr


def test_help_shows_the_defaults_of_the_recipe_it_will_use():
    synthetic = get_args_parser()
    assert _option_help(synthetic, "num_scenes").endswith("default: 4)")
    assert _option_help(synthetic, "backbone").endswith("default: small_cnn)")
    assert "defaults: the synthetic preset, used without --dataset/--recipe" in synthetic.format_help()
    for argv in (["--recipe", "paper-coco-r101-576"], ["--dataset", "coco"]):
        coco = get_args_parser(argv=argv)
        assert _option_help(coco, "num_scenes").endswith("default: 6)")
        assert _option_help(coco, "label_embedding").endswith("default: bert)")
        assert _option_help(coco, "image_size").endswith("default: 576)" if "--recipe" in argv else "default: 448)")
    text = synthetic.format_help()
    assert "recipes (salgl_core/presets.py" in text and "paper-nuswide-r101-448: NUS-WIDE" in text
    out = _train("--recipe", "paper-voc2007-r101-448", "--help")
    assert out.returncode == 0 and "(defaults: recipe paper-voc2007-r101-448)" in out.stdout


@pytest.mark.parametrize("has_out", [True, False])
def test_resume_without_a_checkpoint_is_refused_not_a_fresh_run(tmp_path, has_out):
    """`--resume` on a folder with no checkpoint.pt (a typo, the wrong folder) says so instead of training afresh."""
    argv = [sys.executable, "-m", "salgl_core.train", "--resume", *(["--out", str(tmp_path)] if has_out else [])]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: --resume continues a run from its checkpoint.pt")
    assert "training" not in out.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_flag_the_recipe_would_ignore_is_refused(capsys):
    """The paper recipes' per-epoch EMA rule sets the per-step decay: a typed --ema-decay would do nothing."""
    from salgl_core.train import main

    parser = get_args_parser()
    assert main(parser.parse_args(["--recipe", "paper-coco-r101-448", "--ema-decay", "0.999", "--print-config"])) == 2
    assert "ema_decay is not used while ema_epoch_retention = 0.82" in capsys.readouterr().err
    assert main(parser.parse_args(["--recipe", "paper-coco-r101-448", "--ema-decay", "0.999",
                                   "--ema-epoch-retention", "0", "--print-config"])) == 0
