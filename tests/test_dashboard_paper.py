"""dashboards/data/paper.py: the paper's tables in results/paper/ and the reference numbers looked up in them."""

from __future__ import annotations

from pathlib import Path

from dashboards.data import paper as P
from studies.exports.schema import PAPER_COCO_COLUMNS

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_paper_reference_lookup():
    paper = P.load_paper_tables()
    assert paper.warnings == [] and paper.folder == REPO / "results" / "paper"
    coco = paper.coco
    assert P.paper_reference(coco, "coco", "resnet101", 448).value == 85.8
    assert P.paper_reference(coco, "coco", "resnet101", "576").value == 87.3
    assert P.paper_reference(coco, "coco", "resnet101", 448, "best_mAP_ema").value == 85.8
    assert P.paper_reference(coco, "coco", "resnet101", 448, "OF1").value == 82.4
    assert P.paper_reference(coco, "coco", "vit_large_patch16", 448).value == 87.6
    assert P.paper_reference(coco, "coco", "vit_large_patch16", 448, pretrain="ImageNet-22k").value == 90.1
    for args in (("synthetic", "small_cnn", 64), ("coco", "small_cnn", 448), ("coco", "resnet101", 224),
                 ("voc2007", "resnet101", 448), ("coco", "resnet101", None)):
        assert P.paper_reference(coco, *args) is None
    assert P.paper_reference(coco, "coco", "resnet101", 448, "scene_nmi") is None
    ref = P.paper_reference(coco, "coco", "resnet101", 448)
    assert ref.describe() == "SALGL paper, COCO resnet101 448 px (ImageNet-1k): mAP 85.8"
    repro = P.reproduction_refs(paper.reproductions, "nuswide", "resnet101", 448)
    assert repro["mAP"].tolist() == [66.34, 66.24]
    assert P.reproduction_refs(paper.reproductions, None, None, None).empty


def test_paper_tables_hold_every_row_of_the_paper():
    paper = P.load_paper_tables()
    c = paper.coco
    assert list(c.columns) == list(PAPER_COCO_COLUMNS)
    assert len(c) == 17 and (c["dataset"] == "coco").all()
    assert c.groupby(["backbone", "resolution", "pretrain"]).size().to_dict() == {
        ("resnet101", 448, "ImageNet-1k"): 7, ("resnet101", 576, "ImageNet-1k"): 5,
        ("vit_large_patch16", 448, "ImageNet-1k"): 3, ("vit_large_patch16", 448, "ImageNet-22k"): 2}
    salgl = c[c["is_salgl"]]
    assert salgl["mAP"].tolist() == [85.8, 87.3, 87.6, 90.1]
    r448 = salgl.iloc[0]
    assert [r448[k] for k in PAPER_COCO_COLUMNS[5:18]] == [85.8, 87.2, 74.5, 80.4, 87.8, 77.6, 82.4, 90.4, 65.7,
                                                          76.1, 91.9, 67.9, 78.1]
    tsgcn = c[c["method"] == "TSGCN"].iloc[0]
    assert (tsgcn["OR_top3"], tsgcn["OF1_top3"]) == (69.3, 69.3)
    asl = c[c["method"] == "ASL"].iloc[0]
    assert (asl["mAP"], asl["CF1"], asl["OF1"]) == (85.0, 80.3, 82.3)
    assert asl[["CP", "CR", "OP", "OR", "CP_top3", "OF1_top3"]].isna().all()
    assert c["source"].str.contains("assets/coco2014.png").all()
    assert paper.reproductions["mAP"].tolist() == [85.75, 85.75, 66.34, 66.24]
    curve = paper.curve
    assert len(curve) == 27 and curve["epoch"].tolist() == list(range(27))
    assert curve.loc[21, "best_ema_mAP"] == 85.758 and curve.loc[0, "epoch_seconds"] == 285
    assert curve["best_ema_mAP"].is_monotonic_increasing


def test_paper_tables_come_from_the_repository_and_report(tmp_path, monkeypatch):
    """Always results/paper: a results folder named in the sidebar does not bring its own paper numbers."""
    assert P.paper_dir() == REPO / "results" / "paper"
    assert P.paper_dir(tmp_path) == tmp_path / "paper"
    own = tmp_path / "paper"
    # A table of another layout is named, not half-read.
    write(own / "coco_comparison.csv", "method,mAP\nX,1\n")
    paper = P.load_paper_tables(tmp_path)
    assert paper.folder == own and paper.coco.empty and list(paper.coco.columns) == list(PAPER_COCO_COLUMNS)
    text = "\n".join(paper.warnings)
    assert "paper/coco_comparison.csv: lacks the column(s) dataset, backbone" in text
    assert "paper/reproductions.csv: file not found" in text
    assert P.paper_reference(paper.coco, "coco", "resnet101", 448) is None
    # No fallback: without the main table there are no paper numbers, and the message says where it looked.
    (own / "coco_comparison.csv").unlink()
    paper = P.load_paper_tables(tmp_path)
    assert paper.folder is None and paper.coco.empty and paper.curve.empty and "were not found" in paper.warnings[0]
    monkeypatch.setattr(P, "DEFAULT_RESULTS_DIR", tmp_path)
    assert P.load_paper_tables().warnings == paper.warnings


def test_not_found_message_names_repository_folders_relative_to_it(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "DEFAULT_RESULTS_DIR", REPO / ".cache" / "no_such_results")
    (w,) = P.load_paper_tables().warnings
    assert w.endswith("were not found in .cache/no_such_results/paper") and str(REPO) not in w


def test_paper_stamp_follows_the_tables(tmp_path):
    own = tmp_path / "paper"
    for f in P.TABLES:
        write(own / f, (REPO / "results" / "paper" / f).read_text())
    before = P.paper_stamp(tmp_path)
    assert before[0] == str(own) and P.paper_stamp(tmp_path) == before
    write(own / "reproductions.csv", (own / "reproductions.csv").read_text() + "coco,resnet101,448,me,85.0,x\n")
    assert P.paper_stamp(tmp_path) != before
    assert P.load_paper_tables(tmp_path).reproductions["who"].tolist()[-1] == "me"


def test_pretrain_names_match_the_papers_table():
    assert P.pretrain_name("IMAGENET1K_V2") == "ImageNet-1k"
    assert P.pretrain_name(None) == "none (random init)"
    assert P.pretrain_name("custom") == "custom"
