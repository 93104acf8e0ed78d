"""The searcher and scheduler of a plan: an Optuna sampler (grid or TPE) in Ray's OptunaSearch, made
resumable after a crash (studies/tuning/internals.py, where the Ray/Optuna internals that takes are fenced),
its study persisted in the run's Optuna journal; FIFO, or ASHA for a joint search.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from studies.design.spec import METRIC, MODE
from studies.tuning.internals import GridSampler, ResumableOptunaSearch, SeededRepeater
from studies.tuning.plan import GridPlan, Plan, SearchPlan


def build_search(plan: Plan, searcher_seed: int, journal: Path) -> tuple[Searcher, TrialScheduler]:
    """The searcher (its Optuna study persisted in the `journal` file) and the scheduler of a new run."""
    if isinstance(plan, GridPlan):
        sampler: optuna.samplers.BaseSampler = GridSampler(plan.grid(), seed=searcher_seed)
        scheduler: TrialScheduler = FIFOScheduler()
    elif isinstance(plan, SearchPlan):
        # Random points before TPE models the space, counted in configurations (Optuna sees one per repeat group).
        startup = max(2, min(10, plan.num_samples // plan.repeats // 4))
        sampler = optuna.samplers.TPESampler(seed=searcher_seed, n_startup_trials=startup)
        scheduler = AsyncHyperBandScheduler(**plan.asha, stop_last_trials=False) if plan.asha else FIFOScheduler()
    else:
        raise TypeError(f"no searcher for {type(plan).__name__}")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    searcher = ResumableOptunaSearch(space=plan.space, metric=METRIC, mode=MODE, sampler=sampler, storage=storage,
                                     study_name=f"{plan.spec.study}/{plan.run}", points_to_evaluate=plan.points or None)
    if isinstance(plan, SearchPlan) and plan.repeats > 1:
        # Ray saves the wrapper's state (its groups) with the experiment and restores it on --resume.
        return SeededRepeater(searcher, plan.seeds), scheduler
    return searcher, scheduler


