"""salgl_core/presets.py: every recipe is a valid, fully sourced configuration; the paper's values per dataset."""

from __future__ import annotations

import csv
from pathlib import Path

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

PAPER_RECIPES = ("paper-coco-r101-448", "paper-coco-r101-576", "paper-nuswide-r101-448", "paper-voc2007-r101-448",
                 "paper-voc2007-from-coco-r101-448")


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
                      "ema_epoch_retention", "early_stop_patience", "amp"):
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


def test_the_paper_recipes_keep_the_ema_rule_per_epoch():
    """UNOFF's rule, 0.82 per epoch, turned into the per-step decay at fit time; its constant stays recorded as
    ema_decay (used only with retention 0). The synthetic preset keeps its constant decay with warm-up."""
    for name in PAPER_RECIPES:
        c, src = recipe_config(name), RECIPES[name].sources()
        assert c["ema_epoch_retention"] == 0.82, name
        assert src["ema_epoch_retention"].startswith("0.82 per epoch -> per-step 0.82^(1/iters) at fit time")
        assert "UNOFF utils/util.py get_ema_co" in src["ema_epoch_retention"]
        assert src["ema_decay"].startswith("unused while ema_epoch_retention is set")
    syn = recipe_config("synthetic")
    assert (syn["ema_epoch_retention"], syn["ema_decay"], syn["ema_warmup"]) == (0.0, 0.99, True)
    assert ExperimentConfig().train.ema_epoch_retention == 0.0  # the dataclass default: OFF's constant 0.9997


def test_voc_from_coco_is_the_voc_recipe_started_from_a_coco_run():
    from salgl_core.presets import check_needs

    r = RECIPES["paper-voc2007-from-coco-r101-448"]
    voc, c = recipe_config("paper-voc2007-r101-448"), recipe_config(r.name)
    assert r.dataset == "voc2007" and r.paper
    # The same settings as UNOFF's VOC 2007 config, but no ImageNet weights (the backbone comes from the run).
    assert {k: v for k, v in c.items() if c[k] != voc[k]} == {"backbone_weights": None, "recipe": r.name}
    assert c["init_from"] is None and set(r.needs) == {"init_from"}
    assert "no default" in r.sources()["init_from"] and "VOC 2007 pretrain on COCO" in r.sources()["init_from"]
    with pytest.raises(ConfigError, match=r"^recipe paper-voc2007-from-coco-r101-448 needs init_from: --init-from "
                                          r"RUN, the COCO run to fine-tune from \(a paper-coco-r101-448 run's folder"):
        check_needs(ExperimentConfig.from_flat(r.overrides()))
    check_needs(ExperimentConfig.from_flat({**r.overrides(), "init_from": "runs/coco"}))
    check_needs(ExperimentConfig.from_flat(get_recipe("paper-voc2007-r101-448").overrides()))  # needs nothing


VIT_RECIPES = {"paper-coco-vitl16-448-in1k": "jx_vit_large_p16_224-4ee7a4dc.pth",
               "paper-coco-vitl16-448-in22k": "timm:vit_large_patch16_224.augreg_in21k"}
REPO = Path(__file__).resolve().parents[1]


def test_the_vit_recipes_are_the_resnet_recipe_with_the_papers_vit():
    """Only the backbone, its weights, the size and the head are known for ViT (PAPER, OFF); everything else is the
    ResNet-101 COCO recipe's, and each such source says so."""
    r101 = recipe_config("paper-coco-r101-448")
    known = {"dataset", "image_size", "label_embedding", "randaugment", "backbone", "backbone_weights", "att_dim",
             "enc_heads", "enc_ffn"}
    for name, weights in VIT_RECIPES.items():
        r, c = RECIPES[name], recipe_config(name)
        assert r.dataset == "coco" and r.paper
        assert {k: v for k, v in c.items() if v != r101[k]} == {"backbone": "vit_large_patch16",
                                                                 "backbone_weights": weights, "recipe": name}
        assert (c["image_size"], c["att_dim"], c["enc_heads"], c["enc_ffn"], c["lr"]) == (448, 1024, 8, 2048, 1e-4)
        src = r.sources()
        for field, source in src.items():
            unknown = source.startswith("not found for ViT in PAPER/OFF/UNOFF: kept from the ResNet-101 recipe")
            assert unknown == (field not in known), (field, source)
        assert set(src) - known >= {"lr", "weight_decay", "batch_size", "num_scenes", "epochs", "ema_decay"}
        assert "OFF" in src["backbone_weights"] and "PAPER" in src["image_size"] and "OFF" in src["att_dim"]


