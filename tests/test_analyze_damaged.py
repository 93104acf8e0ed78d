"""The analysis of a damaged export (studies/exports/evidence.py, studies/analysis/analyze.py): a fuzz test over a copy
of a real committed export (the mechanism study: 5 arms x 5 paired seeds, one arm detectably better) and a
simulation of the fallback's false-positive rate.

Each damage is applied alone to a fresh copy. The analysis must not crash, must name the damaged file and trial,
must leave every input byte for byte as it was, and no verdict may become "better"/"worse" (or flip between them)
because of a damage: evidence that should be excluded never turns into a verdict.

python tests/test_analyze_damaged.py # prints the fuzz table: damage, message, verdicts before/after"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import gaussian_study

from studies.analysis import analyze, stats
from studies.exports import evidence, schema

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "results" / "mechanism" / "default"
RESAMPLES = 200
# Trials of the committed export the damages hit: no_graph seed 2, the reference (global) seed 0, random seed 0.
NO_GRAPH_2, GLOBAL_0, RANDOM_0 = "99abfc7f", "a8207c89", "111ff01b"


def _rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / schema.TRIALS_CSV, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(run: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with open(run / schema.TRIALS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _set_cell(trial: str, column: str, value: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        header, rows = _rows(run)
        next(r for r in rows if r["trial_id"] == trial)[column] = value
        _write_rows(run, header, rows)
    return damage


def _pred(run: Path, trial: str) -> Path:
    return run / schema.PREDICTIONS_DIR / f"{trial}.npz"


def _truncate(path_of: Callable[[Path], Path], keep: float) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = path_of(run)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return damage


def _corrupt(run: Path) -> None:
    path = _pred(run, NO_GRAPH_2)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(range(64))  # inside the scores: the zip's CRC no longer matches
    path.write_bytes(bytes(data))


def _rewrite_scores(trial: str, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
                    ) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with np.load(_pred(run, trial)) as z:
            scores, ids = change(z["scores"].copy(), z["image_ids"].copy())
        buf = io.BytesIO()
        np.savez(buf, scores=scores, image_ids=ids)  # bypasses save_predictions' own NaN check, as damage would
        _pred(run, trial).write_bytes(buf.getvalue())
    return damage


def _with_value(value: float) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def change(s: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s[3, 2] = value
        return s, ids
    return change


def _identical_arm(run: Path) -> None:
    """The random arm's files and metrics replaced by the reference's, seed for seed: a true statement is
    'identical to the reference', not 'every trial gave the same mAP'."""
    header, rows = _rows(run)
    ref = {r["seed"]: r for r in rows if r["arm"] == "global"}
    for r in rows:
        if r["arm"] == "random":
            shutil.copy(_pred(run, ref[r["seed"]]["trial_id"]), _pred(run, r["trial_id"]))
            r[schema.REPORTED_METRIC] = ref[r["seed"]][schema.REPORTED_METRIC]
    _write_rows(run, header, rows)


def _cut_last_row(run: Path) -> None:
    path = run / schema.TRIALS_CSV
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    path.write_text(text[: len(text) - len(last) - 1 + len(last) // 3])


def _duplicate_row(run: Path) -> None:
    header, rows = _rows(run)
    _write_rows(run, header, [*rows, dict(next(r for r in rows if r["trial_id"] == NO_GRAPH_2))])


def _files_gone(run: Path) -> None:
    _pred(run, NO_GRAPH_2).unlink()
    for p in (run / schema.SCENES_DIR).glob(f"{NO_GRAPH_2}.*"):
        p.unlink()


def _orphan(run: Path) -> None:
    shutil.copy(_pred(run, NO_GRAPH_2), _pred(run, "deadbeef"))


def _drop_arm_predictions(arm: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        for r in _rows(run)[1]:
            if r["arm"] == arm:
                _pred(run, r["trial_id"]).unlink()
    return damage


def _not_an_array(run: Path) -> None:
    """A zip whose `scores` member is no .npy: np.load hands back raw bytes."""
    import zipfile

    with np.load(_pred(run, NO_GRAPH_2)) as z:
        ids = z["image_ids"]
    buf = io.BytesIO()
    np.save(buf, ids)
    with zipfile.ZipFile(_pred(run, NO_GRAPH_2), "w") as z:
        z.writestr("scores", b"not an array")
        z.writestr("image_ids.npy", buf.getvalue())


def _study_key(key: str, value: object) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        meta = json.loads((run / schema.STUDY_JSON).read_text())
        (run / schema.STUDY_JSON).write_text(json.dumps({**meta, key: value}))
    return damage


def _bom(run: Path) -> None:
    path = run / schema.TRIALS_CSV
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _arm_of(trial: str) -> str:
    return next(r["arm"] for r in _rows(EXPORT)[1] if r["trial_id"] == trial)


def _last_trial(run: Path) -> str:
    return _rows(run)[1][-1]["trial_id"]


# name -> (damage, text every message about it must hold, the trial it concerns or None, kind)
# kind: "trial" (one trial left out), "run" (no comparison tested), "named" (noted; the evidence stands),
# "identical" (a true 'no difference'), "fatal" (study.json: the analysis cannot start and says why).
DAMAGES: dict[str, tuple[Callable[[Path], None], str, str | None, str]] = {
    "predictions file truncated": (_truncate(lambda r: _pred(r, NO_GRAPH_2), 0.5), f"predictions/{NO_GRAPH_2}.npz",
                                   NO_GRAPH_2, "trial"),
    "predictions file corrupt": (_corrupt, f"predictions/{NO_GRAPH_2}.npz", NO_GRAPH_2, "trial"),
    "predictions file empty": (_truncate(lambda r: _pred(r, NO_GRAPH_2), 0.0), f"predictions/{NO_GRAPH_2}.npz",
                               NO_GRAPH_2, "trial"),
    "predictions file missing": (lambda r: _pred(r, NO_GRAPH_2).unlink(), f"predictions/{NO_GRAPH_2}.npz",
                                 NO_GRAPH_2, "trial"),
    "reference's predictions truncated": (_truncate(lambda r: _pred(r, GLOBAL_0), 0.7),
                                          f"predictions/{GLOBAL_0}.npz", GLOBAL_0, "trial"),
    "NaN scores": (_rewrite_scores(NO_GRAPH_2, _with_value(np.nan)), "NaN", NO_GRAPH_2, "trial"),
    "infinite scores": (_rewrite_scores(NO_GRAPH_2, _with_value(np.inf)), "infinite", NO_GRAPH_2, "trial"),
    "predictions with fewer rows": (_rewrite_scores(NO_GRAPH_2, lambda s, i: (s[:-10], i[:-10])),
                                    f"predictions/{NO_GRAPH_2}.npz", NO_GRAPH_2, "trial"),
    "predictions of other images": (_rewrite_scores(NO_GRAPH_2, lambda s, i: (s, i + 10**6)),
                                    "other images", NO_GRAPH_2, "trial"),
    "targets.npz truncated": (_truncate(lambda r: r / schema.PREDICTIONS_DIR / schema.TARGETS_FILE, 0.5),
                              "predictions/targets.npz", None, "run"),
    "targets.npz empty": (_truncate(lambda r: r / schema.PREDICTIONS_DIR / schema.TARGETS_FILE, 0.0),
                          "predictions/targets.npz", None, "run"),
    "trials.csv mAP disagrees with predictions": (_set_cell(NO_GRAPH_2, schema.REPORTED_METRIC, "86.0"),
                                                  "trials.csv reports 86.00", NO_GRAPH_2, "trial"),
    "blank seed cell": (_set_cell(NO_GRAPH_2, "seed", ""), "seed cell ''", NO_GRAPH_2, "trial"),
    "infinite metric cell": (_set_cell(NO_GRAPH_2, schema.REPORTED_METRIC, "inf"), "'inf' is no mAP", NO_GRAPH_2,
                             "trial"),
    "metric cell out of range": (_set_cell(NO_GRAPH_2, schema.REPORTED_METRIC, "1e308"), "no mAP in percent",
                                 NO_GRAPH_2, "trial"),
    "status cell damaged": (_set_cell(NO_GRAPH_2, "status", "FINISHE"), "status cell 'FINISHE'", NO_GRAPH_2,
                            "trial"),
    "seed outside the study's seeds": (_set_cell(NO_GRAPH_2, "seed", "7"), "seed 7 is none of the study's seeds",
                                       NO_GRAPH_2, "trial"),
    "predictions folder missing": (lambda r: shutil.rmtree(r / schema.PREDICTIONS_DIR),
                                   "predictions/targets.npz is missing though study.json says", None, "run"),
    "reference arm's predictions all missing": (_drop_arm_predictions("global"), "predictions/", None, "reference"),
    "numpy member not an array": (_not_an_array, f"predictions/{NO_GRAPH_2}.npz", NO_GRAPH_2, "trial"),
    "unknown arm cell": (_set_cell(NO_GRAPH_2, "arm", "no_grap"), "'no_grap' is none of", NO_GRAPH_2, "trial"),
    "trials.csv row cut short": (_cut_last_row, "cut short", "_last", "trial"),
    "duplicated trial id": (_duplicate_row, "listed 2 times", NO_GRAPH_2, "trial"),
    "trial without files": (_files_gone, f"predictions/{NO_GRAPH_2}.npz", NO_GRAPH_2, "trial"),
    "files without a trial": (_orphan, "predictions/deadbeef.npz belongs to no trial", None, "named"),
    "trials.csv not text": (lambda r: (r / schema.TRIALS_CSV).write_bytes(bytes(range(256)) * 4), "trials.csv",
                            None, "run"),
    "epochs.csv not text": (lambda r: (r / schema.EPOCHS_CSV).write_bytes(b"\xff\xfe\x00" * 100), "epochs.csv",
                            None, "named"),
    "identical arm": (_identical_arm, "exactly 0", None, "identical"),
    "study.json truncated": (_truncate(lambda r: r / schema.STUDY_JSON, 0.5), "study.json", None, "fatal"),
    "study.json axis_values not a list": (_study_key("axis_values", 5), "its axis_values 5 is not a list", None,
                                          "fatal"),
    "trials.csv re-saved with a byte-order mark": (_bom, "", None, "clean"),
}


def _kind(c: dict) -> str:
    if c["p_holm"] is not None and c["p_holm"] < stats.ALPHA:
        return "better" if c["diff"] > 0 else "worse"
    return "no test" if c["p"] is None else "none"


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def baseline() -> dict:
    if not (EXPORT / schema.STUDY_JSON).is_file():
        pytest.skip(f"the committed export {EXPORT} is missing")
    return analyze.analyze_run(EXPORT, RESAMPLES)


def _damaged(name: str, tmp: Path) -> tuple[Path, dict | None, str]:
    """A damaged copy, its analysis (None when it cannot start) and every message about it in one text."""
    run = tmp / "run"
    shutil.copytree(EXPORT, run)
    DAMAGES[name][0](run)
    before = _digest(run)
    if DAMAGES[name][3] == "fatal":
        out = subprocess.run([sys.executable, "-m", "studies.analyze", str(run), "--bootstrap", "20"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.startswith("error: "), out.stderr
        assert "Traceback" not in out.stderr and _digest(run) == before
        return run, None, out.stderr
    a = analyze.analyze_run(run, RESAMPLES)
    assert _digest(run) == before, "the analysis changed an input file"
    said = "\n".join([*a["notes"], *(c["verdict"] for c in a["comparisons"]),
                      str((a.get("budget") or {}).get("verdict"))])
    return run, a, said


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_export_is_named_and_never_turns_into_a_verdict(name, baseline, tmp_path):
    run, a, said = _damaged(name, tmp_path)
    _, text, trial, kind = DAMAGES[name]
    if trial == "_last":
        trial = _last_trial(EXPORT)
    assert text in said, said
    if trial:
        assert f"trial {trial}" in said, said
    if a is None:
        return
    before = {c["value"]: c for c in baseline["comparisons"]}
    for c in a["comparisons"]:
        got, was = _kind(c), _kind(before[c["value"]])
        # A damage may cost a detection; it never makes one, nor flips better and worse: Holm's family stays
        # every planned comparison, an untested one counted as p = 1.
        assert got not in ("better", "worse") or got == was, (c["value"], c["verdict"], before[c["value"]]["verdict"])
        assert c["holm"] == ("in the family of 4" if c["p"] is not None else
                             f"in the family of 4 as p = 1, untested: {c['no_test'] or 'one usable seed per arm'}"
                             [:len(c["holm"])]), c
    if kind == "trial":
        hit = next(t for t in a["trials"] if t["trial_id"] == trial)
        assert hit["excluded"], hit
        arm = _arm_of(trial)
        hit_arms = [c for c in a["comparisons"] if arm in (c["value"], "global")]
        # The comparisons the trial belonged to say that its seed left both arms, and stay paired on images.
        for c in hit_arms:
            assert c["fallback"] and "left out of both arms" in c["fallback"] and trial in c["fallback"], c
            assert c["paired"] and c["n"] == c["n_reference"] == 4 and c["interval"] == "seeds+images", c
        assert all(c["fallback"] is None for c in a["comparisons"] if c not in hit_arms)
    if kind in ("run", "reference"):
        assert all(c["p"] is None and "untested" in c["holm"] for c in a["comparisons"]), a["comparisons"]
        assert all(c["fallback"] or c["no_test"] for c in a["comparisons"])
    if kind == "clean":  # not damage: every trial used, the same verdicts
        assert not any(t["excluded"] for t in a["trials"]) and not a["notes"], a["notes"]
        assert [c["verdict"] for c in a["comparisons"]] == [c["verdict"] for c in baseline["comparisons"]]
    if kind == "identical":
        c = next(c for c in a["comparisons"] if c["value"] == "random")
        assert (c["diff"], c["p"]) == (0.0, 1.0) and c["holm"] == "in the family of 4", c
        assert c["verdict"].startswith("no difference: each seed's difference to the reference is exactly 0")
        assert "every trial of both arms" not in said


def test_a_trial_left_out_takes_its_seed_out_of_both_arms_only_where_it_is(baseline, tmp_path):
    run, a, _ = _damaged("predictions file truncated", tmp_path)
    by = {c["value"]: c for c in a["comparisons"]}
    assert (by["no_graph"]["n"], by["no_graph"]["n_reference"], by["no_graph"]["paired"]) == (4, 4, True)
    assert by["no_graph"]["fallback"] == ("seed 2 left out of both arms (trial 99abfc7f of this arm: predictions "
                                          "unreadable)")
    assert all(by[v]["fallback"] is None and by[v]["n"] == 5 for v in ("learned", "oracle", "random"))
    # The reference's own trial concerns every comparison.
    _, a, _ = _damaged("reference's predictions truncated", tmp_path / "ref")
    assert all(c["n"] == 4 and c["fallback"].startswith("seed 0 left out of both arms") for c in a["comparisons"])


def test_the_printed_table_and_files_say_which_fallback_was_taken(baseline, tmp_path):
    from studies.analysis.summary import format_table

    run, a, _ = _damaged("targets.npz truncated", tmp_path)
    table = format_table(a)
    assert "no_graph: no test: predictions/targets.npz unreadable (BadZipFile" in table
    assert "no_graph: Holm: in the family of 4 as p = 1, untested: no test: predictions/targets.npz" in table
    analyze.write_analysis(tmp_path / "out", a)
    with open(tmp_path / "out" / schema.COMPARISONS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["fallback"].startswith("no test: predictions/targets.npz") and r["p"] == "" for r in rows)


@pytest.mark.slow
def test_the_fallback_keeps_the_false_positive_rate_at_alpha():
    """Three arms no different from the reference, one trial of the study unusable in every simulated study:
    dropping its seed from both arms keeps the family-wise false-positive rate at or under 5%. The old
    fallback, a seeds-only test of the comparison that trial belonged to, does not."""
    rng = np.random.default_rng(11)
    for n_seeds in (3, 5):
        kept = seeds_only = 0
        total = 2000
        for _ in range(total):
            (ref, rr), *arms = gaussian_study(rng, n_seeds, [0.0] * 4, common=0.6)
            bad_arm, bad_seed = int(rng.integers(0, 4)), int(rng.integers(0, n_seeds))  # 0 = the reference
            ps, old = [], []
            for k, (arm, ar) in enumerate(arms, start=1):
                trials = [[{"trial_id": f"{g}-{s}", "seed": s, "excluded": "damaged" if (g, s) == (bad_arm, bad_seed)
                            else None} for s in range(n_seeds)] for g in (k, 0)]
                a, r, left, _ = evidence.comparison_trials(*trials, design=list(range(n_seeds)))
                hit = bad_arm in (0, k)
                # The rule itself: the damaged trial's seed leaves both sides of its comparisons, and only those.
                assert (bad_seed not in a and bad_seed not in r and len(a) == len(r) == n_seeds - 1
                        and f"trial {bad_arm}-{bad_seed}" in left) if hit else (len(a) == n_seeds and left is None)
                ps.append(stats.compare({s: arm[s] for s in a}, {s: ref[s] for s in r}, {s: ar[s] for s in a},
                                        {s: rr[s] for s in r})["p"])
                old.append(stats.compare(arm, ref, None if hit else ar, None if hit else rr)["p"])
            kept += any(p is not None and p < stats.ALPHA for p in stats.holm(ps))
            seeds_only += any(p is not None and p < stats.ALPHA for p in stats.holm(old))
        bound = 0.05 + 1.645 * math.sqrt(0.05 * 0.95 / total)
        assert kept / total <= bound, (n_seeds, kept / total)
        assert seeds_only / total > 0.05, (n_seeds, seeds_only / total)  # what the fallback replaced


@pytest.mark.slow
@pytest.mark.parametrize("name", ["targets.npz truncated", "predictions file truncated", "infinite metric cell",
                                  "trials.csv row cut short", "identical arm"])
@pytest.mark.slow
def test_the_dashboard_shows_a_damaged_export_without_an_exception(name, monkeypatch, tmp_path):
    """The same damages through the dashboard (Streamlit's AppTest), with no analysis.json to fall back on: the
    page draws, and what the analysis says about the damage is on it."""
    from test_dashboard_app import start, texts

    root = tmp_path / "results"
    run = root / "mechanism" / "default"
    shutil.copytree(EXPORT, run)
    (run / schema.ANALYSIS_JSON).unlink()
    DAMAGES[name][0](run)
    at = start(monkeypatch, root, "mechanism/default", timeout=120)  # no analysis.json: the page computes it
    tables = [t.value.to_csv() for t in [*at.dataframe, *at.table]]
    shown = "\n".join([texts(at.markdown), texts(at.caption), texts(at.warning), texts(at.info), *tables])
    assert DAMAGES[name][1] in shown, name


def _fuzz_table() -> str:
    """Markdown: every damage, the first message about it, and each arm's verdict kind before and after."""
    import tempfile

    base = analyze.analyze_run(EXPORT, RESAMPLES)
    before = {c["value"]: _kind(c) for c in base["comparisons"]}
    lines = ["| damage | message | verdicts before | verdicts after |", "|---|---|---|---|"]
    for name in DAMAGES:
        with tempfile.TemporaryDirectory() as tmp:
            _, a, said = _damaged(name, Path(tmp))
        text = DAMAGES[name][1]
        msg = next((line for line in said.splitlines() if text in line), said.splitlines()[0]).replace("|", "/")
        after = {c["value"]: _kind(c) for c in a["comparisons"]} if a else {}
        fmt = ", ".join(f"{v} {k}" for v, k in before.items())
        lines.append(f"| {name} | {msg} | {fmt} | " + (", ".join(f"{v} {k}" for v, k in after.items()) or "-") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_fuzz_table())
