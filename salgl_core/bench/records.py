"""The train benchmark's JSON-lines records (bench/train.py) read back and summed up, without torch: the
benchmark's own summary line and tools/gpu_check.sh's verdicts both come from `summarize`.

Records: "setup", "loader" (the loader alone), "config" (one per configuration, on device tensors),
"loader_fed" (the fastest configuration fed by the loader), "summary".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KEEPS_UP = 0.9  # the loader keeps up when loader-fed images/s reach this share of the same step on device tensors
CONFIG_KEYS = ("amp", "channels_last", "compile")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a missing file, or a last line cut off by a kill, gives what is whole."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "record" in rec:
            out.append(rec)
    return out


def best_config(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The configuration record with the most images/s on device tensors, among those without an error."""
    ok = [r for r in records if r["record"] == "config" and r.get("error") is None]
    return max(ok, key=lambda r: r["tensors"]["images_per_s"]) if ok else None


def summarize(records: list[dict[str, Any]], seconds: float | None = None) -> dict[str, Any]:
    """The summary record: best tensor-fed and loader-fed images/s, the loader alone, the data-wait share,
    peak memory, and whether the loader keeps up with the configuration it fed."""
    configs = [r for r in records if r["record"] == "config"]
    best = best_config(records)
    loader = next((r for r in records if r["record"] == "loader"), None)
    fed = next((r for r in records if r["record"] == "loader_fed" and r.get("error") is None), None)
    peaks = [r["peak_mem_mb"] for r in records if r.get("peak_mem_mb") is not None]
    keeps_up = None
    if fed is not None:  # against the same configuration on device tensors
        same = [r for r in configs if r.get("error") is None and all(r[k] == fed[k] for k in CONFIG_KEYS)]
        if same:
            keeps_up = fed["images_per_s"] >= KEEPS_UP * same[0]["tensors"]["images_per_s"]
    return {
        "record": "summary", "seconds": None if seconds is None else round(seconds, 1), "configs": len(configs),
        "configs_failed": sum(r.get("error") is not None for r in configs),
        "best": None if best is None else {
            **{k: best.get(k) for k in (*CONFIG_KEYS, "compile_s", "peak_mem_mb")},
            "images_per_s": best["tensors"]["images_per_s"]},
        "loader_only_images_per_s": loader["images_per_s"] if loader else None,
        "loader_fed_images_per_s": fed["images_per_s"] if fed else None,
        "data_wait_share": fed["data_wait_share"] if fed else None,
        "peak_mem_mb": max(peaks) if peaks else None,
        "loader_keeps_up": keeps_up,
    }
