"""The visibility study's view: learned-scene mAP and NMI against the data's scene visibility, with the
oracle arm as the ceiling and the global-graph arm as the floor (pure pandas; charts/visibility.py draws it).

A run qualifies when its learned-scene arms (scene_source learned, K > 1) span more than one
`synthetic_scene_visibility`. Every arm is one row (its trials share a visibility); the chart draws the oracle
(scene_source oracle) and global (K = 1) rows as bands across the range, since their scene choice does not
read the image (though their backbone sees that visibility's backgrounds).
"""

from __future__ import annotations

import pandas as pd

from studies.analysis.stats import mean_ci

KNOB = "synthetic_scene_visibility"
ROLES = ("learned", "oracle", "global")
COLUMNS = ["role", "arm", "visibility", "n", "mean", "ci_low", "ci_high", "nmi", "nmi_n"]


def _role(row: pd.Series) -> str | None:
    k = pd.to_numeric(row.get("num_scenes"), errors="coerce")
    source = str(row.get("scene_source") or "learned")
    if k == 1:
        return "global"
    if source in ("learned", "oracle"):
        return source
    return None  # random scenes and anything else: not part of this view


def visibility_summary(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per arm (role learned / oracle / global) of the FINISHED trials: visibility, n, mean metric and
    its 95% Student t interval over seeds, mean scene NMI. Empty when the run has no visibility sweep."""
    need = {KNOB, "num_scenes", "status", metric}
    if not need <= set(trials.columns) or not len(trials):
        return pd.DataFrame(columns=COLUMNS)
    t = trials[trials["status"] == "FINISHED"].copy()
    t["role"] = t.apply(_role, axis=1)
    t["visibility"] = pd.to_numeric(t[KNOB], errors="coerce")
    t["metric"] = pd.to_numeric(t[metric], errors="coerce")
    t["nmi_value"] = pd.to_numeric(t["scene_nmi"], errors="coerce") if "scene_nmi" in t else float("nan")
    t = t[t["role"].notna() & t["metric"].notna() & t["visibility"].notna()]
    if t[t["role"] == "learned"]["visibility"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    arm = t["arm"] if "arm" in t else t["role"] + "@" + t["visibility"].astype(str)
    rows = []
    for (role, name, v), g in t.groupby([t["role"], arm, t["visibility"]], sort=False):
        ci = mean_ci(g["metric"].tolist())
        nmi = g["nmi_value"].dropna()
        rows.append({"role": role, "arm": name, "visibility": float(v), "n": len(g),
                     "mean": float(g["metric"].mean()), "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                     "nmi": float(nmi.mean()) if len(nmi) else float("nan"), "nmi_n": len(nmi)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["order"] = out["role"].map({r: i for i, r in enumerate(ROLES)})
    return out.sort_values(["order", "visibility"]).drop(columns="order").reset_index(drop=True)
