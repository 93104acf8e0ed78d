"""What every study script is made of: `get_args_parser(spec)`, `main(args, spec)` and `run_script(spec)`.

A named study (studies/scene_count.py, ...) is a `StudySpec` plus these three, so a new one is one file.
Light on purpose: `--help` and the mistakes visible in the arguments answer before Ray, Optuna and torch
are imported; the runner (studies/tuning/runner.py) is imported only once the arguments parse.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from studies.design import cli
from studies.design.spec import StudyError, StudySpec

if TYPE_CHECKING:
    from studies.tuning.runner import Outcome


def get_args_parser(spec: StudySpec, argv: list[str] | None = None) -> argparse.ArgumentParser:
    return cli.get_args_parser(spec, argv)


def main(args: argparse.Namespace, spec: StudySpec) -> Outcome:
    from studies.tuning import runner  # Ray: only once the arguments are known

    return runner.main(args, spec)


def run_script(spec: StudySpec, argv: list[str] | None = None) -> int:
    """Entry point of a study script: exit code 0 when the study finished, 2 for a user error (one line on
    stderr), 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = cli.get_args_parser(spec, argv).parse_args(argv)
    try:  # the mistakes visible here answer before the heavy imports, in well under a second
        cli.check_args(args, spec)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from studies.tuning import runner

    return runner.run_cli(lambda: runner.main(args, spec))
