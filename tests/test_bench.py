import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from salgl_core.bench.loader import (
    COCO_LIKE_SIZE,
    decode_rate,
    generate_jpegs,
    loader_benchmark,
    loader_rate,
    steady_loader,
)
from salgl_core.bench.records import read_records, summarize
from salgl_core.config import DataConfig
from salgl_core.data import MultiLabelDataset
from salgl_core.data.transforms import eval_transform, train_transform

REPO = Path(__file__).resolve().parents[1]


def _bench(*argv: str) -> dict:
    """Run `python -m salgl_core.bench ...`; its whole stdout must be one JSON object."""
    out = subprocess.run([sys.executable, "-m", "salgl_core.bench", *argv], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _bench_lines(*argv: str) -> list[dict]:
    """Run `python -m salgl_core.bench train ...`; every stdout line must be one JSON record."""
    out = subprocess.run([sys.executable, "-m", "salgl_core.bench", *argv], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


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
    # the 6 images cycled to 4 full batches in one pass: the first untimed, 3 timed
    assert (r["warmup_batches"], r["batches"], r["images"], r["workers"]) == (1, 3, 12, 0) and r["images_per_s"] > 0


def _dataset(n: int) -> MultiLabelDataset:
    return MultiLabelDataset([f"/nowhere/{i}.jpg" for i in range(n)], np.zeros((n, 2), dtype=np.uint8), ["a", "b"],
                             eval_transform(DataConfig(dataset="coco", image_size=32)), 32)


def test_steady_loader_skips_what_the_workers_queue():
    """Timing starts after workers x prefetch batches (what the workers queue while the first is made), and the
    dataset is cycled so that warm-up and timed batches come from one pass (a new pass restarts the workers)."""
    loader, skip = steady_loader(_dataset(6), batch_size=4, num_workers=2, batches=3)
    assert loader.num_workers == 2 and skip == 2 * loader.prefetch_factor == 8
    assert len(loader) == skip + 3 and len(loader.dataset) == (skip + 3) * 4 and loader.drop_last
    assert sorted(set(loader.dataset.indices)) == list(range(6))
    loader, skip = steady_loader(_dataset(6), batch_size=4, num_workers=0, batches=3)
    assert skip == 1 and len(loader) == 4  # no workers: only the first batch (start-up) is untimed


def test_generated_jpegs_are_coco_like(tmp_path):
    """640x480 with COCO's encoding (4:4:4, ~90 quality, near its mean file size): the train transform resizes them."""
    from PIL import Image

    paths = generate_jpegs(tmp_path, 2)
    for p in paths:
        with Image.open(p) as img:
            assert img.size == COCO_LIKE_SIZE and img.format == "JPEG"
            assert [c[1:3] for c in img.layer] == [(1, 1)] * 3  # no chroma subsampling, as COCO's files
            assert 100_000 < Path(p).stat().st_size < 300_000
            x = train_transform(DataConfig(dataset="coco", image_size=448))(img.convert("RGB"))
        assert tuple(x.shape) == (3, 448, 448)


def _config(amp: str, rate: float, error: str | None = None) -> dict:
    return {"record": "config", "amp": amp, "channels_last": True, "compile": False, "error": error,
            "tensors": None if error else {"images_per_s": rate}, "peak_mem_mb": 100.0 if amp == "bf16" else 90.0}


def test_summary_judges_the_fastest_configuration_and_whether_the_loader_keeps_up(tmp_path):
    fed = {"record": "loader_fed", "amp": "bf16", "channels_last": True, "compile": False, "error": None,
           "images_per_s": 430.0, "data_wait_share": 0.2, "peak_mem_mb": 120.0}
    records = [{"record": "setup"}, {"record": "loader", "images_per_s": 700.0}, _config("fp16", 450.0),
               _config("bf16", 500.0), _config("none", 0, "OutOfMemoryError: x"), fed]
    s = summarize(records, 12.34)
    assert s["best"] == {"amp": "bf16", "channels_last": True, "compile": False, "compile_s": None,
                         "peak_mem_mb": 100.0, "images_per_s": 500.0}
    assert (s["configs"], s["configs_failed"], s["seconds"], s["peak_mem_mb"]) == (3, 1, 12.3, 120.0)
    assert (s["loader_only_images_per_s"], s["loader_fed_images_per_s"], s["data_wait_share"]) == (700.0, 430.0, 0.2)
    assert s["loader_keeps_up"] is False  # 430 < 0.9 x 500
    assert summarize(records[:-1] + [{**fed, "images_per_s": 460.0}])["loader_keeps_up"] is True
    # A file cut off by a kill: the whole lines are read, the cut one is not.
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records[:4]) + '\n{"record": "con')
    assert read_records(tmp_path / "b.jsonl") == records[:4] and read_records(tmp_path / "missing.jsonl") == []


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
    out = _bench("loader", "--workers", "0", "1", "--batches", "2", "--synthetic-batch-size", "8",
                 "--synthetic-train-images", "16", "--synthetic-val-images", "8", "--cache-dir", str(tmp_path / "c"),
                 "--real-data", str(tmp_path / "real"), "--coco-like-images", "3")
    assert out["benchmark"] == "loader" and out["workers"] == [0, 1]
    src = out["sources"]
    like = src["coco_like"]
    assert like["images"] == 3 and like["image_size"] == 448 and like["generation"]["size"] == [640, 480]
    assert [like["loader"][w]["warmup_batches"] for w in ("0", "1")] == [1, 4]  # 1 worker x prefetch 4
    assert like["loader"]["1"]["images"] == 2 * 16  # full batches of the real batch size
    assert src["coco128"]["images"] == 6 and src["coco128"]["loader"]["0"]["batches"] == 2
    assert "not found" in src["coco_tiny"]["skipped"]
    syn = src["synthetic"]
    assert syn["images"] == 16 and syn["generation"]["root"].startswith(str(tmp_path / "c"))
    assert syn["loader"]["0"]["images"] == 16 and syn["decode"]["images"] == 16
    syn_cfg = DataConfig(dataset="synthetic", image_size=64, synthetic_train_images=16, synthetic_val_images=8,
                         cache_dir=str(tmp_path / "c"))
    no_real = loader_benchmark(workers=(0,), batches=1, synthetic=syn_cfg, coco_like_images=0)
    assert no_real["sources"]["coco128"] == {"skipped": "no --real-data folder given"}
    assert no_real["sources"]["coco_like"] == {"skipped": "--coco-like-images 0"}
    assert no_real["sources"]["synthetic"]["generation"]["generated"] is False  # reused from the cache


