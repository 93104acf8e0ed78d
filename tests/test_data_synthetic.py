import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import features

from salgl_core.config import ConfigError, DataConfig
from salgl_core.data import DataError, build_datasets
from salgl_core.data import synthetic as syn
from salgl_core.data.synthetic import class_names, default_cache_dir, generate_synthetic, make_world

SMALL = {"dataset": "synthetic", "image_size": 64, "synthetic_train_images": 200, "synthetic_val_images": 40}


def cfg_in(cache: Path, **kw) -> DataConfig:
    return DataConfig(**{**SMALL, "cache_dir": str(cache), **kw})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("syn")
    return cache, generate_synthetic(cfg_in(cache))


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def test_generates_coco_layout_with_scene_ids(small):
    cache, p = small
    assert p.generated and p.root.parent == cache and p.root.name.startswith("synthetic-v")
    train, val = load(p.train_annotations), load(p.val_annotations)
    assert len(train["images"]) == 200 and len(val["images"]) == 40
    assert [c["name"] for c in train["categories"]] == class_names(20)
    assert train["categories"][0]["name"] == "c00_red_disc"
    assert {im["id"] for im in train["images"]}.isdisjoint(im["id"] for im in val["images"])
    for doc, folder in ((train, p.train_images), (val, p.val_images)):
        assert all(isinstance(im["scene_id"], int) and 0 <= im["scene_id"] < 4 for im in doc["images"])
        assert {im["scene_id"] for im in doc["images"]} == {0, 1, 2, 3} or len(doc["images"]) < 100
        assert sorted(os.listdir(folder)) == sorted(im["file_name"] for im in doc["images"])
        for a in doc["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64.001 and y + h <= 64.001
        assert {a["image_id"] for a in doc["annotations"]} == {im["id"] for im in doc["images"]}
    assert not [d for d in os.listdir(cache) if d.startswith(".tmp")]


def test_deterministic_from_seed(small, tmp_path):
    _, p = small
    q = generate_synthetic(cfg_in(tmp_path))
    assert q.root.name == p.root.name
    assert q.train_annotations.read_bytes() == p.train_annotations.read_bytes()
    assert q.val_annotations.read_bytes() == p.val_annotations.read_bytes()
    for name in sorted(os.listdir(p.train_images))[:5] + sorted(os.listdir(p.val_images))[:2]:
        folder = "train" if (p.train_images / name).exists() else "val"
        assert (q.root / folder / name).read_bytes() == (p.root / folder / name).read_bytes()


def test_second_call_reuses_cache(small):
    cache, p = small
    before = p.train_annotations.stat().st_mtime_ns, (p.train_images / "000000000001.jpg").stat().st_mtime_ns
    again = generate_synthetic(cfg_in(cache))
    assert not again.generated and again.root == p.root
    after = p.train_annotations.stat().st_mtime_ns, (p.train_images / "000000000001.jpg").stat().st_mtime_ns
    assert before == after
    assert len([d for d in os.listdir(cache) if d.startswith("synthetic-")]) == 1


def test_other_seed_gives_other_data(small, tmp_path):
    _, p = small
    q = generate_synthetic(cfg_in(tmp_path, synthetic_seed=1))
    assert q.root.name != p.root.name
    a, b = load(p.train_annotations), load(q.train_annotations)
    assert a["scenes"] != b["scenes"]
    assert [im["scene_id"] for im in a["images"]] != [im["scene_id"] for im in b["images"]]
    assert (p.train_images / "000000000001.jpg").read_bytes() != (q.train_images / "000000000001.jpg").read_bytes()


def conditional(doc: dict) -> tuple[dict, dict]:
    """Per scene: count(i) and count(i, j) over images, from the json alone."""
    scene = {im["id"]: im["scene_id"] for im in doc["images"]}
    labels = defaultdict(set)
    for a in doc["annotations"]:
        labels[a["image_id"]].add(a["category_id"])
    single, pair = defaultdict(int), defaultdict(int)
    for img, ls in labels.items():
        for i in ls:
            single[scene[img], i] += 1
            for j in ls:
                if i != j:
                    pair[scene[img], i, j] += 1
    return single, pair


def test_cooccurrence_differs_between_scenes(small):
    _, p = small
    doc = load(p.train_annotations)
    single, pair = conditional(doc)
    cats = [c["id"] for c in doc["categories"]]
    best = 0.0
    for a, b in combinations(range(4), 2):
        for i in cats:
            if single[a, i] < 10 or single[b, i] < 10:
                continue
            for j in cats:
                pa = pair[a, i, j] / single[a, i]
                pb = pair[b, i, j] / single[b, i]
                best = max(best, abs(pa - pb))
    # The same class has a strong partner in one scene and not in another: P(j | i, scene) differs.
    assert best > 0.6
    # The world, by construction: no class pair is grouped together in two scenes, and some class is
    # shared between scenes (so it has different partners in each).
    seen = []
    for s in doc["scenes"]:
        pairs = {(x, y) for g in s["groups"] for x in g for y in g if x < y}
        assert not any(pairs & q for q in seen)
        seen.append(pairs)
    members = [set(s["classes"]) for s in doc["scenes"]]
    assert any(members[a] & members[b] for a, b in combinations(range(4), 2))


def test_world_labels_are_scene_dependent():
    world = make_world(0, 4, 20)
    assert len(world["scenes"]) == 4 and abs(sum(world["scene_prior"]) - 1) < 1e-9
    rng = np.random.default_rng(0)
    counts = np.zeros((4, 20))
    for _ in range(2000):
        z, labels = syn.sample_labels(world, 20, rng)
        counts[z, labels] += 1
    freq = counts / counts.sum(1, keepdims=True)
    # Label distributions differ per scene: total variation between any two scenes is large.
    tv = [0.5 * np.abs(freq[a] - freq[b]).sum() for a, b in combinations(range(4), 2)]
    assert min(tv) > 0.3


def test_loaded_through_coco_reader(small):
    cache, p = small
    b = build_datasets(cfg_in(cache))
    doc = load(p.val_annotations)
    assert b.num_classes == 20 and b.class_names == class_names(20)
    assert b.val_true_scenes.tolist() == [im["scene_id"] for im in doc["images"]]
    assert b.val_ignore is None and b.info["synthetic_root"] == str(p.root)
    assert b.train_labels.shape == (200, 20) and b.val_labels.shape == (40, 20)
    assert (b.train_labels.sum(1) >= 1).all()
    img, target, ignore, index, scene = b.val[3]
    assert img.shape == (3, 64, 64) and index == 3 and not ignore.any() and scene == doc["images"][3]["scene_id"]
    want = {a["category_id"] - 1 for a in doc["annotations"] if a["image_id"] == doc["images"][3]["id"]}
    assert set(np.flatnonzero(target.numpy())) == want
    b96 = build_datasets(cfg_in(cache, image_size=96))
    assert b96.train[0][0].shape == (3, 96, 96) and b96.info["synthetic_root"] == str(p.root)


def _generate_in_child(cache: str, q) -> None:
    p = generate_synthetic(cfg_in(Path(cache), synthetic_train_images=100, synthetic_val_images=20))
    q.put((str(p.root), p.generated))


def test_concurrent_generation_is_safe(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_generate_in_child, args=(str(tmp_path), q)) for _ in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    results = [q.get(timeout=5) for _ in procs]
    assert len({r[0] for r in results}) == 1
    assert os.listdir(tmp_path) == [Path(results[0][0]).name]  # no temporary folder left behind
    root = Path(results[0][0])
    assert len(load(root / "annotations" / "instances_train.json")["images"]) == 100


def test_losing_the_race_uses_the_winners_copy(tmp_path, monkeypatch):
    cfg = cfg_in(tmp_path, synthetic_train_images=20, synthetic_val_images=10)
    real_build = syn.build_synthetic
    name = syn.folder_name(syn.synthetic_params(cfg))

    def racing_build(folder, params):
        real_build(folder, params)
        winner = tmp_path / "winner"
        real_build(winner, params)  # another process finishes first and renames its copy into place
        os.rename(winner, tmp_path / name)

    monkeypatch.setattr(syn, "build_synthetic", racing_build)
    p = generate_synthetic(cfg)
    assert not p.generated and p.root.name == name
    assert os.listdir(tmp_path) == [name]


def test_crash_leaves_no_half_dataset(tmp_path, monkeypatch):
    cfg = cfg_in(tmp_path, synthetic_train_images=20, synthetic_val_images=10)
    real = syn._write_split

    def crash_on_val(folder, split, *args):
        if split == "val":
            raise KeyboardInterrupt
        return real(folder, split, *args)

    monkeypatch.setattr(syn, "_write_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(cfg)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(syn, "_write_split", real)
    assert generate_synthetic(cfg).generated


def test_incomplete_cache_folder_is_reported(tmp_path):
    cfg = cfg_in(tmp_path, synthetic_train_images=20, synthetic_val_images=10)
    p = generate_synthetic(cfg)
    p.val_annotations.unlink()
    with pytest.raises(DataError, match="incomplete.*delete the folder"):
        generate_synthetic(cfg)
    shutil.rmtree(p.root)
    assert generate_synthetic(cfg).generated


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SALGL_CACHE", raising=False)
    assert default_cache_dir() == Path(syn.__file__).resolve().parents[2] / ".cache" / "synthetic"
    monkeypatch.setenv("SALGL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    p = generate_synthetic(DataConfig(**{**SMALL, "synthetic_train_images": 10, "synthetic_val_images": 10}))
    assert p.root.parent == tmp_path


def test_class_names_unique_up_to_64():
    names = class_names(64)
    assert len(set(names)) == 64
    assert len({n.split("_", 1)[1] for n in names}) == 64  # (colour, shape) pairs are distinct


# --- Scene visibility and cue knobs -------------------------------------------------------------------

# Recorded before the knobs existed (VERSION 1; 16 train + 16 val images, every other parameter at its
# default): the knobs' defaults must generate exactly that dataset.
REF_JSON = "805ec5e82f7e1b3c928387ba3110aec0712bd92eaeb0b7e788db6e3677861b67"  # both jsons minus "info"
REF_PIXELS = "2ac2c4d11ff0a1e29b9df5645a624f5fd9929d0a6a21f999ae68489ada9d15f7"  # pixels before JPEG, in order
# The JPEG files' bytes also depend on the encoder: checked only with the Pillow/libjpeg-turbo they came from.
REF_JPEG = ("13.0.0", "3.2.0", "576617f2992bf65793269425bd2f4e34dd5e9ae9843932fbdfe6581f6b1f6ace")


@pytest.fixture(scope="module")
def default16(tmp_path_factory):
    """A default 16 + 16 image dataset and the sha256 of its pixels as generated (before JPEG)."""
    pixels = hashlib.sha256()
    real = syn.encode_jpeg

    def spy(a: np.ndarray) -> bytes:
        pixels.update(a.tobytes())
        return real(a)

    folder = tmp_path_factory.mktemp("default16") / "data"
    cfg = DataConfig(**{**SMALL, "synthetic_train_images": 16, "synthetic_val_images": 16})
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(syn, "encode_jpeg", spy)
        syn.build_synthetic(folder, syn.synthetic_params(cfg))
    return folder, pixels.hexdigest()


def test_default_knobs_generate_the_dataset_of_before(default16):
    assert DataConfig.synthetic_scene_visibility == syn.P_BACKGROUND_FROM_SCENE == 0.6
    assert DataConfig.synthetic_scene_cue == 1.0
    folder, pixels = default16
    h = hashlib.sha256()
    for split in ("train", "val"):
        doc = load(folder / "annotations" / f"instances_{split}.json")
        assert doc["info"]["params"]["visibility"] == 0.6 and doc["info"]["params"]["cue"] == 1.0
        del doc["info"]
        h.update(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    assert h.hexdigest() == REF_JSON
    assert pixels == REF_PIXELS


def test_default_knobs_write_the_jpeg_bytes_of_before(default16):
    versions = (PIL.__version__, features.version("libjpeg_turbo"))
    if versions != REF_JPEG[:2]:
        pytest.skip(f"reference JPEG bytes were written by Pillow/libjpeg-turbo {REF_JPEG[:2]}, not {versions}; "
                    "the pixels are checked by test_default_knobs_generate_the_dataset_of_before")
    folder, _ = default16
    h = hashlib.sha256()
    for split in ("train", "val"):
        for f in sorted((folder / split).iterdir()):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    assert h.hexdigest() == REF_JPEG[2]


@pytest.mark.parametrize(("field", "value"), [("synthetic_scene_visibility", 1.5), ("synthetic_scene_visibility", -0.1),
                                              ("synthetic_scene_visibility", float("nan")),
                                              ("synthetic_scene_cue", -1.0), ("synthetic_scene_cue", "strong")])
def test_knob_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"DataConfig\.{field} = .* is invalid: expected a number in \[0\.0, "):
        DataConfig(**{**SMALL, field: value})


def test_knobs_are_in_the_cache_key():
    base = DataConfig(**SMALL)
    names = {syn.folder_name(syn.synthetic_params(c)) for c in
             (base, DataConfig(**{**SMALL, "synthetic_scene_visibility": 1.0}),
              DataConfig(**{**SMALL, "synthetic_scene_cue": 2.0}))}
    assert len(names) == 3
    # An integer from the command line or a searcher is the same dataset as its float.
    assert syn.synthetic_params(DataConfig(**{**SMALL, "synthetic_scene_visibility": 1})) == \
        syn.synthetic_params(DataConfig(**{**SMALL, "synthetic_scene_visibility": 1.0}))


@pytest.mark.parametrize("visibility", [0.0, 0.25, 0.6, 0.9, 1.0])
def test_background_scene_distribution_and_stream(visibility):
    k, z, n = 4, 1, 12000
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    counts = np.zeros(k)
    for _ in range(n):
        counts[syn.background_scene(z, k, visibility, rng)] += 1
        syn.background_scene(z, k, syn.P_BACKGROUND_FROM_SCENE, ref)
    # z with probability visibility, else uniform over all K scenes (z included).
    want = np.full(k, (1 - visibility) / k)
    want[z] += visibility
    np.testing.assert_allclose(counts / n, want, atol=0.015)
    # The stream is consumed as at the default visibility: later draws do not depend on the knob.
    assert rng.random() == ref.random()


KNOBS = [(0.0, 1.0), (0.6, 1.0), (1.0, 1.0), (0.6, 2.5)]


@pytest.fixture(scope="module")
def knob_docs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("knobs")
    out = {}
    for v, c in KNOBS:
        p = generate_synthetic(cfg_in(cache, synthetic_train_images=160, synthetic_val_images=40,
                                      synthetic_scene_visibility=v, synthetic_scene_cue=c))
        out[v, c] = p, load(p.train_annotations), load(p.val_annotations)
    return out


def test_knobs_change_backgrounds_only(knob_docs):
    _, *docs0 = knob_docs[KNOBS[0]]
    assert len({p.root for p, *_ in knob_docs.values()}) == len(KNOBS)
    for _, *docs in knob_docs.values():
        for d0, d in zip(docs0, docs, strict=True):
            assert d["scenes"] == d0["scenes"] and d["scene_prior"] == d0["scene_prior"]
            assert [im["scene_id"] for im in d["images"]] == [im["scene_id"] for im in d0["images"]]
            assert d["annotations"] == d0["annotations"]  # same labels, boxes and instances
    # The images differ, though: at cue 2.5 every background changes.
    first = "000000000001.jpg"
    assert (knob_docs[0.6, 2.5][0].train_images / first).read_bytes() != \
        (knob_docs[0.6, 1.0][0].train_images / first).read_bytes()


def test_background_agreement_follows_visibility(knob_docs):
    for (v, _), (_, *docs) in knob_docs.items():
        ims = [im for d in docs for im in d["images"]]
        agree = np.mean([im["background_scene_id"] == im["scene_id"] for im in ims])
        if v == 1.0:
            assert agree == 1.0
        elif v == 0.0:
            assert 0.15 < agree < 0.35  # chance, 1/K = 0.25 (200 images: sd 0.03)
        else:
            assert 0.6 < agree < 0.8  # 0.6 + 0.4 / 4 = 0.7


def test_without_cue_the_scene_is_invisible(tmp_path):
    # cue 0 removes the only scene-dependent part of an image, so visibility then changes nothing at all.
    a, b = (generate_synthetic(cfg_in(tmp_path, synthetic_train_images=12, synthetic_val_images=8,
                                      synthetic_scene_cue=0.0, synthetic_scene_visibility=v)) for v in (0.0, 1.0))
    assert a.root != b.root
    for split in ("train", "val"):
        names = sorted(os.listdir(a.root / split))
        assert names and all((a.root / split / n).read_bytes() == (b.root / split / n).read_bytes() for n in names)
