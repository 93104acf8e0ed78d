"""tools/gpu_check.sh: its step budgets fit 8 minutes by construction (the table, the script's own refusal, what it
prints), its summary reads what a step stopped at its budget left, and the smoke run passes end to end."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"
LIMIT_S = 480  # the budget for `make gpu-check`


def _table(text: str) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The script's STEP_BUDGETS table (name, seconds) and its KILL_GRACE, OVERHEAD and LIMIT settings."""
    body = re.search(r"^STEP_BUDGETS=\((.*?)^\)", text, re.S | re.M).group(1)
    rows = [(m[1], int(m[2])) for m in re.finditer(r"^\s+(\w+)\s+(\d+)\s*$", body, re.M)]
    settings = {k: int(re.search(rf"^{k}=(\d+)", text, re.M).group(1)) for k in ("KILL_GRACE", "OVERHEAD", "LIMIT")}
    return rows, settings


def _dry_run(script: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "GPU_CHECK_DRY_RUN": "1", **env})


def test_step_budgets_fit_eight_minutes():
    text = SCRIPT.read_text()
    rows, s = _table(text)
    names = [n for n, _ in rows]
    assert names == ["attention", "train_bench", "train_compile", "train_run", "study"]
    assert s["LIMIT"] == LIMIT_S and s["KILL_GRACE"] > 0 and s["OVERHEAD"] > 0
    # Each step may outlive its budget by the kill grace; the script's own work is the overhead.
    assert sum(b for _, b in rows) + len(rows) * s["KILL_GRACE"] + s["OVERHEAD"] <= LIMIT_S
    # Every step the script runs is in the table, once, in its order: no step escapes a budget.
    assert re.findall(r"^step (\w+) ", text, re.M) == names


def test_dry_run_prints_the_budgets_and_refuses_an_overrun(tmp_path):
    rows, s = _table(SCRIPT.read_text())
    total = sum(b for _, b in rows)
    planned = total + len(rows) * s["KILL_GRACE"] + s["OVERHEAD"]
    out = _dry_run(SCRIPT)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == (f"== gpu-check: {len(rows)} steps, budgets {total} s + {len(rows)} x {s['KILL_GRACE']} s grace"
                        f" + {s['OVERHEAD']} s script = {planned} s, limit {LIMIT_S} s (time scale 1)")
    assert [re.match(r"== (\w+): budget (\d+) s", line).groups() for line in lines[1:]] == [
        (n, str(b)) for n, b in rows]
    smoke = _dry_run(SCRIPT, GPU_CHECK_SMOKE="1")  # smoke: every figure times 10
    assert f"= {planned * 10} s, limit {LIMIT_S * 10} s (time scale 10)" in smoke.stderr.splitlines()[0]
    # A budget raised past the limit: the script refuses before running anything.
    (tmp_path / "tools").mkdir()
    over = SCRIPT.read_text().replace(f"  study {dict(rows)['study']}\n", f"  study {dict(rows)['study'] + 60}\n")
    (tmp_path / "tools" / "gpu_check.sh").write_text(over)
    out = _dry_run(tmp_path / "tools" / "gpu_check.sh")
    assert out.returncode == 2
    assert out.stderr.startswith(f"gpu-check: budgets {total + 60} s + ") and "over the 480 s limit" in out.stderr
    assert "== attention" not in out.stderr


def _summary(*argv: str) -> None:
    out = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check_summary.py"), *argv], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_summary_reads_what_a_stopped_step_left(tmp_path):
    """train_bench stopped at its budget (exit 124) after one configuration, its last line cut off; train_compile
    never started: gpu_check.json still holds that configuration's figures, and says the check failed."""
    (tmp_path / "steps.tsv").write_text("attention\t0\t20\t40\ntrain_bench\t124\t110\t110\n")
    config = {"record": "config", "amp": "bf16", "channels_last": True, "compile": False, "error": None,
              "tensors": {"images_per_s": 512.5, "step_ms": 250.0}, "warmup_s": 9.0, "peak_mem_mb": 46000.0}
    failed = {**config, "amp": "fp16", "error": "OutOfMemoryError: CUDA out of memory", "tensors": None}
    loader = {"record": "loader", "images_per_s": 900.0, "warmup_batches": 32, "workers": 8}
    (tmp_path / "train_bench.jsonl").write_text(
        "\n".join(json.dumps(r) for r in ({"record": "setup"}, loader, failed, config)) + '\n{"record": "conf')
    _summary("check", str(tmp_path), "0", "300", "480")
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (out["ok"], out["within_limit"], out["total_seconds"], out["limit_seconds"]) == (False, True, 300, 480)
    assert out["steps"][1] == {"name": "train_bench", "rc": 124, "seconds": 110, "budget": 110, "skipped": False}
    g = out["goals"]
    assert g["best_images_per_s"] == 512.5 and g["meets_images_per_s_goal"] is True
    assert g["eager"] == {"amp": "bf16", "channels_last": True, "compile": False, "compile_s": None,
                          "peak_mem_mb": 46000.0, "images_per_s": 512.5}
    assert g["compiled"] is None and g["loader_only_images_per_s"] == 900.0
    assert g["loader_fed_images_per_s"] is None and g["loader_keeps_up"] is None and g["peak_mem_mb"] == 46000.0


@pytest.mark.slow
def test_smoke_check_passes_end_to_end(tmp_path):
    # Every step at CPU sizes but the study (a two-trial Ray study, ~40 s here; the study path has its own tests):
    # what this checks is the script, its budgets, its records and its summary.
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PY": sys.executable,
           "GPU_CHECK_SKIP": "study"}
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    dest = tmp_path / "gpu_check"
    summary = json.loads((dest / "gpu_check.json").read_text())
    rows, _ = _table(SCRIPT.read_text())
    assert summary["ok"] and summary["smoke"] and summary["within_limit"]
    assert [(s["name"], s["rc"], s["budget"]) for s in summary["steps"]] == [
        (n, None if n == "study" else 0, b * 10) for n, b in rows]
    assert [s["name"] for s in summary["steps"] if s["skipped"]] == ["study"]
    assert "== study: skipped (GPU_CHECK_SKIP)" in out.stderr and not (tmp_path / "gpu_check" / "study.log").exists()
    for name, _ in rows[:-1]:
        assert f"== {name}: budget " in out.stderr
    bench = [json.loads(line) for line in (dest / "train_bench.jsonl").read_text().splitlines()]
    assert [r["record"] for r in bench] == ["setup", "loader", "config", "loader_fed", "summary"]
    compiled = [json.loads(line) for line in (dest / "train_compile.jsonl").read_text().splitlines()]
    assert [r["record"] for r in compiled] == ["setup", "config", "summary"]
    assert compiled[1]["compile"] and compiled[1]["compile_s"] >= 0 and compiled[1]["error"] is None
    g = summary["goals"]
    assert g["eager"]["images_per_s"] > 0 and g["compiled"]["images_per_s"] > 0
    assert g["loader_fed_images_per_s"] > 0 and 0 <= g["data_wait_share"] <= 1
    assert json.loads((dest / "attention.json").read_text())["benchmark"] == "attention"
    assert len(json.loads((dest / "train_run.json").read_text())["epochs"]) == 1
    assert json.loads((dest / "study.json").read_text()) == {"study": None, "trials": []}
