import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from salgl_core.data.voc import VOC_CLASSES
from salgl_core.embeddings import (
    SHIPPED_DIR,
    LabelEmbedding,
    LabelEmbeddingError,
    check_class_order,
    load_label_vectors,
    resolve_label_embedding,
    shipped_class_names,
    shipped_datasets,
    shipped_path,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UPSTREAM = SHARED / "label_embeddings"
UPSTREAM_NAME = {"coco": "mscoco", "voc2007": "voc2007", "nuswide": "nuswide"}
ROWS = {"coco": 80, "voc2007": 20, "nuswide": 81}
WIDTH = {"bert": 768, "glove": 300}
KINDS = [(d, k) for d in ROWS for k in WIDTH]
needs_shared = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/data/label_embeddings is absent")


def _provenance_rows() -> dict[str, tuple[str, str, str]]:
    """file -> (shape, dtype, sha256) from the table in PROVENANCE.md."""
    rows = {}
    for line in (SHIPPED_DIR / "PROVENANCE.md").read_text().splitlines():
        m = re.match(r"\| (\S+) \| ([^|]+) \| (\S+) \| ([0-9a-f]{64}) \|", line)
        if m:
            rows[m[1]] = (m[2].strip(), m[3], m[4])
    return rows


def test_shipped_inventory_and_provenance_table():
    assert shipped_datasets("bert") == shipped_datasets("glove") == ("coco", "nuswide", "voc2007")
    table = _provenance_rows()
    assert len(table) == 9
    for dataset, kind in KINDS:
        path = SHIPPED_DIR / dataset / f"{kind}.npy"
        vec = np.load(path, allow_pickle=False)
        assert vec.dtype == np.float32 and vec.shape == (ROWS[dataset], WIDTH[kind])
        assert np.isfinite(vec).all() and np.abs(vec).sum(axis=1).min() > 0  # no empty row
        shape, dtype, sha = table[f"{dataset}/{kind}.npy"]
        assert shape == f"{ROWS[dataset]} x {WIDTH[kind]}" and dtype == "float32"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    for dataset in ROWS:
        path = SHIPPED_DIR / dataset / "labels.txt"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == table[f"{dataset}/labels.txt"][2]
        assert len(shipped_class_names(dataset)) == ROWS[dataset]


@needs_shared
@pytest.mark.parametrize("dataset,kind", KINDS)
def test_shipped_vectors_equal_upstream(dataset, kind):
    src = np.load(UPSTREAM / UPSTREAM_NAME[dataset] / f"{kind}.npy", allow_pickle=False)
    ours = np.load(SHIPPED_DIR / dataset / f"{kind}.npy", allow_pickle=False)
    np.testing.assert_array_equal(ours, src.astype(np.float32))
    if kind == "bert":  # float32 values stored as float64 upstream: the cast loses nothing
        np.testing.assert_array_equal(ours.astype(np.float64), src)


@needs_shared
@pytest.mark.parametrize("dataset", list(ROWS))
def test_shipped_row_order_is_upstream_label_order(dataset):
    upstream = (UPSTREAM / UPSTREAM_NAME[dataset] / "label.txt").read_text().splitlines()
    assert shipped_class_names(dataset) == [n for n in upstream if n.strip()]


def test_voc_row_order_is_the_loader_class_order():
    assert shipped_class_names("voc2007") == list(VOC_CLASSES)  # alphabetical, official spelling
    check_class_order("voc2007", VOC_CLASSES)


def test_nuswide_row_order_is_concepts81_order():
    # Concepts81.txt is alphabetical (airport ... zebra); the NUS-WIDE loader takes its order from that file.
    names = shipped_class_names("nuswide")
    assert names == sorted(names) and names[0] == "airport" and names[-1] == "zebra"


@pytest.mark.skipif(not (SHARED / "coco128").is_dir(), reason="../shared/data/coco128 is absent")
def test_coco_row_order_is_the_loader_class_order():
    from salgl_core.data.coco import load_coco_split

    ann = SHARED / "coco128" / "annotations" / "instances_train2017.json"
    split = load_coco_split(SHARED / "coco128" / "train2017", ann)
    assert split.class_names == shipped_class_names("coco")  # category-id order
    cats = sorted(json.loads(ann.read_text())["categories"], key=lambda c: c["id"])
    assert [c["name"] for c in cats] == shipped_class_names("coco")
    check_class_order("coco", split.class_names)


def test_named_kinds_resolve_per_dataset():
    for dataset, kind in KINDS:
        assert Path(resolve_label_embedding(kind, dataset)) == SHIPPED_DIR / dataset / f"{kind}.npy"
        emb = LabelEmbedding(kind, ROWS[dataset], 16, dataset=dataset)
        assert emb.dim == WIDTH[kind] and emb.weight.dtype == torch.float32
        assert "weight" in dict(emb.named_buffers())  # fixed, as the official vectors
    for other in ("learned", "random", "some/file.npy"):
        assert resolve_label_embedding(other, "coco") == other


def test_named_kind_without_shipped_vectors_names_the_datasets_that_have_them():
    with pytest.raises(LabelEmbeddingError, match=r"only for coco, nuswide, voc2007, not for dataset 'synthetic'"):
        LabelEmbedding("bert", 12, 16, dataset="synthetic")
    with pytest.raises(LabelEmbeddingError, match="needs the dataset name"):
        shipped_path("glove", None)
    with pytest.raises(LabelEmbeddingError, match="not a shipped kind"):
        shipped_path("word2vec", "coco")


def test_row_count_mismatch_names_both_numbers(tmp_path):
    with pytest.raises(LabelEmbeddingError, match=r"80 rows but the dataset has 20 classes"):
        LabelEmbedding("bert", 20, 16, dataset="coco")
    path = tmp_path / "e.npy"
    np.save(path, np.ones((5, 3)))
    with pytest.raises(LabelEmbeddingError, match=r"5 rows but the dataset has 6 classes"):
        load_label_vectors(path, 6)
    np.save(path, np.ones(5))
    with pytest.raises(LabelEmbeddingError, match="2-D"):
        load_label_vectors(path, 5)
    bad = np.ones((5, 3))
    bad[2, 1] = np.nan
    np.save(path, bad)
    with pytest.raises(LabelEmbeddingError, match="non-finite"):
        load_label_vectors(path, 5)


def test_class_order_check_names_the_first_difference():
    names = list(VOC_CLASSES)
    names[3], names[4] = names[4], names[3]
    with pytest.raises(LabelEmbeddingError, match=r"position 3 is 'bottle', the vectors expect 'boat'"):
        LabelEmbedding("bert", 20, 16, dataset="voc2007", class_names=names)
    with pytest.raises(LabelEmbeddingError, match=r"position 20 is '<end>'"):
        check_class_order("nuswide", shipped_class_names("nuswide")[:20])
    LabelEmbedding("glove", 20, 16, dataset="voc2007", class_names=VOC_CLASSES)
