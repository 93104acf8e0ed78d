"""studies/analysis/tables.py and `python -m studies.analyze RUN --format`: the verdict table as LaTeX and Markdown,
checked for structure without LaTeX, on the committed exports; the command prints it and writes nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studies.analysis import tables
from studies.exports.schema import VERDICT_COLUMNS

REPO = Path(__file__).resolve().parents[1]
RUNS = ("scene_count", "mechanism")  # an axis of numbers; a study of named arms (arm names with underscores)


def export(study: str) -> Path:
    d = REPO / "results" / study / "default"
    if not (d / "analysis.json").is_file():
        pytest.skip(f"{d} is not in this checkout")
    return d


def analysis_of(study: str) -> dict:
    return json.loads((export(study) / "analysis.json").read_text())


def unescaped(char: str, line: str) -> int:
    """How often `char` occurs in a LaTeX line other than as an escape (\\&, \\%, ...)."""
    return sum(1 for m in re.finditer(r"\\.|.", line) if m.group() == char)


def latex_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.endswith(r" \\")]


@pytest.mark.parametrize("study", RUNS)
def test_latex_is_a_balanced_tabular_with_one_row_per_arm(study):
    a = analysis_of(study)
    text = tables.latex_table(a)
    body = [line for line in text.splitlines() if not line.startswith("%")]  # comment lines are not typeset
    # Environments nest and close.
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", "\n".join(body)):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack and body[0].startswith(r"\begin{tabular}") and body[-1] == r"\end{tabular}"
    assert r"% \usepackage{booktabs}" in text.splitlines()[:2]
    # Braces balance and math mode closes on every line; no special character is left bare.
    for line in body:
        depth = 0
        for m in re.finditer(r"\\.|.", line):
            depth += {"{": 1, "}": -1}.get(m.group(), 0)
            assert depth >= 0, line
        assert depth == 0, line
        assert unescaped("$", line) % 2 == 0, line
        for char in "_%#&^~":
            if char != "&":
                assert unescaped(char, line) == 0, (char, line)
    # A header and one row per arm, in the analysis's order, each with as many cells as the column spec.
    columns = len(re.search(r"\\begin\{tabular\}\{(.*)\}$", body[0]).group(1).replace(r"p{0.4\linewidth}", "p"))
    rows = latex_rows(text)
    assert len(rows) == 1 + len(a["arms"])
    assert {unescaped("&", r) for r in rows} == {columns - 1}
    assert [r.split(" & ")[0] for r in rows[1:]] == [tables.latex_escape(tables._axis_value(x["value"]))
                                                     for x in a["arms"]]
    assert rows[0].startswith(tables.latex_escape(a["axis"]) + " & ")
    # Signs are math-mode minus and plus, so "-0.81" reads as a minus sign, not a hyphen.
    assert not re.search(r"(?<![$\w.])-\d", "\n".join(body))


def test_latex_escapes_what_latex_would_read_as_commands():
    assert tables.latex_escape("no_graph & 80% #1 {x} ~ ^ \\ $5") == (
        r"no\_graph \& 80\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \$5")
    assert tables.latex_escape("-0.52 [-0.94, +0.10]; seeds-only") == r"$-$0.52 [$-$0.94, $+$0.10]; seeds-only"
    assert tables.latex_escape("−1 ± 2 ≥ 3") == r"$-$1 $\pm$ 2 $\geq$ 3"  # Unicode pdflatex would refuse
    mech = tables.latex_table(analysis_of("mechanism"))
    assert r"no\_graph &" in mech and "no_graph" not in mech


@pytest.mark.parametrize("study", RUNS)
def test_markdown_is_a_pipe_table_with_one_row_per_arm(study):
    a = analysis_of(study)
    lines = [line for line in tables.markdown_table(a).splitlines() if line.startswith("|")]
    header, rule, *rows = lines
    assert len(rows) == len(a["arms"])
    pipes = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
    assert pipes == {len(tables.CELLS) + 2}  # one cell per CELLS entry and the axis value, between pipes
    assert re.fullmatch(r"\|( :?-+:? \|)+", rule)
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [tables._axis_value(x["value"]) for x in a["arms"]]
    # The labels are VERDICT_COLUMNS' own, the reference arm's row says what it is.
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[0] == a["axis"] and set(cells[1:]) <= {c.label for c in VERDICT_COLUMNS}
    (ref,) = [r for r, x in zip(rows, a["arms"], strict=True) if x["is_reference"]]
    assert "| reference |" in ref and ref.rstrip(" |").endswith("the reference arm")


def test_a_joint_search_or_an_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match="is a joint search: it has no arms"):
        tables.format_verdict_table({"kind": "search", "study": "tune", "run": "r"}, "latex")
    with pytest.raises(ValueError, match="unknown table format 'html': use one of latex, markdown"):
        tables.format_verdict_table(analysis_of("scene_count"), "html")


def digest(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studies.analyze", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_cli_prints_the_table_and_writes_nothing(tmp_path):
    """On a copy of a committed export the printed table is the committed analysis's; even where analysis.json is
    stale (a trial row removed) `--format` writes nothing."""
    run = tmp_path / "mechanism"
    shutil.copytree(export("mechanism"), run)
    before = digest(run)
    out = analyze(str(run), "--format", "latex")
    assert out.returncode == 0, out.stderr
    assert out.stdout == tables.latex_table(analysis_of("mechanism"))
    assert digest(run) == before
    lines = (run / "trials.csv").read_text().splitlines(keepends=True)
    (run / "trials.csv").write_text("".join(lines[:-1]))
    before = digest(run)
    out = analyze(str(run), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert sum(line.startswith("| ") for line in out.stdout.splitlines()) == 2 + 5
    assert digest(run) == before
    out = analyze(str(run), "--format", "html")
    assert out.returncode == 2 and "invalid choice: 'html'" in out.stderr
