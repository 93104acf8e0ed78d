"""The Streamlit dashboard of the SALGL ablations: `streamlit run dashboards/app.py`.

The entry point only: dashboards/ui/page.py lays the page out from what dashboards.data reads, dashboards.shaping
shapes and words and dashboards.charts draws. Reads study exports (results/README.md); never needs Ray running.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts dashboards/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboards.ui.page import main  # noqa: E402

main()
