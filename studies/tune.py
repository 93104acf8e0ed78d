"""Joint hyperparameter search: TPE (Optuna) with ASHA early stopping, the paper's point tried first.

Searched: num_scenes, gnn_steps, comat_momentum, lr, weight_decay, the two entropy-loss weights and
soft/hard scene assignment (plus the seed when several are given).

    python studies/tune.py                             # synthetic data, CPU-sized, 16 trials
    python studies/tune.py --dataset coco --data-root /data/coco --num-samples 32
"""

from __future__ import annotations

import argparse
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from studies import cli, runner
from studies.spec import PAPER, StudySpec


def search_space(base: dict[str, Any], seeds: list[int]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """The distributions and the paper's point in them (model knobs: the official defaults; optimiser:
    the base config's, which on a real dataset is the paper's recipe)."""
    paper = PAPER
    lr, wd = float(base["lr"]), float(base["weight_decay"])
    space: dict[str, BaseDistribution] = {
        "num_scenes": CategoricalDistribution([1, 2, 4, 6, 8]),
        "gnn_steps": IntDistribution(0, 4),
        "comat_momentum": FloatDistribution(0.9, 1.0),
        "lr": FloatDistribution(lr / 10, lr * 10, log=True),
        # Reaches the base value whatever it is; 0 (no decay) needs a linear range.
        "weight_decay": FloatDistribution(min(1e-4, wd), max(1e-1, wd), log=True) if wd > 0
        else FloatDistribution(0.0, 1e-1),
        "sample_entropy_weight": FloatDistribution(0.1, 10.0, log=True),
        "batch_entropy_weight": FloatDistribution(0.1, 10.0, log=True),
        "soft_assignment": CategoricalDistribution([False, True]),
        "seed": CategoricalDistribution(seeds),
    }
    point = {"num_scenes": paper["num_scenes"], "gnn_steps": paper["gnn_steps"],
             "comat_momentum": paper["comat_momentum"], "lr": lr, "weight_decay": wd,
             "sample_entropy_weight": paper["sample_entropy_weight"],
             "batch_entropy_weight": paper["batch_entropy_weight"],
             "soft_assignment": paper["soft_assignment"], "seed": seeds[0]}
    return space, point


SPEC = StudySpec(
    study="tune", script=__file__, space=search_space, default_seeds=(0,), default_samples=16,
    description="Joint search over scene count, graph depth, co-occurrence momentum, learning rate, weight "
                "decay, entropy weights and soft/hard assignment: Optuna TPE proposes, ASHA stops the weak "
                "trials early; the paper's configuration is always the first trial.")


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser(SPEC)


def main(args: argparse.Namespace) -> runner.Outcome:
    return runner.main(args, SPEC)


if __name__ == "__main__":
    raise SystemExit(runner.run_script(SPEC))
