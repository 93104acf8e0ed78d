"""epochs.csv as an append-only log (studies/exports/files.py read_epoch_log, the one reader of it) and the writer's
snapshots, journal and compaction (studies/exports/writer.py): what every reader sees while a study runs, after
its driver was SIGKILLed, and once it is finished."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from export_driver import EPOCHS, schedule, value
from helpers import read_rows

from dashboards.data import files as dashboard_files
from dashboards.data import runs
from salgl_core.config import ExperimentConfig
from studies.analysis import budget
from studies.exports import writer
from studies.exports.files import CsvDamage, csv_text, read_epoch_log, read_epoch_rows
from studies.exports.schema import EPOCH_COLUMNS, TRIALS_JOURNAL
from studies.exports.writer import StudyExport

REPO = Path(__file__).resolve().parents[1]
HEADER = ",".join(EPOCH_COLUMNS) + "\n"


def _line(t: str, e: int | str, map_: float = 0.0) -> str:
    return csv_text(EPOCH_COLUMNS, [{"trial_id": t, "epoch": e, "mAP": float(map_)}], header=False)


def _standing(text: str) -> list[tuple[str, str, str]]:
    log = read_epoch_log(text)
    return [(c[0], c[1], c[EPOCH_COLUMNS.index("mAP")]) for _, c in log.records]


# ---------------------------------------------------------------------------------------------
# The log's rules


def test_a_restart_from_scratch_supersedes_every_later_epoch():
    text = HEADER + _line("a", 1, 1) + _line("a", 2, 2) + _line("a", 3, 3) + _line("a", 1, 9) + _line("a", 2, 8)
    assert _standing(text) == [("a", "1", "9.0"), ("a", "2", "8.0")]
    assert read_epoch_log(text).superseded == 3


def test_a_resumed_trial_re_reports_its_last_epoch():
    """Trials interleave; each trial's rows stand in epoch order, trials in the order of their first row."""
    text = (HEADER + _line("b", 1, 1) + _line("a", 1, 2) + _line("b", 2, 3) + _line("a", 2, 4) + _line("a", 2, 5)
            + _line("b", 3, 6) + _line("a", 3, 7))
    assert _standing(text) == [("b", "1", "1.0"), ("b", "2", "3.0"), ("b", "3", "6.0"), ("a", "1", "2.0"),
                               ("a", "2", "5.0"), ("a", "3", "7.0")]
    log = read_epoch_log(text)
    assert log.superseded == 1 and log.torn == ""
    assert [line for line, _ in log.records] == [2, 4, 7, 3, 6, 8]  # the lines they are on, for messages


def test_a_last_line_without_its_end_is_ignored():
    cut = _line("a", 2, 5)[:-7]
    log = read_epoch_log(HEADER + _line("a", 1, 1) + cut)
    assert [c[:2] for _, c in log.records] == [["a", "1"]] and log.torn == cut
    # A header without its line end is still the header (the writer writes it whole, atomically).
    assert read_epoch_log(HEADER.rstrip("\n")).header == list(EPOCH_COLUMNS)
    assert read_epoch_log(HEADER).records == []


def test_damaged_rows_neither_supersede_nor_repair():
    text = HEADER + _line("a", 1, 1) + _line("a", "x", 2) + _line("a", 1, 3)
    assert _standing(text) == [("a", "x", "2.0"), ("a", "1", "3.0")]  # the cell is the dashboard's to name
    short = text + "a,3,0.001\n"
    with pytest.raises(CsvDamage, match="line 5 has 3 fields where the header has 16"):
        read_epoch_log(short)
    assert read_epoch_log(short, strict=False).bad == [5]  # the analysis leaves it out, with its gap


