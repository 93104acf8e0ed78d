"""tools/gpu_check.sh's JSON files (no torch: quick between the steps).

    gpu_check_summary.py run RUN_DIR DEST            a training run's config and epochs.csv as one JSON file
    gpu_check_summary.py study STUDY_DIR DEST        a study's study.json and trials.csv as one JSON file
    gpu_check_summary.py check DIR SMOKE TOTAL LIMIT gpu_check.json: each step's exit code, seconds and budget
                                                     (DIR/steps.tsv), the total against LIMIT, and the figures
                                                     that judge the GPU goals, read from the train_*.jsonl files
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from salgl_core.bench.records import read_records, summarize

TRAIN_IMAGES_PER_S_GOAL = 400  # issue 19: ResNet-101 at 448 px, per H100-class GPU


def _dump(out: dict[str, Any], dest: str) -> None:
    Path(dest).write_text(json.dumps(out, indent=2) + "\n")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def goals(dest: Path) -> dict[str, Any]:
    """The GPU goals' figures: images/s on device tensors (eager, compiled) and through the real loader, the
    loader alone, the data-wait share, compile time, peak memory. None where a step did not get that far."""
    eager = summarize(read_records(dest / "train_bench.jsonl"))
    compiled = summarize(read_records(dest / "train_compile.jsonl"))
    rates = [s["best"]["images_per_s"] for s in (eager, compiled) if s["best"]]
    peaks = [s["peak_mem_mb"] for s in (eager, compiled) if s["peak_mem_mb"] is not None]
    return {
        "images_per_s_goal": TRAIN_IMAGES_PER_S_GOAL,
        "best_images_per_s": max(rates) if rates else None,
        "meets_images_per_s_goal": bool(rates) and max(rates) >= TRAIN_IMAGES_PER_S_GOAL,
        "eager": eager["best"], "compiled": compiled["best"],
        "loader_only_images_per_s": eager["loader_only_images_per_s"],
        "loader_fed_images_per_s": eager["loader_fed_images_per_s"],
        "data_wait_share": eager["data_wait_share"],
        "loader_keeps_up": eager["loader_keeps_up"],
        "peak_mem_mb": max(peaks) if peaks else None,
    }


def check(dest: Path, smoke: bool, total: int, limit: int) -> dict[str, Any]:
    steps = []
    for line in (dest / "steps.tsv").read_text().splitlines():
        name, rc, seconds, budget = line.split("\t")
        skipped = rc == "skipped"  # GPU_CHECK_SKIP
        steps.append({"name": name, "rc": None if skipped else int(rc), "seconds": int(seconds), "budget": int(budget),
                      "skipped": skipped})
    ran = [s for s in steps if not s["skipped"]]
    return {"smoke": smoke, "ok": bool(ran) and all(s["rc"] == 0 for s in ran), "total_seconds": total,
            "limit_seconds": limit, "within_limit": total <= limit, "steps": steps, "goals": goals(dest)}


def main(argv: list[str]) -> int:
    what, *rest = argv
    if what == "run":
        run = Path(rest[0])
        _dump({"config": _json(run / "config.json"), "epochs": _csv_rows(run / "epochs.csv")}, rest[1])
    elif what == "study":
        study = Path(rest[0])
        _dump({"study": _json(study / "study.json"), "trials": _csv_rows(study / "trials.csv")}, rest[1])
    elif what == "check":
        dest = Path(rest[0])
        _dump(check(dest, rest[1] == "1", int(rest[2]), int(rest[3])), str(dest / "gpu_check.json"))
    else:
        print(f"error: unknown command {what!r}; use run, study or check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
