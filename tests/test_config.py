import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from salgl_core.config import (
    AUTO_WORKERS,
    BACKBONES,
    CP_CR_RULES,
    DATA_PATH_FIELDS,
    DATASETS,
    FIELD_OWNER,
    PATH,
    RANDAUGMENT_POLICIES,
    SHIPPED_EMBEDDING_KINDS,
    SHIPPED_EMBEDDINGS_DIR,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OneOf,
    Range,
    TrainConfig,
    check_field,
    field_spec,
    field_type,
)
from salgl_core.data import available_cpus
from salgl_core.presets import paper_preset, synthetic_preset


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
    (ModelConfig, "backbone", "vgg"), (ModelConfig, "loss", "focal"), (ModelConfig, "label_embedding", "word2vec"),
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



@pytest.mark.parametrize("cls,field,value,expected", [
    (ModelConfig, "num_scenes", 0, "an integer >= 1"),
    (DataConfig, "image_size", 4, "an integer in [32, 2048]"),
    (TrainConfig, "lr", 0.0, "a number in (0.0, inf)"),
    (ModelConfig, "comat_momentum", float("nan"), "a number in [0.0, 1.0]"),
    (TrainConfig, "amp", "fp8", "one of ['none', 'bf16', 'fp16']"),
    (TrainConfig, "epochs", True, "an integer >= 1"),  # a bool is not an integer here
    (DataConfig, "data_root", "", "None or a path"),
    (ModelConfig, "outmess", 1, "true or false"),
    (TrainConfig, "device", "tpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (DataConfig, "randaugment", True, "one of ['official', 'torchvision', 'none']"),
    (TrainConfig, "cp_cr_rule", "clamp", "one of ['official_clamp', 'zero_if_undefined']"),
    (TrainConfig, "recipe", "paper-coco", "None or a recipe name from salgl_core/presets.py (python -m "
                                          "salgl_core.train --help lists them)"),
])
def test_messages_state_the_declared_range_or_choices(cls, field, value, expected):
    with pytest.raises(ConfigError) as e:
        cls(**{field: value})
    assert str(e.value) == f"{cls.__name__}.{field} = {value!r} is invalid: expected {expected}"


def test_optional_fields_accept_none():
    assert DataConfig(data_root=None).data_root is None and ModelConfig(backbone_weights=None).backbone_weights is None


def test_field_types_come_from_the_annotations():
    assert [field_type(n) for n in ("num_scenes", "lr", "outmess", "loss", "data_root", "backbone_weights")] == \
        [int, float, bool, str, str, str]
    assert field_spec("data_root").optional and not field_spec("loss").optional
    assert all(field_type(n) in (int, float, bool, str) for n in FIELD_OWNER)
    with pytest.raises(ConfigError, match="unknown config field 'num_scene'"):
        field_type("num_scene")


def test_each_field_declares_its_check_once():
    assert field_spec("num_scenes").check == Range(1)
    assert field_spec("backbone").check == OneOf(BACKBONES) and field_spec("dataset").check == OneOf(DATASETS)
    assert DATA_PATH_FIELDS == tuple(n for n in FIELD_OWNER if field_spec(n).check is PATH)
    assert DATA_PATH_FIELDS[0] == "data_root" and "cache_dir" in DATA_PATH_FIELDS
    # Range checks sit on numeric fields only.
    assert all(field_type(n) in (int, float) for n in FIELD_OWNER if isinstance(field_spec(n).check, Range))


def test_config_presets_and_io_do_not_import_torch():
    # The results schema and the dashboard import the config; they must stay torch-free.
    code = ("import sys, salgl_core.config, salgl_core.presets, salgl_core.io, salgl_core.registry; "
            "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout


def test_new_fields_defaults_and_legacy_randaugment(tmp_path):
    cfg = ExperimentConfig()
    assert (cfg.data.randaugment, cfg.train.ema_warmup, cfg.train.cp_cr_rule, cfg.train.recipe) == (
        "official", False, "official_clamp", None)
    assert cfg.model.label_embedding == "learned"
    for kind in ("bert", "glove", "learned", "random", "vectors/bert.npy"):
        assert ModelConfig(label_embedding=kind).label_embedding == kind
    # The default worker count is auto (-1), chosen when the run starts (salgl_core.data.resolve_num_workers), not
    # the CPUs of the process that built the config: a study's driver writes it into every trial's config.
    assert DataConfig().num_workers == AUTO_WORKERS == -1 and available_cpus() >= 1
    assert DataConfig(num_workers=3).num_workers == 3  # config files with explicit counts keep them
    with pytest.raises(ConfigError, match=r"num_workers = -2 is invalid: expected an integer >= -1"):
        DataConfig(num_workers=-2)
    # config.json written before the named policies held a boolean; True was torchvision's RandAugment.
    for old, new in ((True, "torchvision"), (False, "none")):
        flat = {**ExperimentConfig().to_flat(), "randaugment": old}
        (tmp_path / "config.json").write_text(json.dumps(flat))
        assert ExperimentConfig.load(tmp_path / "config.json").data.randaugment == new
    old = {k: v for k, v in ExperimentConfig().to_flat().items() if k not in ("recipe", "ema_warmup", "cp_cr_rule")}
    assert ExperimentConfig.from_flat(old) == ExperimentConfig()  # older files lack the new fields


def test_torch_free_names_match_the_torch_side_modules():
    from salgl_core.data.transforms import RANDAUGMENT_POLICIES as TRANSFORM_POLICIES
    from salgl_core.embeddings import NAMED_KINDS, SHIPPED_DIR
    from salgl_core.metrics import CP_CR_RULES as METRIC_RULES

    assert RANDAUGMENT_POLICIES == TRANSFORM_POLICIES and CP_CR_RULES == METRIC_RULES
    assert SHIPPED_EMBEDDINGS_DIR == SHIPPED_DIR and SHIPPED_EMBEDDING_KINDS == NAMED_KINDS


def test_shipped_label_vectors_exist_for_some_datasets_only():
    voc = ExperimentConfig.from_flat({"dataset": "voc2007", "label_embedding": "glove"})
    assert voc.model.label_embedding == "glove"
    with pytest.raises(ConfigError, match=r"ships bert vectors for coco, nuswide, voc2007, not for dataset 'synth"):
        ExperimentConfig.from_flat({"dataset": "synthetic", "label_embedding": "bert"})


def test_scene_source_rules_across_sections():
    assert ModelConfig().scene_source == "learned"
    with pytest.raises(ConfigError, match=r"ModelConfig\.scene_source = 'madeup'.*\['learned', 'oracle', 'random'\]"):
        ModelConfig(scene_source="madeup")
    for dataset in ("coco", "voc2007", "nuswide"):  # only the synthetic data records true scenes
        with pytest.raises(ConfigError, match=rf"scene_source = 'oracle'.*not dataset '{dataset}'.*'learned' or "):
            ExperimentConfig.from_flat({"dataset": dataset, "scene_source": "oracle"})
        assert ExperimentConfig.from_flat({"dataset": dataset, "scene_source": "random"}).model.num_scenes == 4
    with pytest.raises(ConfigError, match=r"num_scenes = 4 must equal DataConfig\.synthetic_scenes = 3"):
        ExperimentConfig.from_flat({**synthetic_preset(), "synthetic_scenes": 3, "scene_source": "oracle"})
    ok = ExperimentConfig.from_flat({**synthetic_preset(), "synthetic_scenes": 3, "num_scenes": 3,
                                     "scene_source": "oracle"})
    assert ok.model.scene_source == "oracle"
    assert ExperimentConfig.from_flat({**synthetic_preset(), "num_scenes": 7, "scene_source": "random"})
    # --help must say that the oracle is a ceiling, not a competitor
    assert "upper bound" in field_spec("scene_source").help and "evaluation time" in field_spec("scene_source").help


def test_check_field_types_one_value_and_names_what_the_field_takes():
    assert check_field("num_scenes", 4.0) == 4 and isinstance(check_field("lr", 1), float)
    with pytest.raises(ConfigError, match=r"^gnn_steps = -1 is invalid: expected an integer >= 0$"):
        check_field("gnn_steps", -1)
    with pytest.raises(ConfigError, match=r"unknown config fields 'num_scene' \(did you mean num_scenes\?\); 'qq'"):
        ExperimentConfig.from_flat({"num_scene": 2, "qq": 1})
