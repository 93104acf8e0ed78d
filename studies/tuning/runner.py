"""Running a study: `main` (plan, checks, Ray, the Tuner, the export's final status), the closing summary,
and `run_cli`, which turns a study script's run into an exit code (studies/script.py calls it).

Order of a run: restore the arguments (--resume) -> plan -> check data and model -> start or join Ray ->
size the trials to the cluster -> a real-data feature cache built in a Ray task (studies.tuning.caches) -> write
study.json -> Tuner (new, or restored) -> final status and summary -> a FINISHED run's trial checkpoints deleted
(studies.tuning.workspace). Everything a user can get wrong fails before Ray starts (a corrupt image found while
caching: before the trials). Ray's own console noise is silenced in studies.tuning.quiet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from salgl_core.config import ConfigError
from studies.analysis import summary, timing
from studies.analysis.analyze import analyze_run, write_analysis
from studies.design.spec import METRIC, MODE, StudyError, StudySpec
from studies.exports.files import portable_path
from studies.exports.schema import OPTUNA_JOURNAL, STUDY_JSON
from studies.exports.writer import StudyExport
from studies.tuning import caches, internals, packing, quiet, resume, trackers
from studies.tuning.callback import ExportCallback, start_session
from studies.tuning.cluster import check_join_address, cluster_info, resources, start_ray, tune_env
from studies.tuning.monitor import named_trainable
from studies.tuning.plan import GridPlan, Plan, check_inputs, input_configs, make_plan, study_json
from studies.tuning.search import build_search
from studies.tuning.storage import Folder, check_cluster_storage, is_uri
from studies.tuning.tracking import Trackers
from studies.tuning.trainable import train_trial
from studies.tuning.workspace import finish_ray_folder


@dataclasses.dataclass
class Outcome:
    run_dir: Path
    status: str
    resume_command: str


def main(args: argparse.Namespace, spec: StudySpec) -> Outcome:
    """Run (or with --resume, finish) a study. Raises ConfigError / DataError / StudyError (and the
    backbone / embedding errors) for anything a user can fix, all before Ray starts."""
    t0 = time.time()
    quiet.install()  # before Tuner.restore, which logs one of the warnings it silences
    if args.resume:
        args = resume.restore_args(args, spec)
    plan = make_plan(args, spec)
    if not args.resume and (plan.run_dir.exists() or Folder(plan.exp_dir).exists()):
        if not args.overwrite:
            raise StudyError(f"run {plan.run} of {spec.study} already exists ({plan.run_dir}); continue it with "
                             f"--resume --name {plan.run}, replace it with --overwrite, or pick another --name")
    check_join_address(args)  # an unreachable cluster fails in seconds, before the data are indexed
    trackers.check(Trackers.from_args(args))  # --log-to: installed, its server answering
    clock = timing.Stopwatch()  # the one-off preparation, named in the closing summary (study.json `preparation`)
    class_names = check_inputs(plan, clock)
    packing.before_ray(args, plan, len(class_names))  # --gpus-per-trial vs one GPU's memory, if known here
    if not args.resume and args.overwrite:
        shutil.rmtree(plan.run_dir, ignore_errors=True)
        Folder(plan.exp_dir).delete()
    with clock.step(timing.RAY_START):
        started_ray = start_ray(args)
    try:
        return _run(args, plan, class_names, t0, clock)
    finally:
        if started_ray:
            ray.shutdown()


def _run(args: argparse.Namespace, plan: Plan, class_names: list[str], t0: float, clock: timing.Stopwatch) -> Outcome:
    cluster = cluster_info()
    # On several nodes, Ray's experiment folder must be one they all reach: checked before any trial starts.
    check_cluster_storage(args.storage_path, [n for n in ray.nodes() if n.get("Alive")])
    g, c, concurrent = resources(args, cluster, plan.num_samples)
    packing.after_ray(args, plan, len(class_names), g, ray.nodes())  # unless before_ray could
    tune_env(concurrent)
    base = plan.trial_base(g)
    with clock.step(timing.FEATURE_CACHE):  # real data: one Ray task (a GPU if any) builds it before the trials
        caches.build_in_ray(input_configs(plan, base), cluster, plan.explicit_device)
    resume_cmd = resume.resume_command(args, plan.spec, plan.run)
    meta = study_json(plan, base_config=base, class_names=class_names, cluster=cluster, gpus_per_trial=g,
                      cpus_per_trial=c, max_concurrent=concurrent, started=t0)
    # The base config travels with the trainable, so a trial's config (what Ray shows and names folders
    # after) is just what the searcher chose. The trainable class names each trial's actor for the Ray
    # dashboard; `monitor` tags the trial's Ray metrics.
    monitor = {"study": plan.spec.study, "run": plan.run, "axis": plan.spec.axis}
    # (with_resources on the function, not the class: on a class it would rename it.)
    reuse = bool(getattr(args, "reuse_actors", False))  # absent from runs started before the flag existed
    trainable = named_trainable(
        tune.with_resources(tune.with_parameters(train_trial, base_config=base, threads=max(1, int(c)), monitor=monitor,
                                                 arms=getattr(plan, "arms", None)), {"cpu": c, "gpu": g}),
        plan.spec.study, plan.spec.axis, plan.run, per_trial=not reuse)
    print(f"{plan.spec.study} {plan.run}: {plan.num_samples} trials, up to {concurrent} at once, {g:g} GPU and "
          f"{c:g} CPU each; export: {portable_path(plan.run_dir)}", flush=True)
    if note := plan.device_note():
        print(note, flush=True)
    old = plan.run_dir / STUDY_JSON
    earlier = json.loads(old.read_text()) if args.resume and old.is_file() else {}
    session = start_session(plan.run_dir, float(earlier.get("wall_seconds") or 0.0), t0)
    if args.resume:
        # The callback comes back from Ray's pickle with the first session's metadata; the export on disk
        # is what it reloads, so refresh what may differ this time (the cluster) there.
        ex = StudyExport.open(plan.run_dir, meta, session)
        ex.meta.update(provenance=meta["provenance"], max_concurrent=concurrent)
        ex.write_all()
        internals.legacy_modules()  # a run started before studies/ had subpackages pickled the old paths
        tuner = tune.Tuner.restore(str(plan.exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        Folder(plan.exp_dir).write_text(resume.STUDY_ARGS, json.dumps(resume.saved_args(
            args, name=plan.run, gpus_per_trial=g, cpus_per_trial=c), indent=2) + "\n")
        tuner = _new_tuner(args, plan, meta, trainable)
    clock.add(timing.OTHER, time.time() - t0 - sum(clock.seconds.values()))  # up to the first trial
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: Ray's state is saved; the export says INTERRUPTED below
    except Exception:
        StudyExport.open(plan.run_dir, meta, session).finish("FAILED")
        raise
    ex = StudyExport.open(plan.run_dir, meta, session)
    ex.meta["preparation"] = timing.merged(ex.meta.get("preparation"), clock.seconds)  # summed over sessions
    status = ex.meta.get("status")
    if status not in ("FINISHED", "INTERRUPTED"):
        status = "INTERRUPTED"
    ex.finish(status)
    analysis = analyze_export(ex)
    # --log-to: the analysis just written goes to the study run's tracker runs (a failure: one warning line);
    # before the summary, which ends with what to do next (an interrupted run: its resume command).
    trackers.finish_study(Trackers.from_args(args), plan.spec.study, plan.run, plan.spec.axis, ex.dir, status)
    print_summary(plan, ex, status, resume_cmd, concurrent, analysis, summary.run_flags(args))
    if status == "FINISHED" and not is_uri(plan.exp_dir):  # nothing will resume it: its checkpoints can go
        print(finish_ray_folder(plan.exp_dir, args.keep_checkpoints, portable_path(plan.exp_dir)), flush=True)
    return Outcome(plan.run_dir, status, resume_cmd)


def _new_tuner(args: argparse.Namespace, plan: Plan, meta: dict[str, Any], trainable: Any) -> tune.Tuner:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    searcher, scheduler = build_search(plan, args.searcher_seed, plan.run_dir / OPTUNA_JOURNAL)
    callback = ExportCallback(str(plan.run_dir), meta, plan.paper_config, plan.num_samples, plan.spec.axis)
    return tune.Tuner(
        trainable,
        # A fresh actor per trial by default: Ray records an actor's name (the trial's, studies.tuning.monitor)
        # when the actor starts, so a reused one would show an earlier trial's name in the dashboard. That
        # costs a worker start per trial (`python -m studies.bench_overhead` measures it); --reuse-actors
        # saves it and names the workers after the study.
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=plan.num_samples, max_concurrent_trials=args.max_concurrent,
                                    reuse_actors=bool(getattr(args, "reuse_actors", False))),
        run_config=tune.RunConfig(name=plan.run, storage_path=str(Folder(plan.exp_dir).parent),
                                  callbacks=[callback, *trackers.callbacks(Trackers.from_args(args),
                                                                           plan.spec.study, plan.run,
                                                                           plan.spec.axis, meta),
                                             *quiet.logger_callbacks()],
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                  # Two, not one (Ray 2.60): the driver deletes the older checkpoint as soon as
                                  # it registers a newer one (train/_internal/checkpoint_manager.py), but the
                                  # experiment state naming the newer one is written at a later step and copied
                                  # to storage in the background (tune/execution/experiment_state.py). A driver
                                  # killed in between leaves a state that names a deleted checkpoint, and Ray
                                  # then refuses to restore the trial ("Could not recover from checkpoint as it
                                  # does not exist on storage anymore", tune/trainable/trainable.py, before the
                                  # trainable runs, so it cannot fall back), retry after retry: the trial ends
                                  # in ERROR. With two, a state one checkpoint old still names a kept one.
                                  # --checkpoint-every N makes them fewer (writes and copies), not smaller.
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  verbose=args.verbose, log_to_file=True),
    )


def analyze_export(ex: StudyExport) -> dict[str, Any] | None:
    """The run's analysis.json and comparisons.csv (intervals, verdicts against the paper's configuration, a
    search's parameter importances), or None, said in one line, if that
    fails: the study's own results stand without it, and `python -m studies.analyze` can redo it."""
    try:
        result = analyze_run(ex.dir)
        write_analysis(ex.dir, result)
        return result
    except Exception as e:  # whatever went wrong in the statistics, the study's status and files stay
        print(f"warning: the analysis failed ({type(e).__name__}: {e}); the export is complete, retry with "
              f"`python -m studies.analyze {portable_path(ex.dir)}`", flush=True)
        return None


