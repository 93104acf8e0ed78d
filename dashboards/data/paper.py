"""The paper's numbers: the results/paper/ tables, SALGL's row for a setting, and published reproductions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.data.files import LoadError, read_csv_table, stamp
from dashboards.data.paths import DEFAULT_RESULTS_DIR, display_path, shown
from salgl_core.config import OFF_VIT_WEIGHTS, TIMM_PREFIX
from studies.exports.schema import (
    PAPER_COCO_COLUMNS,
    PAPER_COCO_CSV,
    PAPER_CURVE_COLUMNS,
    PAPER_CURVE_CSV,
    PAPER_DIR,
    PAPER_REPRO_COLUMNS,
    PAPER_REPRO_CSV,
)

# Our metric -> the paper's column it compares with. The paper evaluates the EMA model at its best
# epoch (chosen on the test set), so every mAP variant of ours compares with the paper's mAP.
PAPER_METRIC = {"mAP": "mAP", "mAP_ema": "mAP", "best_mAP": "mAP", "best_mAP_ema": "mAP", "CP": "CP",
                "CR": "CR", "CF1": "CF1", "OP": "OP", "OR": "OR", "OF1": "OF1", "CF1_top3": "CF1_top3",
                "OF1_top3": "OF1_top3"}
# Our config's backbone_weights -> the paper's `pretrain` column. The official code's ViT files were pretrained
# on ImageNet-21k and fine-tuned on ImageNet-1k: the paper's table calls that row plain "ViT-L16" (ImageNet-1k),
# against "ViT-L16 (IN-22k)" for the ImageNet-21k weights.
PRETRAIN_NAMES = {"IMAGENET1K_V1": "ImageNet-1k", "IMAGENET1K_V2": "ImageNet-1k", "DEFAULT": "ImageNet-1k",
                  **{name: "ImageNet-1k" for name in OFF_VIT_WEIGHTS.values()}}
# 'timm:<model>.<tag>': the tag ends with the last dataset the weights were trained on (augreg_in21k,
# augreg_in21k_ft_in1k, ...).
TIMM_TAG_PRETRAIN = {"in21k": "ImageNet-22k", "in22k": "ImageNet-22k", "in1k": "ImageNet-1k"}
# file -> (columns, numeric, text, booleans)
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    PAPER_COCO_CSV: (PAPER_COCO_COLUMNS, ("resolution", *PAPER_COCO_COLUMNS[5:18]),
                     ("dataset", "backbone", "pretrain", "method", "source"), ("is_salgl",)),
    PAPER_REPRO_CSV: (PAPER_REPRO_COLUMNS, ("resolution", "mAP"), ("dataset", "backbone", "who", "source"), ()),
    PAPER_CURVE_CSV: (PAPER_CURVE_COLUMNS, PAPER_CURVE_COLUMNS[:-1], ("source",), ()),
}


def pretrain_name(weights: Any) -> str | None:
    """How the paper's table names the pretraining of our `backbone_weights`."""
    if weights is None:
        return "none (random init)"
    name = str(weights)
    if name.startswith(TIMM_PREFIX) and "." in name:
        tag = name.rsplit(".", 1)[1]
        return next((v for k, v in TIMM_TAG_PRETRAIN.items() if tag.endswith(k)), name)
    return PRETRAIN_NAMES.get(name, name)


def run_pretrain(base_config: dict[str, Any] | None) -> str | None:
    """pretrain_name of a study's base config (config.json holds every field; a missing one is the dataclass
    default, torchvision's IMAGENET1K_V1)."""
    return pretrain_name((base_config or {}).get("backbone_weights", "IMAGENET1K_V1"))


@dataclass
class PaperTables:
    coco: pd.DataFrame
    reproductions: pd.DataFrame
    curve: pd.DataFrame
    folder: Path | None
    warnings: list[str] = field(default_factory=list)


def paper_dir(results_root: str | Path | None = None) -> Path:
    """<results_root>/paper, by default the repository's results/paper: the paper's numbers ship with the
    code, so they come from there whichever folders the runs are listed from."""
    return Path(DEFAULT_RESULTS_DIR if results_root is None else results_root) / PAPER_DIR


