"""Where the results live and how the dashboard names paths: the results folders, short and repo-relative names.

By default the dashboard reads two folders of the repository: `results/` (the committed example exports
and the paper tables) and the git-ignored `runs/` (where users' study runs go). $SALGL_RESULTS_DIR or
the sidebar box replace both with one or more folders.

The dashboard never shows where the repository is checked out: a folder inside it is shown relative to
it (`results`, `.cache/demo_results`), so screenshots and messages read the same on every machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"  # committed example exports; results/paper holds the paper's tables
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"        # git-ignored: users' study runs, runs/<study>/<run>/
ENV_VAR = "SALGL_RESULTS_DIR"


def default_dirs() -> list[Path]:
    """The folders read when neither the sidebar box nor $SALGL_RESULTS_DIR names any."""
    return [DEFAULT_RESULTS_DIR, DEFAULT_RUNS_DIR]


def split_dirs(text: str) -> list[str]:
    """Folder names separated by os.pathsep (`:` here, as in $PATH) or commas; blanks dropped."""
    return [p.strip() for p in re.split(f"[,{re.escape(os.pathsep)}]", text) if p.strip()]


def results_dirs(override: str | None = None) -> list[Path]:
    """The results folders: those `override` (the sidebar box) names, else $SALGL_RESULTS_DIR's, else
    default_dirs(). Each appears once, in the order given.

    A relative path is taken from the repository root, the way the sidebar shows it, so the same text
    means the same folder whichever directory streamlit was started from.
    """
    raw = split_dirs(override or "") or split_dirs(os.environ.get(ENV_VAR, ""))
    if not raw:
        return default_dirs()
    out: list[Path] = []
    for r in raw:
        p = Path(r).expanduser()
        p = p if p.is_absolute() else REPO_ROOT / p
        if p not in out:
            out.append(p)
    return out


def display_path(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it (e.g. `results`), else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except (ValueError, OSError):
        return str(path)


def display_dirs(paths: Iterable[str | Path]) -> str:
    """Several folders as the sidebar box shows them (and reads them back): `results, runs`."""
    return ", ".join(display_path(p) for p in paths)


def shown(path: str | Path, parts: int = 4) -> str:
    """A short, still unambiguous name for messages: its last `parts` parts, results/<study>/<run>/<file>."""
    path = Path(path)
    return str(Path(*path.parts[-parts:])) if len(path.parts) > parts else str(path)
