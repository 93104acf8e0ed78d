"""Ablation of the label-graph depth T (`gnn_steps`); T = 0 removes graph propagation altogether.

    python studies/graph_depth.py                      # synthetic data, CPU-sized, T in 0 1 3 5, 3 seeds
"""

from __future__ import annotations

from studies import script
from studies.design.spec import StudySpec

SPEC = StudySpec(
    study="graph_depth", script=__file__, axis="gnn_steps", values=(0, 1, 3, 5),
    description="How deep should the label graph propagate? One trial per (gnn_steps, seed), every trial run "
                "to the end; T = 0 is no graph (and no concatenation before the classifier).")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