@pytest.mark.slow  # ~25 s of CPU: torch.compile's tracing included
def test_train_benchmark_runs_small_on_cpu():
    """Without CUDA `bench train` picks small shapes itself; the recipe's model knobs stay (K = 6, BERT). One JSON
    line per record: setup, the loader alone, each configuration, the fastest fed by the loader, the summary."""
    recs = _bench_lines("train", "--device", "cpu", "--compile", "off", "on", "--compile-backend", "eager",
                        "--warmup", "0", "--steps", "1", "--loader-batches", "1", "--batch", "2")
    assert [r["record"] for r in recs] == ["setup", "loader", "config", "config", "loader_fed", "summary"]
    setup, loader, *configs, fed, summary = recs
    assert setup["benchmark"] == "train" and setup["small"] and setup["recipe"] == "paper-coco-r101-448"
    assert setup["shape"] == {"backbone": "small_cnn", "image_size": 64, "batch": 2, "classes": 80,
                              "num_scenes": 6, "label_embedding": "bert"}
    assert setup["configs"] == [{"amp": "none", "channels_last": False, "compile": c} for c in (False, True)]
    assert loader["jpegs"]["files"] == 4 and loader["jpegs"]["size"] == [640, 480]
    assert (loader["warmup_batches"], loader["images"]) == (1, 2)
    assert [(r["amp"], r["channels_last"], r["compile"]) for r in configs] == [("none", False, False),
                                                                              ("none", False, True)]
    for r in configs:
        assert r["error"] is None, r["error"]
        assert r["tensors"]["images_per_s"] > 0 and r["peak_mem_mb"] is None
    assert "compile_s" not in configs[0] and configs[1]["compile_s"] >= 0  # compiled: warm-up of >= 1 step
    assert fed["error"] is None and fed["images"] == 2 and fed["warmup_batches"] == 1
    assert 0 <= fed["data_wait_share"] <= 1
    best = max(configs, key=lambda r: r["tensors"]["images_per_s"])
    assert (fed["amp"], fed["channels_last"], fed["compile"]) == (best["amp"], best["channels_last"], best["compile"])
    assert summary == summarize(recs[:-1], summary["seconds"])


@pytest.mark.slow  # ~10 s: torch and the model built once
def test_train_benchmark_prints_each_record_as_it_is_measured():
    """A time limit that stops the benchmark keeps the configurations that finished: each line is out (flushed)
    while the next configuration is still being measured."""
    proc = subprocess.Popen([sys.executable, "-m", "salgl_core.bench", "train", "--device", "cpu",
                             "--channels-last", "off", "on", "--compile", "off", "on", "--full-grid",
                             "--compile-backend", "eager", "--loader-batches", "0", "--steps", "1", "--batch", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert proc.poll() is None  # three configurations still to measure
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=60)[0]
    assert [json.loads(line)["record"] for line in lines] == ["setup", "config"]
    assert json.loads(lines[1])["error"] is None and proc.returncode != 0
    assert all(json.loads(line)["record"] == "config" for line in rest.splitlines())  # no summary: stopped


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


def test_every_benchmark_parses_to_itself():
    # A benchmark's own argument named like the subcommand's dest would send main() to the wrong benchmark.
    from salgl_core.bench.__main__ import BENCHMARKS, get_args_parser

    extra = {"epochs": ["cached"]}
    for name in BENCHMARKS:
        assert get_args_parser().parse_args([name, *extra.get(name, [])]).which == name


@pytest.mark.skipif(not (SHARED_DATA / "coco128").is_dir(), reason="../shared/data/coco128 is not available")
def test_epochs_benchmark_configs_are_valid():
    from salgl_core.bench.epochs import cached_config, real_config
    from salgl_core.config import ExperimentConfig

    real = ExperimentConfig.from_flat(real_config(SHARED_DATA, 10, 2))
    assert (real.model.backbone, real.data.image_size, real.train.epochs, real.data.num_workers) == (
        "efficientnet_lite0", 224, 10, 2)
    cached = ExperimentConfig.from_flat(cached_config(8))
    assert cached.train.feature_cache and cached.model.freeze_backbone and cached.train.epochs == 8
    with pytest.raises(SystemExit, match="coco128"):
        real_config(SHARED_DATA / "nowhere", 1, 0)
