"""studies/tuning/plan.py: the base config (preset < --smoke < flags < --set), GridPlan and SearchPlan."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution

from salgl_core.config import ConfigError
from salgl_core.presets import SMOKE, STUDY_SYNTHETIC, recipe_config, synthetic_preset
from studies import graph_depth, mechanism, momentum, scene_count, visibility
from studies import tune as tune_study
from studies.design.spec import ARM, StudyError, arm_config
from studies.tuning.plan import GridPlan, SearchPlan, base_config, make_plan, study_json

COCO = recipe_config("paper-coco-r101-448")
SYNTHETIC = recipe_config("synthetic")


def _args(module, tmp: Path, *argv: str):
    return module.get_args_parser().parse_args(
        [*argv, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray")])


def test_defaults_and_the_paper_value_always_in_the_grid(tmp_path):
    plan = make_plan(_args(scene_count, tmp_path), scene_count.SPEC)
    assert isinstance(plan, GridPlan)
    assert plan.values == [1, 2, 4, 8] and plan.seeds == [0, 1, 2] and plan.num_samples == 12
    assert plan.base["dataset"] == "synthetic" and plan.base["backbone"] == "small_cnn"
    plan = make_plan(_args(graph_depth, tmp_path, "--values", "1", "0"), graph_depth.SPEC)
    assert plan.values == [0, 1, SYNTHETIC["gnn_steps"]] and plan.paper_config == {"gnn_steps": 3}
    plan = make_plan(_args(momentum, tmp_path, "--smoke"), momentum.SPEC)
    assert plan.values == [0.0, 1.0] and plan.seeds == [0]
    # --dataset coco with no other override is the paper's recipe.
    plan = make_plan(_args(scene_count, tmp_path, "--dataset", "coco"), scene_count.SPEC)
    assert {k: plan.base[k] for k in ("backbone", "image_size", "batch_size", "epochs", "lr")} == {
        "backbone": "resnet101", "image_size": 448, "batch_size": 128, "epochs": 80, "lr": 1e-4}
    assert plan.base == COCO
    # The joint search's first point is the recipe's (here the synthetic preset's lr, not the --set one),
    # and the lr range reaches both.
    plan = make_plan(_args(tune_study, tmp_path, "--set", "lr=0.01"), tune_study.SPEC)
    assert isinstance(plan, SearchPlan)
    assert plan.points[0]["lr"] == SYNTHETIC["lr"] == 2e-3
    assert (plan.space["lr"].low, plan.space["lr"].high) == (pytest.approx(2e-4), pytest.approx(0.1))
    assert plan.paper_config["num_scenes"] == SYNTHETIC["num_scenes"] and plan.num_samples == 16
    # ASHA's rungs stay below the last epoch (8 synthetic epochs: decisions after epochs 2 and 6).
    assert plan.asha == {"time_attr": "training_iteration", "grace_period": 2, "max_t": 7, "reduction_factor": 3.0}
    assert make_plan(_args(tune_study, tmp_path, "--smoke"), tune_study.SPEC).asha is None  # 1 epoch


def test_the_base_config_layers(tmp_path):
    """The synthetic preset, then the studies' sizing, then --smoke, then the flags, then --set."""
    base, explicit_device = base_config(_args(scene_count, tmp_path))
    assert {k: base[k] for k in STUDY_SYNTHETIC} == STUDY_SYNTHETIC and not explicit_device
    assert base["backbone"] == synthetic_preset()["backbone"]
    base, _ = base_config(_args(scene_count, tmp_path, "--smoke", "--epochs", "3"))
    assert base["synthetic_train_images"] == SMOKE["synthetic_train_images"] and base["epochs"] == 3
    # --smoke trains end to end: nothing to pretrain or cache before its seconds-long trials.
    assert (base["freeze_backbone"], base["backbone_weights"], base["feature_cache"]) == (False, None, False)
    base, explicit_device = base_config(_args(scene_count, tmp_path, "--smoke", "--epochs", "3", "--set", "epochs=4",
                                              "--set", "device=cpu"))
    assert base["epochs"] == 4 and explicit_device


def test_grid_and_search_plans_describe_themselves(tmp_path):
    grid = make_plan(_args(scene_count, tmp_path, "--values", "1", "4", "--seeds", "3"), scene_count.SPEC)
    assert (grid.sampler, grid.scheduler, grid.points) == ("GridSampler", "FIFO", [])
    assert grid.study_keys() == {"axis": "num_scenes", "axis_values": [1, 4]}
    assert grid.grid() == {"num_scenes": [1, 4], "seed": [3]}
    assert grid.space == {"num_scenes": CategoricalDistribution([1, 4]), "seed": CategoricalDistribution([3])}
    assert grid.trial_label({"num_scenes": 4, "seed": 3}) == "num_scenes=4 "
    search = make_plan(_args(tune_study, tmp_path), tune_study.SPEC)
    assert (search.sampler, search.scheduler) == ("TPESampler", "ASHA")
    keys = search.study_keys()
    assert (keys["axis"], keys["axis_values"], keys["asha"]) == (None, None, search.asha)
    assert keys["search_space"]["num_scenes"] == {"type": "choice", "values": [1, 2, 4, 6, 8]}
    assert keys["search_space"]["lr"]["type"] == "loguniform" and keys["search_space"]["gnn_steps"]["type"] == "int"
    assert search.trial_label({"seed": 0}) == ""
    no_asha = make_plan(_args(tune_study, tmp_path, "--smoke"), tune_study.SPEC)
    assert no_asha.scheduler == "FIFO" and "asha" not in no_asha.study_keys()


