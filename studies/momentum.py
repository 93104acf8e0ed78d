"""Ablation of the co-occurrence momentum mu (`comat_momentum`): M_k <- mu * M_k + this batch's counts.

mu = 1.0 is the official running sum over the whole run (the paper's setting); mu = 0 keeps only the
current batch. The knob is ours, not the paper's.

    python studies/momentum.py                         # synthetic data, CPU-sized, mu in 0 0.9 0.99 1, 3 seeds
"""

from __future__ import annotations

from studies import script
from studies.design.spec import StudySpec

SPEC = StudySpec(
    study="momentum", script=__file__, axis="comat_momentum", values=(0.0, 0.9, 0.99, 1.0),
    description="How fast should the per-scene co-occurrence statistics forget? One trial per (comat_momentum, "
                "seed), every trial run to the end. 1.0 is the official running sum; this knob is ours, not the "
                "paper's.")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
