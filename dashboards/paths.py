"""Where the results live and how the dashboard names paths: the results root, short and repo-relative names.

The dashboard never shows where the repository is checked out: a folder inside it is shown relative to
it (`results`, `.cache/demo_results`), so screenshots and messages read the same on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"
ENV_VAR = "SALGL_RESULTS_DIR"


def results_dir(override: str | None = None) -> Path:
    """The results root: `override` (the sidebar box), else $SALGL_RESULTS_DIR, else <repo>/results.

    A relative path is taken from the repository root, the way the sidebar shows it, so the same text
    means the same folder whichever directory streamlit was started from.
    """
    raw = (override or "").strip() or os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_RESULTS_DIR
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def display_path(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it (e.g. `results`), else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except (ValueError, OSError):
        return str(path)


def shown(path: str | Path, parts: int = 4) -> str:
    """A short, still unambiguous name for messages: its last `parts` parts, results/<study>/<run>/<file>."""
    path = Path(path)
    return str(Path(*path.parts[-parts:])) if len(path.parts) > parts else str(path)
