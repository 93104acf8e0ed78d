"""Is a study's training budget on the flat part of the learning curve? (torch-free; part of analysis.json)

An ablation compares where its arms end. If the reference arm's best EMA mAP is still climbing at the last
epoch, the verdicts compare how fast the arms start as much as where they would end, and more epochs could
change them. The check: over the reference arm's FINISHED trials, the mean rise of the running best EMA mAP
(the reported metric, epoch by epoch from epochs.csv) over the last WINDOW epochs; the budget counts as flat
when that rise is under THRESHOLD mAP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studies.exports import schema
from studies.exports.files import CsvDamage, read_epoch_log

WINDOW = 3  # epochs
THRESHOLD = 0.5  # mAP points


class UnreadableFile(Exception):
    """epochs.csv cannot be read at all (not text, a NUL byte, an I/O error)."""


def _curves(run_dir: Path, trial_ids: set[str]) -> dict[str, list[float]]:
    """Each trial's running best EMA mAP by epoch (epochs 1..E, no gaps), from epochs.csv. A row that cannot
    be read leaves a gap, so its trial's curve is not judged; UnreadableFile when the file cannot be read."""
    path = run_dir / schema.EPOCHS_CSV
    if not path.is_file():
        return {}
    by_trial: dict[str, dict[int, float]] = {}
    try:
        # The log's rules (a study killed while it appended leaves superseded rows and maybe half a line); a row
        # of the wrong length is left out, leaving its gap.
        log = read_epoch_log(path.read_bytes().decode("utf-8"), strict=False)
    except (OSError, UnicodeDecodeError, CsvDamage) as e:
        raise UnreadableFile(f"{schema.EPOCHS_CSV} unreadable ({type(e).__name__}: {e})") from e
    for _, cells in log.records:
        row = dict(zip(log.header, cells, strict=True))
        if row.get("trial_id") in trial_ids:
            try:
                by_trial.setdefault(row["trial_id"], {})[int(row["epoch"])] = float(row["mAP_ema"])
            except (KeyError, TypeError, ValueError):
                continue
    curves = {}
    for tid, points in by_trial.items():
        if sorted(points) != list(range(1, len(points) + 1)):
            continue  # a gap: not a whole curve
        best, curve = float("-inf"), []
        for e in range(1, len(points) + 1):
            best = max(best, points[e])
            curve.append(best)
        curves[tid] = curve
    return curves


def budget_check(run_dir: str | Path, reference_trials: list[str]) -> dict[str, Any]:
    """{epochs (the longest curve), window, threshold, trials (curves judged), gains, gain, flat, verdict} for the
    reference arm's trials; `flat` is None when it cannot be told (no curves, or none longer than the window)."""
    out: dict[str, Any] = {"epochs": None, "window": WINDOW, "threshold": THRESHOLD, "trials": 0,
                           "gains": [], "gain": None, "flat": None}
    try:
        curves = _curves(Path(run_dir), set(reference_trials))
    except UnreadableFile as e:
        out["verdict"] = f"{e}: budget not checked; restore it from a copy of the export"
        return out
    out["trials"] = len(curves)
    if not curves:
        out["verdict"] = "no learning curve of the reference arm in epochs.csv: budget not checked"
        return out
    # Each curve is judged at its own last epoch (a trial stopped early by early_stop_patience ends sooner).
    epochs = max(len(c) for c in curves.values())
    out["epochs"] = epochs
    long_enough = [c for c in curves.values() if len(c) > WINDOW]
    if not long_enough:
        out["verdict"] = (f"{epochs} epoch(s), not more than the {WINDOW}-epoch window: cannot tell whether the "
                          "curve has flattened")
        return out
    out["trials"] = len(long_enough)
    gains = [c[-1] - c[-1 - WINDOW] for c in long_enough]
    gain = sum(gains) / len(gains)
    out.update(gains=gains, gain=gain, flat=gain < THRESHOLD)
    if out["flat"]:
        out["verdict"] = (f"flat: the reference arm's best EMA mAP rose {gain:.2f} over the last {WINDOW} of "
                          f"{epochs} epochs (under {THRESHOLD})")
    else:
        out["verdict"] = (f"still climbing: the reference arm's best EMA mAP rose {gain:.2f} over the last {WINDOW} "
                          f"of {epochs} epochs (threshold {THRESHOLD}); the verdicts compare how fast the arms "
                          "start as much as where they end, and more epochs may change them")
    return out