def _paper_csv(name: str) -> list[dict[str, str]]:
    with open(REPO / "results" / "paper" / name, newline="") as f:
        return list(csv.DictReader(f))


def test_every_published_salgl_number_has_a_recipe_that_targets_it():
    targets = {(r.dataset, c["backbone"], c["image_size"], r.target.pretrain): r.target
               for r in RECIPES.values() if r.target for c in [r.config()]}
    salgl = [row for row in _paper_csv("coco_comparison.csv") if row["is_salgl"] == "true"]
    repro = _paper_csv("reproductions.csv")
    assert len(salgl) == 4 and len(repro) == 4
    for row in salgl:
        key = (row["dataset"], row["backbone"], int(row["resolution"]), row["pretrain"])
        assert key in targets and targets[key].mAP == float(row["mAP"]), key
    for row in repro:  # no pretrain column: ImageNet ResNet-101 runs
        assert (row["dataset"], row["backbone"], int(row["resolution"]), "ImageNet-1k") in targets, row
    author = next(r for r in repro if r["dataset"] == "nuswide" and r["who"].startswith("author checkpoint"))
    assert RECIPES["paper-nuswide-r101-448"].target.mAP == float(author["mAP"]) == 66.34
    published = {float(r["mAP"]) for r in salgl + repro}
    assert all(t.mAP in published and t.source for t in targets.values())
    assert RECIPES["synthetic"].target is None and RECIPES["paper-voc2007-r101-448"].target is None


def test_list_recipes_prints_each_recipes_setting_and_target(capsys):
    from salgl_core.train import get_args_parser, main

    assert main(get_args_parser(argv=["--list-recipes"]).parse_args(["--list-recipes"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["recipe", "dataset", "backbone", "size", "weights", "target"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert list(rows) == list(RECIPES)
    assert rows["paper-coco-vitl16-448-in22k"].split()[1:6] == [
        "coco", "vit_large_patch16", "448", "timm:vit_large_patch16_224.augreg_in21k", "90.1"]
    assert rows["paper-coco-vitl16-448-in1k"].endswith("87.6 mAP (PAPER COCO 2014 table, SALGL ViT-L16 448x448 row)")
    assert rows["paper-coco-r101-576"].split()[1:6] == ["coco", "resnet101", "576", "IMAGENET1K_V1", "87.3"]
    assert rows["synthetic"].split()[1:5] == ["synthetic", "small_cnn", "64", "none"]
    assert rows["synthetic"].endswith("none published for this setting")


def test_the_screening_recipe_is_the_coco_head_on_a_frozen_cached_r101_at_224():
    """screen-coco-r101-224: the COCO recipe's head on a frozen ImageNet ResNet-101 at 224 px, its tokens cached once
    in float16; every value it changes is ours and says so, and its summary says what its verdicts are."""
    from salgl_core.features import check_cache_size

    r, c, coco = RECIPES["screen-coco-r101-224"], recipe_config("screen-coco-r101-224"), recipe_config(
        "paper-coco-r101-448")
    # No published number; a study's reference value (K = 6) is still the paper's configuration.
    assert r.dataset == "coco" and r.target is None and r.reference == "the paper's configuration"
    head = ("num_scenes", "outmess", "normalize_adjacency", "label_embedding", "gnn_steps", "att_dim", "enc_layers",
            "enc_heads", "enc_ffn", "loss", "lr", "weight_decay", "batch_size", "ema_epoch_retention", "amp",
            "backbone", "backbone_weights", "early_stop_patience")
    assert {k: c[k] for k in head} == {k: coco[k] for k in head}
    assert (c["num_scenes"], c["outmess"], c["normalize_adjacency"], c["label_embedding"]) == (6, True, True, "bert")
    changed = {k: v for k, v in c.items() if v != coco[k]}
    assert changed == {"recipe": r.name, "image_size": 224, "freeze_backbone": True, "feature_cache": True,
                       "feature_cache_dtype": "float16", "epochs": 12, "randaugment": "none", "cutout": False}
    src = r.sources()
    assert all(src[k].startswith("ours, screening (not the paper's)") for k in changed if k not in ("recipe", "epochs"))
    assert src["epochs"].startswith("ours, an estimate") and "epoch 21" in src["epochs"]
    assert "A screening verdict is a screening verdict, not the paper's number" in r.summary
    # Its cache fits the size limit: COCO 2014 (82,783 + 40,504 images) x 2048 x 7 x 7 tokens in float16, 24.7 GB.
    assert check_cache_size(ExperimentConfig.from_flat(r.overrides()), 123_287, (2048, 7, 7)) == 24_744_194_048
