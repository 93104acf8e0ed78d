"""Ablation of the label-graph depth T (`gnn_steps`); T = 0 removes graph propagation altogether.

    python studies/graph_depth.py                      # synthetic data, CPU-sized, T in 0 1 3 5, 2 seeds
"""

from __future__ import annotations

import argparse

from studies import cli, runner
from studies.spec import StudySpec

SPEC = StudySpec(
    study="graph_depth", script=__file__, axis="gnn_steps", values=(0, 1, 3, 5),
    description="How deep should the label graph propagate? One trial per (gnn_steps, seed), every trial run "
                "to the end; T = 0 is no graph (and no concatenation before the classifier).")


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser(SPEC)


def main(args: argparse.Namespace) -> runner.Outcome:
    return runner.main(args, SPEC)


if __name__ == "__main__":
    raise SystemExit(runner.run_script(SPEC))