def test_the_dashboard_reads_the_log_and_names_a_cut_line(tmp_path):
    path = tmp_path / "r" / "epochs.csv"
    path.parent.mkdir()
    path.write_text(HEADER + _line("a", 1, 1) + _line("a", 2, 2) + _line("a", 2, 7) + _line("a", 3, 3)[:20])
    df, warnings = dashboard_files.read_epochs(path)
    assert list(zip(df["trial_id"], df["epoch"], df["mAP"], strict=True)) == [("a", 1, 1.0), ("a", 2, 7.0)]
    (w,) = warnings
    assert w.endswith("r/epochs.csv: its last line has no line end (a write the study was stopped in): ignored")
    # A row of the wrong length in the middle is still damage, named with its line.
    path.write_text(HEADER + "a,1\n" + _line("a", 2, 2))
    with pytest.raises(dashboard_files.LoadError, match="line 2 has 2 fields where the header has 16"):
        dashboard_files.read_epochs(path)


# ---------------------------------------------------------------------------------------------
# The writer


def _meta() -> dict:
    return {"schema_version": 1, "study": "scene_count", "run": "r", "status": "RUNNING", "provenance": {},
            "base_config": ExperimentConfig().to_flat()}


def _m(epoch: int, map_: float) -> dict:
    return {c: 1.0 for c in EPOCH_COLUMNS[2:]} | {"epoch": epoch, "mAP": float(map_), "best_mAP_ema": float(map_)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_epoch_events_append_and_finish_compacts(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    ex.begin()
    flat = ExperimentConfig().to_flat()
    for t in ("a", "b"):
        ex.trial_started(t, flat, seed=0, is_paper=False)
    for t, e, v in (("b", 1, 1), ("a", 1, 2), ("a", 2, 3), ("b", 2, 4), ("a", 3, 5), ("a", 1, 6), ("b", 2, 7)):
        before = (tmp_path / "epochs.csv").read_text()
        ex.trial_epoch(t, _m(e, v))
        after = (tmp_path / "epochs.csv").read_text()
        line = after[len(before):]  # one row appended, nothing rewritten
        assert after.startswith(before) and line.startswith(f"{t},{e},") and line.count("\n") == 1, line
    assert len(read_rows(tmp_path / "epochs.csv")) == 7
    ex.finish("FINISHED")
    rows = read_rows(tmp_path / "epochs.csv")
    # One row per (trial, epoch), trials in trials.csv's order, epochs ascending: as the writer always left it.
    assert [(r["trial_id"], r["epoch"], r["mAP"]) for r in rows] == [("a", "1", "6.0"), ("b", "1", "1.0"),
                                                                    ("b", "2", "7.0")]
    assert (tmp_path / "epochs.csv").read_text().startswith(HEADER)
    assert not (tmp_path / TRIALS_JOURNAL).exists() and not list(tmp_path.glob(".*.tmp"))


def test_trials_csv_is_a_throttled_snapshot_and_the_journal_keeps_the_rest(tmp_path):
    clock = Clock()
    ex = StudyExport.open(tmp_path, _meta(), clock=clock)
    ex.begin()
    ex.trial_started("a", ExperimentConfig().to_flat(), seed=0, is_paper=False)
    ex.trial_epoch("a", _m(1, 10.0))
    assert read_rows(tmp_path / "trials.csv") == []  # not yet: the last snapshot is not 5 s old
    assert (tmp_path / TRIALS_JOURNAL).is_file()
    clock.now = writer.SNAPSHOT_SECONDS
    ex.tick()  # the callback's step: the snapshot has come due
    (row,) = read_rows(tmp_path / "trials.csv")
    assert (row["status"], row["epochs_done"]) == ("RUNNING", "1") and not (tmp_path / TRIALS_JOURNAL).exists()
    ex.trial_ended("a", "FINISHED", seconds=3.0)
    assert read_rows(tmp_path / "trials.csv")[0]["status"] == "RUNNING"

    # The driver is killed here: a new session replays the journal over trials.csv.
    ex2 = StudyExport.open(tmp_path, _meta(), clock=clock)
    assert ex2.trials["a"]["status"] == "FINISHED" and ex2.is_final("a")
    assert json.loads((tmp_path / "study.json").read_text())["n_finished"] == 0
    ex2.begin()  # compacts: the journal folded into trials.csv
    assert read_rows(tmp_path / "trials.csv")[0]["seconds"] == "3.0"
    assert json.loads((tmp_path / "study.json").read_text())["n_finished"] == 1
    assert not (tmp_path / TRIALS_JOURNAL).exists()
    # A snapshot formats only the rows that changed: a row written once is written again once it changes.
    ex2.trial_started("b", ExperimentConfig().to_flat(), seed=1, is_paper=False)
    ex2.flush()
    ex2.trial_ended("b", "ERROR", error="boom")
    ex2.flush()
    assert [(r["trial_id"], r["status"], r["error"]) for r in read_rows(tmp_path / "trials.csv")] == [
        ("a", "FINISHED", ""), ("b", "ERROR", "boom")]


def test_the_snapshot_interval_grows_with_the_trials(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    assert ex.snapshot_interval == writer.SNAPSHOT_SECONDS
    ex.trials = {f"t{i}": {"trial_id": f"t{i}"} for i in range(5000)}
    assert ex.snapshot_interval == pytest.approx(5000 * writer.SNAPSHOT_SECONDS_PER_TRIAL)


def test_a_killed_drivers_half_lines_are_dropped_before_appending(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    ex.begin()
    ex.trial_epoch("a", _m(1, 1.0))
    ex.trial_epoch("a", _m(2, 2.0))
    ex._epochs.close()
    ex._journal.close()
    # As a SIGKILL in the middle of two writes leaves them.
    with open(tmp_path / "epochs.csv", "a") as f:
        f.write("a,3,0.00")
    with open(tmp_path / TRIALS_JOURNAL, "a") as f:
        f.write('{"trial_id": "a", "epo')
    ex2 = StudyExport.open(tmp_path, _meta())
    assert ex2.trials["a"]["epochs_done"] == 2
    ex2.trial_epoch("a", _m(3, 3.0))  # appends after a clean line end, not onto the half line
    assert [(r["epoch"], r["mAP"]) for r in read_epoch_rows(tmp_path / "epochs.csv")] == [("1", "1.0"), ("2", "2.0"),
                                                                                         ("3", "3.0")]
    assert (tmp_path / "epochs.csv").read_text().endswith("\n")
    assert json.loads((tmp_path / TRIALS_JOURNAL).read_text().splitlines()[-1])["epochs_done"] == 3


def test_a_damaged_log_stops_a_resume_with_one_clear_line(tmp_path):
    (tmp_path / "epochs.csv").write_text(HEADER + "a,1\n")
    with pytest.raises(writer.StudyError, match=r"epochs.csv: line 2 has 2 fields .*; restore it from a copy"):
        StudyExport.open(tmp_path, _meta()).begin()
    (tmp_path / "epochs.csv").unlink()
    (tmp_path / TRIALS_JOURNAL).write_text('{"trial_id": "a"}\nnot json\n')
    with pytest.raises(writer.StudyError, match=r"\.trials\.journal: line 2 is damaged .*delete the file"):
        StudyExport.open(tmp_path, _meta())


# ---------------------------------------------------------------------------------------------
# SIGKILL: a real writer in a subprocess, killed in the middle of its lines, again and again


def _expected(last: int) -> dict[tuple[str, int], float]:
    """(trial, epoch) -> mAP that stands after the schedule's events up to `last`, by the writer's old in-memory rule
    (an epoch report drops its trial's later epochs), written independently of read_epoch_log."""
    rows: dict[tuple[str, int], float] = {}
    for i, (kind, t, e) in enumerate(schedule()[:last + 1]):
        if kind == "epoch":
            rows = {k: v for k, v in rows.items() if not (k[0] == t and k[1] > e)}
            rows[(t, e)] = value(i)
    return rows


def _last_event(raw: str) -> int:
    """The index of the last epoch event whose row is on disk whole (its `seconds` cell)."""
    col = EPOCH_COLUMNS.index("seconds")
    lines = raw[:raw.rfind("\n") + 1].splitlines()[1:]
    return max((int(float(ln.split(",")[col])) for ln in lines), default=-1)


def _check_readers(run: Path, last: int) -> None:
    """The dashboard's reader and the analysis's read each standing (trial, epoch) exactly once, right."""
    want = _expected(last)
    ep = runs.load_run(run).epochs
    got = list(zip(ep["trial_id"], ep["epoch"], ep["mAP"], strict=True))
    assert len(got) == len(want) and {(t, e): v for t, e, v in got} == want
    for t in {t for t, _ in want}:  # each trial's epochs in order
        assert [e for tid, e, _ in got if tid == t] == sorted(e for tid, e in want if tid == t)
    # The analysis (studies/analysis/budget.py): each trial's running best EMA mAP over epochs 1..E.
    curves = budget._curves(run, {t for t, _ in want})
    for t, curve in curves.items():
        points = [want[(t, e)] for e in range(1, len(curve) + 1)]
        assert curve == [max(points[:k + 1]) for k in range(len(points))]
    assert set(curves) == {t for t, _ in want}  # every trial's rows are 1..E without a gap


@pytest.mark.slow
def test_sigkill_mid_line_every_reader_sees_each_row_once(tmp_path):
    run = tmp_path / "scene_count" / "r"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    driver = [sys.executable, str(REPO / "tests" / "export_driver.py"), str(run)]
    rng = random.Random(19)
    start, kills, torn = 0, 0, 0
    while kills < 4 or (not torn and kills < 12):
        proc = subprocess.Popen([*driver, str(start), "--slow"], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        try:
            proc.wait(timeout=rng.uniform(0.05, 0.4))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the schedule ended before the kill"
        kills += 1
        raw = (run / "epochs.csv").read_text()
        torn += not raw.endswith("\n")
        last = _last_event(raw)
        _check_readers(run, last)
        start = last + 1  # as Ray does: the events since what the export holds come again
    assert torn, "no kill landed inside an epochs.csv line"

    # The last session plays the rest and finishes: the compacted export, as a finished one always looked.
    out = subprocess.run([*driver, str(start), "--finish"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["ready", "done"], out.stderr
    n = len(schedule()) - 1
    _check_readers(run, n)
    rows = read_rows(run / "epochs.csv")
    assert len(rows) == len(_expected(n)) == 12 * EPOCHS  # nothing superseded left
    trials = read_rows(run / "trials.csv")
    assert [r["trial_id"] for r in trials] == sorted(r["trial_id"] for r in trials)  # in the order they started
    assert [(r["trial_id"], r["epoch"]) for r in rows] == [(t["trial_id"], str(e)) for t in trials
                                                           for e in range(1, EPOCHS + 1)]
    assert all(t["status"] == "FINISHED" and t["epochs_done"] == str(EPOCHS) for t in trials)
    assert not (run / TRIALS_JOURNAL).exists()
    assert json.loads((run / "study.json").read_text())["n_finished"] == 12


# ---------------------------------------------------------------------------------------------
# The benchmark (python -m studies.bench_export), at tiny sizes: it runs and its export is right; not timed


def test_the_benchmark_runs_at_tiny_sizes(tmp_path, capsys):
    from studies import bench_export

    out = bench_export.main(["--sizes", "20", "60", "--window", "10", "--epochs", "4", "--concurrent", "2",
                             "--folder", str(tmp_path)])
    assert json.loads(capsys.readouterr().out) == out
    assert [r["epochs"] for r in out["results"]] == [20, 60] and out["recorded"] == 90  # 60, then 3 windows
    assert all(r["ms_per_epoch_event"] > 0 and r["snapshot_every_s"] == writer.SNAPSHOT_SECONDS
               for r in out["results"])
    run = tmp_path / "bench" / "run"
    rows = read_rows(run / "epochs.csv")  # finished: compacted, one row per (trial, epoch)
    trials = read_rows(run / "trials.csv")
    assert len(rows) == 90 and len({(r["trial_id"], r["epoch"]) for r in rows}) == 90
    assert sum(int(r["epochs_done"]) for r in trials) == 90 and sum(r["status"] == "RUNNING" for r in trials) <= 2
    assert all(r["epochs_done"] == "4" for r in trials if r["status"] == "FINISHED")
