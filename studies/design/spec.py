"""What a study is: `StudySpec` (its axis and values, or its joint search space), the searched metric, `StudyError`.

Plain Python (no Ray): the study scripts, the planner and the Ray worker all import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# What the searcher optimises and the scheduler compares: the EMA model's mAP of the epoch just ended.
# (The number reported per trial is its best epoch's, schema.REPORTED_METRIC.)
METRIC, MODE = "mAP_ema", "max"
# There is no single "paper configuration": it is the recipe's a study's base config started from
# (salgl_core.presets; base["recipe"]), K = 6 on COCO, the synthetic preset's values on synthetic data.

# base flat config, seeds -> (Optuna distributions, the recipe's point in that space)
# (The distributions are optuna.distributions objects, built by the study script that defines the space.)
SearchSpace = Callable[[dict[str, Any], list[int]], tuple[dict[str, Any], dict[str, Any]]]
# A study of named arms (studies/mechanism.py) sweeps this pseudo-axis: each value names a set of config
# overrides, resolved from the base config (base flat config -> {arm: overrides}, in the arms' order).
ARM = "arm"
Arms = Callable[[dict[str, Any]], dict[str, dict[str, Any]]]


class StudyError(ValueError):
    """A study flag or run folder is wrong; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What a study sweeps. `axis` + `values` for a one-axis ablation; `space` for a joint search."""

    study: str
    script: str
    description: str
    axis: str | None = None
    values: tuple = ()
    space: SearchSpace | None = None
    # A study of named arms: axis = ARM, values = the arm names (in the order they are shown), `arms` their
    # overrides and `reference_arm` the arm every other is compared with.
    arms: Arms | None = None
    reference_arm: str | None = None
    # Three seeds, the same for every value, so each comparison with the paper's configuration is paired by
    # seed and has a seed-level test (with two, studies.analysis.stats can only fall back to a conservative one).
    default_seeds: tuple[int, ...] = (0, 1, 2)
    default_samples: int = 16
    # What the dashboard shows above the study's results (markdown; written to study.json as `note`).
    note: str = ""
    # How the study is started after `python` when not by its own script: `-m studies.ablate FIELD`.
    launch: tuple[str, ...] = ()

    def command(self) -> tuple[str, ...]:
        """What follows `python` to start (or, with --resume, finish) this study."""
        return self.launch or (self.script,)

    def prog(self) -> str:
        return "python " + " ".join(self.launch or (f"studies/{self.study}.py",))


def arm_config(config: dict[str, Any], arms: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """A trial's config fields: what the searcher chose with its arm (if any) replaced by the arm's overrides."""
    if not arms or ARM not in config:
        return dict(config)
    name = config[ARM]
    if name not in arms:
        raise StudyError(f"arm {name!r} is not one of this study's arms ({', '.join(arms)})")
    return {**{k: v for k, v in config.items() if k != ARM}, **arms[name]}
