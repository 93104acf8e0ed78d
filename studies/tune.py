"""Joint hyperparameter search: TPE (Optuna) with ASHA early stopping, the recipe's point tried first.

Searched: num_scenes, gnn_steps, comat_momentum, lr, weight_decay, the two entropy-loss weights and
soft/hard scene assignment (plus the seed when several are given, unless --repeats N trains every sampled
configuration with each of N seeds and gives TPE their mean; ASHA is then off). The first trial is the recipe's values
of these: on a real dataset the paper's configuration (e.g. K = 6, lr 1e-4 on COCO), on synthetic data
the synthetic preset's (lr 2e-3: not the paper's, and labelled so).

    python studies/tune.py                             # synthetic data, CPU-sized, 16 trials
    python studies/tune.py --repeats 3                 # each configuration with seeds 0 1 2: TPE sees their mean
    python studies/tune.py --dataset coco --data-root /data/coco --num-samples 32
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from salgl_core.presets import recipe_config
from studies import script
from studies.design.spec import StudySpec

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution



def search_space(base: dict[str, Any], seeds: list[int]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """The distributions and the recipe's point in them. The learning rate spans a decade either side of
    both the base config's (flags included) and the recipe's; weight decay reaches both."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    paper = recipe_config(base.get("recipe"))
    lrs = (float(base["lr"]), float(paper["lr"]))
    wds = (float(base["weight_decay"]), float(paper["weight_decay"]))
    space: dict[str, BaseDistribution] = {
        "num_scenes": CategoricalDistribution(sorted({1, 2, 4, 6, 8, int(paper["num_scenes"])})),
        "gnn_steps": IntDistribution(0, max(4, int(paper["gnn_steps"]))),
        "comat_momentum": FloatDistribution(min(0.9, float(paper["comat_momentum"])), 1.0),
        "lr": FloatDistribution(min(lrs) / 10, max(lrs) * 10, log=True),
        # 0 (no decay) needs a linear range.
        "weight_decay": FloatDistribution(min(1e-4, *wds), max(1e-1, *wds), log=True) if min(wds) > 0
        else FloatDistribution(0.0, max(1e-1, *wds)),
        "sample_entropy_weight": FloatDistribution(0.1, 10.0, log=True),
        "batch_entropy_weight": FloatDistribution(0.1, 10.0, log=True),
        "soft_assignment": CategoricalDistribution([False, True]),
        "seed": CategoricalDistribution(seeds),
    }
    point = {"num_scenes": paper["num_scenes"], "gnn_steps": paper["gnn_steps"],
             "comat_momentum": paper["comat_momentum"], "lr": paper["lr"], "weight_decay": paper["weight_decay"],
             "sample_entropy_weight": paper["sample_entropy_weight"],
             "batch_entropy_weight": paper["batch_entropy_weight"],
             "soft_assignment": paper["soft_assignment"], "seed": seeds[0]}
    return space, point


SPEC = StudySpec(
    study="tune", script=__file__, space=search_space, default_seeds=(0,), default_samples=16,
    description="Joint search over scene count, graph depth, co-occurrence momentum, learning rate, weight "
                "decay, entropy weights and soft/hard assignment: Optuna TPE proposes, ASHA stops the weak "
                "trials early; the recipe's configuration (the paper's on a real dataset, the synthetic preset's "
                "on synthetic data) is always the first trial.")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
