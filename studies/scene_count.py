"""Ablation of the number of latent scenes K (`num_scenes`); K = 1 is one global co-occurrence graph.

    python studies/scene_count.py                      # synthetic data, CPU-sized, K in 1 2 4 8, 2 seeds
    python studies/scene_count.py --dataset coco --data-root /data/coco   # the paper's recipe, 1 GPU per trial
"""

from __future__ import annotations

import argparse

from studies import cli, runner
from studies.spec import StudySpec

SPEC = StudySpec(
    study="scene_count", script=__file__, axis="num_scenes", values=(1, 2, 4, 8),
    description="How many latent scenes does SALGL need? One trial per (num_scenes, seed), every trial run to "
                "the end; K = 1 removes scene awareness (one global co-occurrence matrix).")


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser(SPEC)


def main(args: argparse.Namespace) -> runner.Outcome:
    return runner.main(args, SPEC)


if __name__ == "__main__":
    raise SystemExit(runner.run_script(SPEC))