def test_the_trials_device_follows_the_resources(tmp_path):
    plan = make_plan(_args(scene_count, tmp_path), scene_count.SPEC)
    assert plan.trial_base(0.0)["device"] == "cpu" and plan.trial_base(0.5)["device"] == "auto"
    assert plan.base["device"] == "cpu"  # the plan itself is not changed
    plan = make_plan(_args(scene_count, tmp_path, "--set", "device=cuda"), scene_count.SPEC)
    assert plan.trial_base(0.0)["device"] == "cuda"  # --set device wins


def test_device_indices_get_a_note_at_plan_time(tmp_path):
    """--set device=cuda:1 reaches the trials as it is (each maps it to its own GPU: test_trial_resources.py); the
    driver says once that the index is per trial."""
    plan = make_plan(_args(scene_count, tmp_path, "--set", "device=cuda:1"), scene_count.SPEC)
    assert plan.trial_base(1.0)["device"] == "cuda:1"
    note = plan.device_note()
    assert note is not None and note.startswith("note: device cuda:1: each trial sees only the GPU(s) Ray gives it")
    for argv in ((), ("--set", "device=cuda"), ("--set", "device=cpu")):
        assert make_plan(_args(scene_count, tmp_path, *argv), scene_count.SPEC).device_note() is None


def test_the_trials_get_auto_workers_not_the_drivers_count(tmp_path, monkeypatch):
    """num_workers auto (-1) reaches every trial, which sizes its loader from its own CPUs; the driver's CPU count
    is not what they get. A typed --num-workers and a preset's explicit count stay as they are."""
    monkeypatch.setattr("salgl_core.data.available_cpus", lambda: 2)  # a 2-core head node
    coco = make_plan(_args(scene_count, tmp_path, "--dataset", "coco"), scene_count.SPEC)
    assert coco.base["num_workers"] == coco.trial_base(1.0)["num_workers"] == -1
    assert make_plan(_args(scene_count, tmp_path, "--dataset", "coco", "--num-workers", "2"),
                     scene_count.SPEC).trial_base(1.0)["num_workers"] == 2
    assert make_plan(_args(scene_count, tmp_path), scene_count.SPEC).trial_base(0.0)["num_workers"] == 0  # preset
    # study.json records the same auto in its base config.
    meta = study_json(coco, base_config=coco.trial_base(1.0), class_names=["a"], cluster={}, gpus_per_trial=1.0,
                      cpus_per_trial=4.0, max_concurrent=1, started=0.0)
    assert meta["base_config"]["num_workers"] == -1


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Trials run in working directories of their own: the driver hands them absolute paths only."""
    monkeypatch.chdir(tmp_path)
    args = _args(scene_count, tmp_path, "--dataset", "coco", "--data-root", "data/coco", "--set",
                 "label_embedding=emb/bert.npy", "--set", "backbone_weights=w/r101.pth")
    base, _ = base_config(args)
    assert base["data_root"] == str(tmp_path / "data" / "coco")
    assert base["label_embedding"] == str(tmp_path / "emb" / "bert.npy")
    assert base["backbone_weights"] == str(tmp_path / "w" / "r101.pth")
    assert base["cache_dir"] is None  # only the synthetic dataset uses the cache
    monkeypatch.setenv("SALGL_CACHE", "rel/cache")
    base, _ = base_config(_args(scene_count, tmp_path))
    assert base["cache_dir"] == str(tmp_path / "rel" / "cache")
    base, _ = base_config(_args(scene_count, tmp_path, "--backbone-weights", "none"))
    assert base["backbone_weights"] is None


def test_the_paper_configuration_is_the_recipes(tmp_path, capsys):
    """--dataset coco means recipe paper-coco-r101-448, whose K = 6 is the paper's configuration: always in
    the grid and flagged; on synthetic data the reference is the synthetic preset's K = 4."""
    plan = make_plan(_args(scene_count, tmp_path, "--dataset", "coco"), scene_count.SPEC)
    assert plan.base["recipe"] == "paper-coco-r101-448" and plan.paper_config == {"num_scenes": 6}
    assert plan.values == [1, 2, 4, 6, 8]
    assert "adding num_scenes = 6 (the paper's configuration)" in capsys.readouterr().out
    assert [plan.base[k] for k in ("outmess", "normalize_adjacency", "label_embedding")] == [True, True, "bert"]
    same = make_plan(_args(scene_count, tmp_path, "--recipe", "paper-coco-r101-448", "--values", "6"),
                     scene_count.SPEC)
    assert same.values == [6] and same.base == plan.base
    nus = make_plan(_args(scene_count, tmp_path, "--recipe", "paper-nuswide-r101-448", "--values", "4"),
                    scene_count.SPEC)
    assert nus.paper_config == {"num_scenes": 2} and nus.values == [2, 4]
    syn = make_plan(_args(scene_count, tmp_path), scene_count.SPEC)
    assert syn.base["recipe"] == "synthetic" and syn.paper_config == {"num_scenes": 4}
    # The joint search on COCO tries the paper's configuration first: K = 6, lr 1e-4.
    search = make_plan(_args(tune_study, tmp_path, "--dataset", "coco"), tune_study.SPEC)
    assert search.points[0]["num_scenes"] == 6 and search.points[0]["lr"] == 1e-4
    assert search.paper_config == {k: v for k, v in search.points[0].items() if k != "seed"}


