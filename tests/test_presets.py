"""salgl_core/presets.py: every recipe is a valid, fully sourced configuration; the paper's values per dataset."""

from __future__ import annotations

import numpy as np
import pytest

from salgl_core.config import DATASETS, FIELD_OWNER, ConfigError, ExperimentConfig, ModelConfig
from salgl_core.presets import (
    RECIPES,
    SMOKE,
    STUDY_SYNTHETIC,
    choose_recipe,
    dataset_preset,
    default_recipe_name,
    get_recipe,
    paper_preset,
    recipe_config,
    synthetic_preset,
)

PAPER_RECIPES = ("paper-coco-r101-448", "paper-coco-r101-576", "paper-nuswide-r101-448", "paper-voc2007-r101-448")


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_validates_and_sources_every_value(name):
    r = RECIPES[name]
    assert r.name == name and r.summary
    cfg = ExperimentConfig.from_flat(r.overrides())
    assert cfg.train.recipe == name and cfg.data.dataset == r.dataset
    assert set(r.sources()) == set(r.settings) <= set(FIELD_OWNER)
    for field, source in r.sources().items():
        assert isinstance(source, str) and len(source) > 10 and "\n" not in source, (field, source)
    assert recipe_config(name) == cfg.to_flat()


def test_the_paper_recipes_set_what_the_published_numbers_most_likely_used():
    assert set(PAPER_RECIPES) <= set(RECIPES)
    for name in PAPER_RECIPES:
        c, r = recipe_config(name), RECIPES[name]
        assert r.paper and r.reference == "the paper's configuration"
        assert (c["backbone"], c["outmess"], c["normalize_adjacency"], c["label_embedding"]) == (
            "resnet101", True, True, "bert")
        assert (c["randaugment"], c["batch_size"], c["epochs"], c["early_stop_patience"], c["amp"]) == (
            "official", 128, 80, 6, "fp16")
        # Every value the recipe sets that differs from the official argparse says where it comes from.
        for field in ("num_scenes", "outmess", "normalize_adjacency", "label_embedding", "ema_decay",
                      "early_stop_patience", "amp"):
            assert "UNOFF" in r.sources()[field] or "OFF" in r.sources()[field], field
    coco = recipe_config("paper-coco-r101-448")
    assert (coco["dataset"], coco["num_scenes"], coco["image_size"]) == ("coco", 6, 448)
    assert coco["ema_decay"] == pytest.approx(0.82 ** (1 / 641)) == pytest.approx(0.99969, abs=1e-5)
    assert recipe_config("paper-coco-r101-576")["image_size"] == 576
    nus = recipe_config("paper-nuswide-r101-448")
    assert nus["num_scenes"] == 2 and nus["ema_decay"] == pytest.approx(0.82 ** (1 / 980))
    voc = recipe_config("paper-voc2007-r101-448")
    assert voc["num_scenes"] == 6 and voc["ema_decay"] == pytest.approx(0.82 ** (1 / 39), abs=1e-12)
    # The rest stays at the official argparse defaults.
    assert (coco["lr"], coco["weight_decay"], coco["gnn_steps"], coco["att_dim"]) == (1e-4, 1e-2, 3, 1024)


def test_the_synthetic_preset_is_not_the_papers():
    r = RECIPES["synthetic"]
    assert not r.paper and r.reference == "the synthetic preset's configuration"
    c = recipe_config("synthetic")
    assert (c["backbone"], c["image_size"], c["num_scenes"], c["lr"]) == ("small_cnn", 64, 4, 2e-3)
    assert c["ema_warmup"] and c["randaugment"] == "none" and c["label_embedding"] == "learned"
    assert all(src.startswith(("ours", "OFF")) for src in r.sources().values())
    ExperimentConfig.from_flat({**synthetic_preset(), **STUDY_SYNTHETIC, **SMOKE})


def test_dataset_alone_means_its_paper_recipe():
    assert [default_recipe_name(d) for d in DATASETS] == [
        "synthetic" if d == "synthetic" else f"paper-{d}-r101-448" for d in DATASETS]
    assert choose_recipe(None, None).name == "synthetic" and choose_recipe(None, "coco").name == "paper-coco-r101-448"
    assert choose_recipe("paper-coco-r101-576", "coco").name == "paper-coco-r101-576"
    assert dataset_preset("coco") == paper_preset("coco") == get_recipe("paper-coco-r101-448").overrides()
    assert dataset_preset("synthetic") == synthetic_preset()
    assert recipe_config(None) == ExperimentConfig().to_flat()


def test_recipe_mistakes_say_what_exists():
    with pytest.raises(ConfigError) as e:
        get_recipe("paper-coco")
    assert "unknown recipe 'paper-coco'; known recipes: " in str(e.value)
    for name in RECIPES:
        assert name in str(e.value)
    with pytest.raises(ConfigError, match=r"'voc2007', not 'coco'.*coco: paper-coco-r101-448, paper-coco-r101-576"):
        choose_recipe("paper-voc2007-r101-448", "coco")
    with pytest.raises(ConfigError, match="the paper has no recipe for the synthetic dataset"):
        paper_preset("synthetic")
    with pytest.raises(ConfigError, match=r"TrainConfig.recipe = 'mine' is invalid"):
        ExperimentConfig.from_flat({"recipe": "mine"})


def test_shipped_vectors_are_checked_against_the_dataset(tmp_path):
    """The recipes' 'bert' resolves to the shipped vectors of the dataset; a file whose rows do not match
    the classes names both numbers."""
    from salgl_core.embeddings import LabelEmbeddingError, shipped_class_names
    from salgl_core.model import build_model

    small = {"backbone": "small_cnn", "backbone_weights": None, "att_dim": 16, "enc_heads": 2, "enc_ffn": 32}
    names = shipped_class_names("voc2007")
    model = build_model(ModelConfig(**small, label_embedding="bert"), len(names), "voc2007", names)
    assert tuple(model.label_embedding.weight.shape) == (20, 768)
    with pytest.raises(LabelEmbeddingError, match=r"have 80 rows but the dataset has 20 classes"):
        build_model(ModelConfig(**small, label_embedding="bert"), 20, "coco")
    with pytest.raises(LabelEmbeddingError, match=r"position 0 is 'bicycle', the vectors expect 'aeroplane'"):
        build_model(ModelConfig(**small, label_embedding="bert"), 20, "voc2007", [*names[1:], names[0]])
    path = tmp_path / "vectors.npy"
    np.save(path, np.zeros((7, 4), dtype=np.float32))
    with pytest.raises(LabelEmbeddingError, match=r"have 7 rows but the dataset has 20 classes"):
        build_model(ModelConfig(**small, label_embedding=str(path)), 20)
