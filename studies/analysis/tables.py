"""The verdict table, paper-ready: a LaTeX `tabular` or a GitHub Markdown table of an ablation's analysis.

    python -m studies.analyze results/<study>/<run> --format latex|markdown

One row per arm (analysis.json `arms`, in its order): the axis value, the seeds, the mean with its 95% interval,
the difference to the reference arm with its 95% interval, the Holm-adjusted p and the verdict. The cells are
schema.VERDICT_COLUMNS', formatted by studies.analysis.summary as the terminal's and the dashboard's tables
format them; a number and its interval share one cell, headed by the interval column's label.
"""

from __future__ import annotations

import re
from typing import Any

from studies.analysis.summary import format_verdict_cell, verdict_cell
from studies.exports.schema import VERDICT_COLUMNS, VerdictColumn

FORMATS = {"latex": "LaTeX", "markdown": "Markdown"}
EXTENSIONS = {"latex": "tex", "markdown": "md"}
MIME_TYPES = {"latex": "text/x-tex", "markdown": "text/markdown"}


def _column(of: str, key: str) -> VerdictColumn:
    return next(c for c in VERDICT_COLUMNS if c.of == of and c.key == key)


# The table's cells after the axis value: each a VERDICT_COLUMNS column, or a number and its interval.
CELLS: tuple[tuple[VerdictColumn, ...], ...] = (
    (_column("arm", "n"),),
    (_column("arm", "mean"), _column("arm", "ci")),
    (_column("comparison", "diff"), _column("comparison", "ci")),
    (_column("comparison", "p_holm"),),
    (_column("comparison", "verdict"),),
)


def _is_number(cols: tuple[VerdictColumn, ...]) -> bool:
    """A cell of one number (right-aligned), not a number with its interval or a text."""
    return len(cols) == 1 and cols[0].fmt != "text" and not cols[0].fmt.endswith("interval")


def _axis_value(v: Any) -> str:
    """An axis value as a row label: 1 not 1.0, 0.99, an arm's name unchanged."""
    return format(v, "g") if isinstance(v, float) else str(v)


def _cell(cols: tuple[VerdictColumn, ...], arm: dict[str, Any], comparison: dict[str, Any], missing: str) -> str:
    if arm.get("is_reference") and cols[0].of == "comparison":
        # The reference arm is not compared with itself: its comparison cells say what it is.
        return " ".join(c.reference for c in cols if c.reference) or missing
    parts = [format_verdict_cell(c, verdict_cell(c, arm, comparison), missing) for c in cols]
    return " ".join(p for p in parts if p != missing) or missing


def verdict_rows(analysis: dict[str, Any], missing: str = "-") -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per arm, as plain text. ValueError for a joint search (no arms)."""
    if analysis.get("kind") != "ablation":
        raise ValueError(f"{analysis.get('study')}/{analysis.get('run')} is a joint search: it has no arms and no "
                         f"reference arm, so no verdict table")
    comparisons = analysis.get("comparisons") or []
    header = [str(analysis.get("axis")), *(cols[-1].label for cols in CELLS)]
    rows = []
    for arm in analysis.get("arms") or []:
        c = next((c for c in comparisons if c.get("value") == arm.get("value")), {})
        rows.append([_axis_value(arm.get("value")), *(_cell(cols, arm, c, missing) for cols in CELLS)])
    return header, rows


def caption(analysis: dict[str, Any]) -> str:
    """What the table shows, in one line."""
    return (f"{analysis.get('study')}/{analysis.get('run')}: {analysis.get('metric')} ({analysis.get('unit')}), "
            f"mean over seeds; difference to the reference arm {analysis.get('axis')} = "
            f"{_axis_value(analysis.get('reference'))}; 95% intervals; p adjusted by Holm over the arms compared")


# ---------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}",
                  # Unicode a verdict may use, which pdflatex's default input encoding does not set.
                  "−": "$-$", "±": r"$\pm$", "≤": r"$\leq$", "≥": r"$\geq$", "×": r"$\times$", "–": "--", "—": "---",
                  "★": r"$\star$"}
_LATEX_RE = re.compile("|".join(map(re.escape, _LATEX_SPECIAL)))
# A sign in front of a number (not a hyphen inside a word such as "seeds-only"): set in math mode, where "-" is a
# minus sign as wide as "+", so the columns of signed numbers line up.
_SIGN_RE = re.compile(r"(?<![\w.])([-+])(?=\d)")


def latex_escape(text: str) -> str:
    """`text` as LaTeX typesets it literally, with its numbers' signs as math-mode minus and plus."""
    return _SIGN_RE.sub(r"$\1$", _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text))


def latex_table(analysis: dict[str, Any]) -> str:
    """A self-contained `tabular` with booktabs rules; the verdict column wraps."""
    header, rows = verdict_rows(analysis, missing="--")
    spec = "l" + "".join("r" if _is_number(cols) else r"p{0.4\linewidth}" if cols[0].fmt == "text" else "l"
                         for cols in CELLS)
    lines = [f"% {caption(analysis)}", r"% \usepackage{booktabs}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    # "--" (an en dash) marks a missing cell; escaping leaves it alone.
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    return text.replace("|", r"\|")


def markdown_table(analysis: dict[str, Any]) -> str:
    """A GitHub pipe table under a one-line caption; numbers right-aligned."""
    header, rows = verdict_rows(analysis, missing="–")
    align = [":--", *("--:" if _is_number(cols) else ":--" for cols in CELLS)]
    lines = [f"*{_md(caption(analysis))}*", "", "| " + " | ".join(map(_md, header)) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def format_verdict_table(analysis: dict[str, Any], fmt: str) -> str:
    """The verdict table in one of FORMATS. ValueError for a joint search or an unknown format."""
    if fmt == "latex":
        return latex_table(analysis)
    if fmt == "markdown":
        return markdown_table(analysis)
    raise ValueError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
