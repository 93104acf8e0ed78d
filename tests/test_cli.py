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
    parser = _parser()
    text = parser.format_help()
    for name in FIELD_OWNER:
        assert "--" + name.replace("_", "-") in text, name
    assert "HELP" not in text
    args = parser.parse_args(["--num-scenes", "6", "--soft-assignment", "--backbone-weights", "none"])
    cfg = config_from_args(args)
    assert cfg.model.num_scenes == 6 and cfg.model.soft_assignment and cfg.model.backbone_weights is None
    assert cfg.data.dataset == "synthetic" and cfg.model.backbone == "small_cnn"  # synthetic preset below flags
    coco = config_from_args(parser.parse_args(["--dataset", "coco"]))
    assert coco.model.backbone == "resnet101" and coco.data.image_size == 448 and coco.train.batch_size == 128
    with pytest.raises(ConfigError, match="num_scenes"):
        config_from_args(parser.parse_args(["--num-scenes", "0"]))


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
    cfg = _resolve_config(parser.parse_args(["--config", str(tmp_path / "config.json"), "--gnn-steps", "1"]))
    assert (cfg.model.num_scenes, cfg.model.gnn_steps, cfg.model.backbone) == (6, 1, "small_cnn")
    # --resume reads <out>/config.json and refuses flags that disagree with it
    cfg = _resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--num-scenes", "6"]))
    assert cfg == saved
    with pytest.raises(ConfigError, match=r"--resume uses the config saved in .*'num_scenes': \(4, 6\)"):
        _resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--num-scenes", "4"]))
