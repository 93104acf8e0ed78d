import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salgl_core.bench.loader import decode_rate, loader_benchmark, loader_rate
from salgl_core.config import DataConfig
from salgl_core.data import MultiLabelDataset
from salgl_core.data.transforms import eval_transform

REPO = Path(__file__).resolve().parents[1]


def _bench(*argv: str) -> dict:
    """Run `python -m salgl_core.bench ...`; its whole stdout must be one JSON object."""
    out = subprocess.run([sys.executable, "-m", "salgl_core.bench", *argv], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _write_coco(root: Path, n: int = 6) -> None:
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 40, 90, 160)).save(root / "train2017" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30})
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}
            for i in range(n)]
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_loader_helpers(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (24 + i, 24), (i * 20, 100, 200)).save(paths[-1])
    ds = MultiLabelDataset(paths, np.eye(6, 4, dtype=np.uint8), list("abcd"),
                           eval_transform(DataConfig(dataset="coco", image_size=32)), 32)
    d = decode_rate(ds.paths)
    assert d["images"] == 6 and d["images_per_s"] > 0
    r = loader_rate(ds, batch_size=4, num_workers=0, batches=3)
    # untimed first batch [4], then [2] (end of epoch), [4], [2]
    assert r["batches"] == 3 and r["images"] == 8 and r["images_per_s"] > 0


@pytest.mark.slow
def test_attention_benchmark_runs_at_tiny_shapes_on_cpu():
    out = _bench("attention", "--device", "cpu", "--batch", "2", "--step-batch", "1", "--labels", "4",
                 "--tokens", "9", "--dim", "16", "--embed-dim", "8", "--rank", "8", "--image-size", "32",
                 "--backbone", "small_cnn", "--warmup", "0", "--repeats", "1")
    assert out["benchmark"] == "attention" and out["device"] == "cpu" and out["dtype"] == "float32"
    assert out["attention_shape"] == {"B": 2, "C": 4, "N": 9, "D": 16, "E": 8, "rank": 8}
    assert out["step_shape"] == {"B": 1, "image_size": 32, "backbone": "small_cnn", "C": 4}
    assert all(out[k] > 0 for k in ("attention_ref_ms", "attention_fast_ms", "step_ref_ms", "step_fast_ms"))
    assert out["attention_ref_peak_mb"] is None  # peak memory is measured on CUDA only


@pytest.mark.slow
def test_loader_benchmark_runs_at_tiny_shapes_on_cpu(tmp_path):
    _write_coco(tmp_path / "real" / "coco128")
    out = _bench("loader", "--workers", "0", "--batches", "2", "--synthetic-batch-size", "8",
                 "--synthetic-train-images", "16", "--synthetic-val-images", "8", "--cache-dir", str(tmp_path / "c"),
                 "--real-data", str(tmp_path / "real"))
    assert out["benchmark"] == "loader" and out["workers"] == [0]
    src = out["sources"]
    assert src["coco128"]["images"] == 6 and src["coco128"]["loader"]["0"]["batches"] == 2
    assert "not found" in src["coco_tiny"]["skipped"]
    syn = src["synthetic"]
    assert syn["images"] == 16 and syn["generation"]["root"].startswith(str(tmp_path / "c"))
    assert syn["loader"]["0"]["images"] == 16 and syn["decode"]["images"] == 16
    syn_cfg = DataConfig(dataset="synthetic", image_size=64, synthetic_train_images=16, synthetic_val_images=8,
                         cache_dir=str(tmp_path / "c"))
    no_real = loader_benchmark(workers=(0,), batches=1, synthetic=syn_cfg)
    assert no_real["sources"]["coco128"] == {"skipped": "no --real-data folder given"}
    assert no_real["sources"]["synthetic"]["generation"]["generated"] is False  # reused from the cache


@pytest.mark.slow  # ~25 s of CPU: torch.compile's tracing included
def test_train_benchmark_runs_small_on_cpu():
    """Without CUDA `bench train` picks small shapes itself; the recipe's model knobs stay (K = 6, BERT)."""
    out = _bench("train", "--device", "cpu", "--compile", "off", "on", "--compile-backend", "eager",
                 "--warmup", "0", "--steps", "1", "--loader-batches", "1", "--batch", "2")
    assert out["benchmark"] == "train" and out["small"] and out["recipe"] == "paper-coco-r101-448"
    assert out["shape"] == {"backbone": "small_cnn", "image_size": 64, "batch": 2, "classes": 80, "num_scenes": 6,
                            "label_embedding": "bert"}
    assert out["jpegs"]["images"] == 4 and out["loader_only"]["images"] == 2
    assert [(r["amp"], r["channels_last"], r["compile"]) for r in out["runs"]] == [("none", False, False),
                                                                                  ("none", False, True)]
    for r in out["runs"]:
        assert r["error"] is None, r["error"]
        assert r["tensors"]["images_per_s"] > 0 and r["loader"]["images"] == 2 and r["peak_mem_mb"] is None
    assert out["best"] in out["runs"]


@pytest.mark.slow
def test_scene_probe_reads_a_fully_visible_scene(tmp_path, capsys):
    """bench probe: a supervised linear probe on cached frozen features (a random-init small CNN here, so
    nothing is pretrained) reads the true scene far above the majority class when every background shows it."""
    from salgl_core.bench.__main__ import main

    assert main(["probe", "--visibility", "1", "--backbone-weights", "none", "--synthetic-train-images", "240",
                 "--synthetic-val-images", "120", "--cache-dir", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["probes"]
    assert (row["visibility"], row["train_images"], row["val_images"]) == (1.0, 240, 120)
    assert row["background_shows_true_scene"] == 100.0 and row["feature_dim"] == 128
    assert row["probe_accuracy"] > row["majority_class"] + 20, row