def paper_stamp(results_root: str | Path | None = None) -> tuple:
    """The cache key of the paper tables `load_paper_tables(results_root)` would read."""
    folder = paper_dir(results_root)
    return (str(folder),) + stamp(*(folder / f for f in TABLES))


def load_paper_tables(results_root: str | Path | None = None) -> PaperTables:
    """The three tables of paper_dir(results_root); a table that cannot be read is empty, with a warning."""
    folder = paper_dir(results_root)
    if not (folder / PAPER_COCO_CSV).is_file():
        empty = {f: pd.DataFrame({c: pd.Series(dtype=object) for c in spec[0]}) for f, spec in TABLES.items()}
        return PaperTables(empty[PAPER_COCO_CSV], empty[PAPER_REPRO_CSV], empty[PAPER_CURVE_CSV], None,
                           [f"the paper tables ({PAPER_COCO_CSV}, ...) were not found in {display_path(folder)}"])
    warnings: list[str] = []
    tables = {}
    for fname, (columns, numeric, text, booleans) in TABLES.items():
        try:
            tables[fname], w = read_csv_table(folder / fname, columns, numeric, text, booleans)
            warnings.extend(w)
        except LoadError as e:
            tables[fname] = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            warnings.append(f"{shown(e.path, 3)}: {e.message}")
    return PaperTables(tables[PAPER_COCO_CSV], tables[PAPER_REPRO_CSV], tables[PAPER_CURVE_CSV], folder, warnings)


@dataclass
class PaperRef:
    value: float
    metric: str
    method: str
    dataset: str
    backbone: str
    resolution: int
    pretrain: str
    source: str

    def describe(self) -> str:
        return (f"{self.method} paper, {self.dataset.upper()} {self.backbone} {self.resolution} px "
                f"({self.pretrain}): {self.metric} {self.value:g}")


def paper_reference(coco: pd.DataFrame, dataset: str | None, backbone: str | None, resolution: Any,
                    metric: str = "mAP", pretrain: str | None = "ImageNet-1k") -> PaperRef | None:
    """SALGL's own number in the paper for this setting, e.g. coco/resnet101/448 -> 85.8; None where the
    paper has none (synthetic data, another backbone or resolution, or a metric it does not report). Where the
    paper has several rows for the setting (ViT-L16 at 448: ImageNet-1k and ImageNet-22k), `pretrain`
    (pretrain_name of the run's backbone_weights) picks one, and None comes back if none matches."""
    col = PAPER_METRIC.get(metric)
    if col is None or col not in coco or not len(coco) or dataset is None or backbone is None:
        return None
    try:
        res = int(float(resolution))
    except (TypeError, ValueError):
        return None
    hit = coco[(coco["dataset"] == dataset) & (coco["backbone"] == backbone)
               & (pd.to_numeric(coco["resolution"], errors="coerce") == res) & coco["is_salgl"].astype(bool)]
    if pretrain is not None and len(hit) > 1:
        hit = hit[hit["pretrain"] == pretrain]
    vals = pd.to_numeric(hit[col], errors="coerce") if len(hit) else pd.Series(dtype=float)
    if not vals.notna().any():
        return None
    row = hit.loc[vals.notna()].iloc[0]
    return PaperRef(float(row[col]), col, str(row["method"]), dataset, backbone, res, str(row["pretrain"]),
                    str(row["source"]))


def reproduction_refs(repro: pd.DataFrame, dataset: str | None, backbone: str | None,
                      resolution: Any) -> pd.DataFrame:
    """The published reproduction figures (author checkpoint / re-implementation) for this setting."""
    if not len(repro) or dataset is None:
        return repro.iloc[0:0]
    hit = repro[(repro["dataset"] == dataset) & (repro["backbone"] == backbone)]
    return hit[pd.to_numeric(hit["resolution"], errors="coerce") == pd.to_numeric(resolution, errors="coerce")]
