"""Running a study: `main` (plan, checks, Ray, the Tuner, the export's final status), the closing summary,
and `run_script`, the entry point of every study script.

Order of a run: restore the arguments (--resume) -> plan -> check data and model -> start or join Ray ->
size the trials to the cluster -> write study.json -> Tuner (new, or restored) -> final status and
summary. Everything a user can get wrong fails before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from salgl_core.config import ConfigError
from studies import cli
from studies.callback import ExportCallback, start_session
from studies.cluster import cluster_info, resources, start_ray, tune_env
from studies.export import StudyExport, portable_path, study_json, write_json
from studies.plan import GridPlan, Plan, check_inputs, make_plan
from studies.schema import OPTUNA_JOURNAL, REPORTED_METRIC, STUDY_JSON
from studies.search import build_search
from studies.spec import METRIC, MODE, StudyError, StudySpec
from studies.trainable import train_trial


@dataclasses.dataclass
class Outcome:
    run_dir: Path
    status: str
    resume_command: str


def main(args: argparse.Namespace, spec: StudySpec) -> Outcome:
    """Run (or with --resume, finish) a study. Raises ConfigError / DataError / StudyError (and the
    backbone / embedding errors) for anything a user can fix, all before Ray starts."""
    t0 = time.time()
    if args.resume:
        args = cli.restore_args(args, spec)
    plan = make_plan(args, spec)
    if not args.resume and (plan.run_dir.exists() or plan.exp_dir.exists()):
        if not args.overwrite:
            raise StudyError(f"run {plan.run} of {spec.study} already exists ({plan.run_dir}); continue it with "
                             f"--resume --name {plan.run}, replace it with --overwrite, or pick another --name")
    class_names = check_inputs(plan)
    if not args.resume and args.overwrite:
        for d in (plan.run_dir, plan.exp_dir):
            shutil.rmtree(d, ignore_errors=True)
    started_ray = start_ray(args)
    try:
        return _run(args, plan, class_names, t0)
    finally:
        if started_ray:
            ray.shutdown()


def _run(args: argparse.Namespace, plan: Plan, class_names: list[str], t0: float) -> Outcome:
    cluster = cluster_info()
    g, c, concurrent = resources(args, cluster, plan.num_samples)
    tune_env(concurrent)
    base = plan.trial_base(g)
    resume_cmd = cli.resume_command(args, plan.spec, plan.run)
    meta = study_json(plan, base_config=base, class_names=class_names, cluster=cluster, gpus_per_trial=g,
                      cpus_per_trial=c, max_concurrent=concurrent, started=t0)
    # The base config travels with the trainable, so a trial's config (what Ray shows and names folders
    # after) is just what the searcher chose.
    trainable = tune.with_resources(tune.with_parameters(train_trial, base_config=base, threads=max(1, int(c))),
                                    {"cpu": c, "gpu": g})
    print(f"{plan.spec.study} {plan.run}: {plan.num_samples} trials, up to {concurrent} at once, {g:g} GPU and "
          f"{c:g} CPU each; export: {portable_path(plan.run_dir)}", flush=True)
    old = plan.run_dir / STUDY_JSON
    earlier = json.loads(old.read_text()) if args.resume and old.is_file() else {}
    session = start_session(plan.run_dir, float(earlier.get("wall_seconds") or 0.0), t0)
    if args.resume:
        # The callback comes back from Ray's pickle with the first session's metadata; the export on disk
        # is what it reloads, so refresh what may differ this time (the cluster) there.
        ex = StudyExport.open(plan.run_dir, meta, session)
        ex.meta.update(provenance=meta["provenance"], max_concurrent=concurrent)
        ex.write_all()
        tuner = tune.Tuner.restore(str(plan.exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        plan.exp_dir.mkdir(parents=True, exist_ok=True)
        write_json(plan.exp_dir / cli.STUDY_ARGS, cli.saved_args(args, name=plan.run, gpus_per_trial=g,
                                                                 cpus_per_trial=c))
        tuner = _new_tuner(args, plan, meta, trainable)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: Ray's state is saved; the export says INTERRUPTED below
    except Exception:
        StudyExport.open(plan.run_dir, meta, session).finish("FAILED")
        raise
    ex = StudyExport.open(plan.run_dir, meta, session)
    status = ex.meta.get("status")
    if status not in ("FINISHED", "INTERRUPTED"):
        status = "INTERRUPTED"
    ex.finish(status)
    print_summary(plan, ex, status, resume_cmd, concurrent)
    return Outcome(plan.run_dir, status, resume_cmd)


def _new_tuner(args: argparse.Namespace, plan: Plan, meta: dict[str, Any], trainable: Any) -> tune.Tuner:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    searcher, scheduler = build_search(plan, args.searcher_seed, plan.run_dir / OPTUNA_JOURNAL)
    callback = ExportCallback(str(plan.run_dir), meta, plan.paper_config, plan.num_samples, plan.spec.axis)
    return tune.Tuner(
        trainable,
        # reuse_actors: a finished trial's worker process runs the next trial (same resources), which saves
        # a process start and the torch import, seconds per trial.
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=plan.num_samples, max_concurrent_trials=args.max_concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=plan.run, storage_path=str(plan.exp_dir.parent), callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  verbose=args.verbose, log_to_file=True),
    )


def print_summary(plan: Plan, ex: StudyExport, status: str, resume_cmd: str, concurrent: int) -> None:
    """The closing lines: per-value means (one-axis ablations), time spent, failures, where to look next."""
    rows = list(ex.trials.values())
    run_dir = portable_path(plan.run_dir)
    print(f"\n{plan.spec.study} {plan.run}: {status}; export in {run_dir}")
    if isinstance(plan, GridPlan):
        by_value: dict[str, list[float]] = {}
        for r in rows:
            if r.get("status") == "FINISHED" and r.get(REPORTED_METRIC) not in (None, ""):
                by_value.setdefault(str(r.get(plan.axis)), []).append(float(r[REPORTED_METRIC]))
        for v in plan.values:
            xs = by_value.get(str(v), [])
            if xs:
                mean = sum(xs) / len(xs)
                sd = (sum((x - mean) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5
                paper = "  (paper)" if v == plan.paper_config[plan.axis] else ""
                print(f"  {plan.axis} = {v!s:<6} best EMA mAP {mean:6.2f} +- {sd:4.2f} over {len(xs)} seed(s){paper}")
    trial_s, wall = ex.meta.get("trial_seconds_total", 0.0), ex.meta.get("wall_seconds", 0.0)
    if trial_s and wall:
        ideal = trial_s / concurrent
        print(f"  trial time {trial_s:.0f} s in all, {concurrent} at once -> ideal {ideal:.0f} s; "
              f"wall {wall:.0f} s (overhead {100 * (wall / ideal - 1):.0f}%)")
    for r in rows:
        if r.get("status") in ("ERROR", "DIVERGED"):
            print(f"  {r['status']} {r['trial_id']}: {r.get('error')}")
    print(f"  dashboard: streamlit run dashboards/app.py    optuna: optuna-dashboard {run_dir}/{OPTUNA_JOURNAL}")
    if status == "INTERRUPTED":
        print(f"\ninterrupted; finish it with:\n  {resume_cmd}", flush=True)


def run_script(spec: StudySpec, argv: list[str] | None = None) -> int:
    """Entry point of a study script: one clear line for a user error, exit code 2; 130 if interrupted."""
    from salgl_core.backbone import BackboneWeightsError
    from salgl_core.data import DataError
    from salgl_core.embeddings import LabelEmbeddingError

    args = cli.get_args_parser(spec).parse_args(argv)
    try:
        outcome = main(args, spec)
    except (ConfigError, DataError, StudyError, BackboneWeightsError, LabelEmbeddingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before the trials started", file=sys.stderr)
        return 130
    return 0 if outcome.status == "FINISHED" else 130