def print_summary(plan: Plan, ex: StudyExport, status: str, resume_cmd: str, concurrent: int,
                  analysis: dict[str, Any] | None = None, flags: list[str] | None = None) -> None:
    """The closing lines: per-value means (one-axis ablations), the verdicts of the analysis, a conclusion and
    the next study (a finished run's; `flags`: what it ran, summary.run_flags), time spent, failures, where to look
    next."""
    rows = list(ex.trials.values())
    run_dir = portable_path(plan.run_dir)
    print(f"\n{plan.spec.study} {plan.run}: {status}; export in {run_dir}")
    if isinstance(plan, GridPlan):
        label = "the reference arm" if plan.arms is not None else summary.reference_label(ex.meta.get("dataset"))
        for line in summary.arm_lines(plan.axis, plan.values, rows, plan.paper_config[plan.axis], label=label):
            print(line)
    else:  # a joint search ends with its answer: the best configuration
        for line in summary.best_lines(rows, plan.space, label=summary.reference_label(ex.meta.get("dataset")),
                                       repeats=getattr(plan, "repeats", 1)):
            print(line)
    ref = None if getattr(plan, "arms", None) is not None else summary.reference_label(ex.meta.get("dataset"))
    if analysis is not None:
        print(summary.format_table(analysis, ref))
        if status == "FINISHED":  # an unfinished run's next step is its resume command, below
            for line in summary.conclusion_lines(analysis, prog=plan.spec.prog(), flags=flags or [],
                                                 seeds=plan.seeds, run=plan.run, dataset=ex.meta.get("dataset"),
                                                 label=ref):
                print(line)
    for line in summary.timing_lines(ex.meta, rows, concurrent):
        print(line)
    for r in rows:
        if r.get("status") in ("ERROR", "DIVERGED"):
            print(f"  {r['status']} {r['trial_id']}: {r.get('error')}")
    for line in summary.dashboard_lines(plan.run_dir.parent.parent, plan.run_dir):
        print(line)
    if status == "INTERRUPTED":
        print(f"\ninterrupted; finish it with:\n  {resume_cmd}", flush=True)


def run_cli(run: Callable[[], Outcome]) -> int:
    """A study script's `run()` (its `main` with the parsed arguments) as an exit code: one clear line for a
    user error, exit code 2; 130 if interrupted."""
    from salgl_core.backbone import BackboneWeightsError
    from salgl_core.data import DataError
    from salgl_core.embeddings import LabelEmbeddingError

    try:
        outcome = run()
    except (ConfigError, DataError, StudyError, BackboneWeightsError, LabelEmbeddingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before the trials started", file=sys.stderr)
        return 130
    return 0 if outcome.status == "FINISHED" else 130
