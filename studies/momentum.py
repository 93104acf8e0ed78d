"""Ablation of the co-occurrence momentum mu (`comat_momentum`): M_k <- mu * M_k + this batch's counts.

mu = 1.0 is the official running sum over the whole run (the paper's setting); mu = 0 keeps only the
current batch. The knob is ours, not the paper's.

    python studies/momentum.py                         # synthetic data, CPU-sized, mu in 0 0.9 0.99 1, 3 seeds
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from studies import script
from studies.design.spec import StudySpec

if TYPE_CHECKING:
    from studies.tuning.runner import Outcome

SPEC = StudySpec(
    study="momentum", script=__file__, axis="comat_momentum", values=(0.0, 0.9, 0.99, 1.0),
    description="How fast should the per-scene co-occurrence statistics forget? One trial per (comat_momentum, "
                "seed), every trial run to the end. 1.0 is the official running sum; this knob is ours, not the "
                "paper's.")


def get_args_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    return script.get_args_parser(SPEC, argv)


def main(args: argparse.Namespace) -> Outcome:
    return script.main(args, SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
