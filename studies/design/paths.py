"""Where things go by default: the repository (exports store paths relative to it), users' runs and Ray's folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Users' runs go to the git-ignored runs/; results/ holds the committed examples (`make results` writes
# them there with --results-dir results) and the paper's tables.
DEFAULT_RESULTS = REPO / "runs"
# Ray's experiment folder when --storage-path is not given: on this machine only (git-ignored).
DEFAULT_STORAGE = REPO / ".ray_results"
