"""Any ablation without writing code: one config field, or named arms, as a study.

    python -m studies.ablate sample_entropy_weight --values 0 0.5 1
    python -m studies.ablate soft_assignment --values true false --set num_scenes=4 --seeds 0 1 2 3 4
    python -m studies.ablate --study soft_vs_hard --arm soft:soft_assignment=true --arm hard:soft_assignment=false \\
        --reference hard
    python -m studies.ablate --study depth_and_k --arms arms.toml      # arms from a TOML / YAML / JSON file

Every scalar config field (salgl_core/config.py) is an axis: its type, range and help come from the field's
declaration, and a value outside its range is refused before Ray starts. The study takes the flags of every
study script (recipe, seeds, --set, resume, cluster, GPUs) and gives the same export, verdicts and dashboard
views; the recipe's value of the field (the paper's configuration) is always one of the values. Its export
goes to <results-dir>/<study>/<name>/, the study named after the field unless --study names it.
Finish an interrupted run with the same FIELD (or --study) and `--resume --name RUN`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from salgl_core.config import FIELD_OWNER, ConfigError, field_spec
from studies import script
from studies.design import cli
from studies.design.arms import NOT_ARM_FIELDS, collect_arms
from studies.design.spec import ARM, StudyError, StudySpec

if TYPE_CHECKING:
    from studies.tuning.runner import Outcome

ARMS_HELP = ("NAME:FIELD=VALUE[,FIELD=VALUE...]: an arm, a set of config overrides (VALUE in JSON, else a string); "
             "repeatable")


def scalar_fields() -> list[str]:
    """The fields a one-axis ablation may sweep: every config field but the seed (an axis of every study) and
    the recipe and dataset (chosen by --recipe / --dataset)."""
    return [f for f in FIELD_OWNER if f not in NOT_ARM_FIELDS]


def add_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags that say what to ablate (the rest are every study script's)."""
    p.add_argument("field", nargs="?", default=None, metavar="FIELD",
                   help="the config field to sweep with --values (any of: " + ", ".join(scalar_fields()) + ")")
    p.add_argument("--arm", action="append", default=[], metavar="NAME:FIELD=VALUE", help=ARMS_HELP)
    p.add_argument("--arms", default=None, metavar="FILE",
                   help="named arms from a TOML, YAML or JSON file: `reference = NAME` and a table `arms` of "
                        "NAME -> {FIELD: VALUE}, in the order they are shown")
    p.add_argument("--reference", default=None, metavar="NAME",
                   help="the arm every other is compared with (default: the file's `reference`, else the first arm)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="the study's name, its folder under --results-dir (default: the FIELD; required with arms)")


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    add_arguments(pre)
    return pre.parse_known_args(argv)[0]


def build_spec(ns: argparse.Namespace) -> StudySpec:
    """The StudySpec of this command line: a one-axis ablation of FIELD, or a study of named arms (which
    `ns.arm_overrides` then holds, so that study_args.json keeps them for --resume)."""
    stored = getattr(ns, "arm_overrides", None)
    if ns.field and (ns.arm or ns.arms or stored):
        raise StudyError("give either a FIELD with --values, or named arms (--arm / --arms), not both")
    if ns.field:
        try:
            f = field_spec(ns.field)
        except ConfigError as e:
            raise StudyError(str(e)) from None
        if ns.field in NOT_ARM_FIELDS:
            raise StudyError(f"{ns.field} is not an ablation axis: it is chosen with --recipe / --dataset / --seeds")
        study = ns.study or ns.field
        return StudySpec(study=study, script=__file__, axis=ns.field,
                         launch=("-m", "studies.ablate", ns.field, *(("--study", ns.study) if ns.study else ())),
                         description=f"One-axis ablation of {ns.field} ({f.help}) One trial per (value, seed), "
                                     "every trial run to the end.")
    if not (ns.arm or ns.arms or stored):
        raise StudyError("nothing to ablate: give a config FIELD and --values, or named arms with --arm / --arms "
                         "(python -m studies.ablate --help)")
    if not ns.study:
        raise StudyError("a study of named arms needs a name: --study NAME (its folder under --results-dir)")
    if stored:
        arms, reference = {k: dict(v) for k, v in stored.items()}, ns.reference
    else:
        arms, reference = collect_arms(ns.arm, ns.arms, ns.reference)
        ns.arm_overrides, ns.reference = arms, reference
    return StudySpec(study=ns.study, script=__file__, axis=ARM, values=tuple(arms), arms=lambda base: arms,
                     reference_arm=reference, launch=("-m", "studies.ablate", "--study", ns.study),
                     description=f"Named arms {', '.join(arms)}, each compared with {reference}; one trial per "
                                 "(arm, seed), every trial run to the end.")


def get_args_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for this command line: every study script's flags, with --values described for its FIELD (or
    its arms), plus the flags above."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = _pre_parse(argv)
    try:
        spec = build_spec(ns)
    except StudyError:  # --help alone, or a mistake main() reports: a parser for any FIELD
        spec = StudySpec(study="FIELD", script=__file__, axis="num_scenes", launch=("-m", "studies.ablate"),
                         description=__doc__.split("\n")[0])
    p = cli.get_args_parser(spec, argv)
    add_arguments(p.add_argument_group("what to ablate"))
    if spec.study == "FIELD":  # the generic help: --values belongs to whichever FIELD is given
        p.description = __doc__
        for action in p._actions:
            if action.dest == "values":
                action.help = ("the FIELD's values to sweep (required for a new run), each in the field's range "
                               "(`python -m studies.ablate FIELD --help` shows it); the recipe's value is always added")
    return p


def main(args: argparse.Namespace) -> Outcome:
    if args.resume:  # the arms (or the field) the run was started with come from its study_args.json
        from studies.tuning import resume

        study = args.study or args.field
        if not study:
            raise StudyError("--resume needs the run's FIELD, or --study NAME for a study of named arms")
        args = resume.restore_args(args, StudySpec(study=study, script=__file__, description=""))
    return script.main(args, build_spec(args))


def run(argv: list[str] | None = None) -> int:
    """`python -m studies.ablate`: 0 when the study finished, 2 for a user error, 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser(argv).parse_args(argv)
    try:
        spec = None if args.resume else build_spec(args)
        if spec is not None:
            cli.check_args(args, spec)
            if spec.arms is None and not args.values:
                raise StudyError(f"--values is required: the {spec.axis} values to sweep")
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from studies.tuning import runner

    return runner.run_cli(lambda: main(args))


if __name__ == "__main__":
    raise SystemExit(run())