@pytest.mark.parametrize("argv, error, match", [
    (["--recipe", "paper-coco-r101-448", "--dataset", "voc2007"], ConfigError, r"is for dataset 'coco'.*voc2007-r101"),
    (["--recipe", "paper-coco-r101-448", "--smoke"], StudyError, r"synthetic dataset only"),
    (["--set", "recipe=synthetic"], StudyError, r"--recipe / --dataset, not --set"),
])
def test_recipe_mistakes(tmp_path, argv, error, match):
    with pytest.raises(error, match=match):
        make_plan(_args(scene_count, tmp_path, *argv), scene_count.SPEC)


def test_the_mechanism_study_is_a_grid_of_named_arms(tmp_path, capsys):
    plan = make_plan(_args(mechanism, tmp_path), mechanism.SPEC)
    assert isinstance(plan, GridPlan) and plan.axis == ARM
    assert plan.values == ["no_graph", "global", "learned", "oracle", "random"]  # the spec's order, not sorted
    assert plan.paper_config == {ARM: "global"} and plan.num_samples == 5 * 5  # five seeds by default
    k = plan.base["synthetic_scenes"]
    assert plan.arms["oracle"] == {"num_scenes": k, "scene_source": "oracle"}
    assert plan.arms["no_graph"]["gnn_steps"] == 0 and plan.arms["global"]["num_scenes"] == 1
    assert plan.study_keys()["arms"] == plan.arms
    # A trial's fields: the arm's overrides replace the arm's name.
    assert arm_config({ARM: "random", "seed": 2}, plan.arms) == {"seed": 2, "num_scenes": k, "scene_source": "random"}
    assert arm_config({"num_scenes": 4}, None) == {"num_scenes": 4}
    with pytest.raises(StudyError, match="'best' is not one of this study's arms"):
        arm_config({ARM: "best"}, plan.arms)
    # The reference arm is always run; --smoke runs it and one more.
    plan = make_plan(_args(mechanism, tmp_path, "--values", "oracle"), mechanism.SPEC)
    assert plan.values == ["global", "oracle"] and "reference arm global" in capsys.readouterr().out
    assert make_plan(_args(mechanism, tmp_path, "--smoke"), mechanism.SPEC).values == ["no_graph", "global"]
    # The arms set num_scenes and friends themselves.
    with pytest.raises(StudyError, match="this study's arms set num_scenes"):
        make_plan(_args(mechanism, tmp_path, "--set", "num_scenes=3"), mechanism.SPEC)


def test_the_mechanism_study_has_no_oracle_without_true_scenes(tmp_path):
    plan = make_plan(_args(mechanism, tmp_path, "--dataset", "coco", "--data-root", str(tmp_path)), mechanism.SPEC)
    assert "oracle" not in plan.values and plan.arms["learned"]["num_scenes"] == COCO["num_scenes"]
    with pytest.raises(StudyError, match="oracle: not available on dataset coco"):
        make_plan(_args(mechanism, tmp_path, "--dataset", "coco", "--data-root", str(tmp_path), "--values", "oracle"),
                  mechanism.SPEC)


def test_the_visibility_study_sweeps_the_data_with_named_arms(tmp_path):
    plan = make_plan(_args(visibility, tmp_path), visibility.SPEC)
    assert plan.values == ["global@0.6", "learned@0", "learned@0.6", "learned@1", "oracle@0.6"]
    assert plan.paper_config == {ARM: "global@0.6"}
    assert plan.arms["learned@1"] == {"num_scenes": plan.base["synthetic_scenes"], "scene_source": "learned",
                                      "synthetic_scene_visibility": 1.0}
    with pytest.raises(StudyError, match="needs the synthetic dataset"):
        make_plan(_args(visibility, tmp_path, "--dataset", "coco", "--data-root", str(tmp_path)), visibility.SPEC)
