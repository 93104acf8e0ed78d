import argparse
import json
from dataclasses import fields

import pytest

from salgl_core.cli import add_config_arguments, config_from_args
from salgl_core.config import (
    FIELD_OWNER,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    paper_preset,
    synthetic_preset,
)


def test_paper_defaults():
    cfg = ExperimentConfig()
    assert (cfg.model.backbone, cfg.model.num_scenes, cfg.model.gnn_steps) == ("resnet101", 4, 3)
    assert cfg.model.comat_momentum == 1.0 and not cfg.model.soft_assignment and cfg.model.att_dim == 1024
    assert (cfg.model.asl_gamma_neg, cfg.model.asl_gamma_pos, cfg.model.asl_eps) == (2.0, 0.0, 1e-5)
    assert cfg.model.batch_entropy_scale == 100.0 and cfg.model.loss_scale == 1000.0
    assert (cfg.data.image_size, cfg.train.batch_size, cfg.train.epochs) == (448, 128, 80)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.pct_start, cfg.train.ema_decay) == (1e-4, 1e-2, 0.2, 0.9997)


@pytest.mark.parametrize("cls,field,value", [
    (ModelConfig, "num_scenes", 0), (ModelConfig, "gnn_steps", -1), (ModelConfig, "comat_momentum", 1.5),
    (ModelConfig, "backbone", "vgg"), (ModelConfig, "loss", "focal"), (ModelConfig, "label_embedding", "bert"),
    (ModelConfig, "soft_assignment", "yes"), (DataConfig, "dataset", "imagenet"), (DataConfig, "image_size", 4),
    (TrainConfig, "lr", 0.0), (TrainConfig, "amp", "fp8"), (TrainConfig, "device", "tpu"),
    (ModelConfig, "num_scenes", 2.5),
])
def test_validation_names_field_value_and_range(cls, field, value):
    with pytest.raises(ConfigError) as e:
        cls(**{field: value})
    msg = str(e.value)
    assert f"{cls.__name__}.{field}" in msg and repr(value) in msg and "expected" in msg


def test_flat_round_trip_and_unknown_keys(tmp_path):
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), "num_scenes": 6})
    path = tmp_path / "config.json"
    cfg.save(path)
    assert ExperimentConfig.load(path) == cfg
    assert json.loads(path.read_text())["num_scenes"] == 6
    with pytest.raises(ConfigError, match="unknown config field"):
        ExperimentConfig.from_flat({"num_scene": 4})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ExperimentConfig.load(tmp_path / "bad.json")


def test_integer_fields_accept_integral_floats():
    assert ModelConfig(num_scenes=4.0).num_scenes == 4
    assert isinstance(ModelConfig(comat_momentum=1).comat_momentum, float)


def test_field_names_are_unique_and_presets_are_valid():
    assert len(FIELD_OWNER) == sum(len(fields(c)) for c in (ModelConfig, DataConfig, TrainConfig))
    ExperimentConfig.from_flat(synthetic_preset())
    for ds in ("coco", "voc2007", "nuswide"):
        assert ExperimentConfig.from_flat(paper_preset(ds)).model.backbone == "resnet101"


def test_cli_has_a_flag_with_help_for_every_field():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
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
