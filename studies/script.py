"""What every study script is made of: `get_args_parser(spec)`, `main(args, spec)` and `run_script(spec)`.

A named study (studies/scene_count.py, ...) is a `StudySpec`, `get_args_parser, main = entry_points(SPEC)` and
`run_script(SPEC)` when run as a script, so a new one is one file.
Light on purpose: `--help` and the mistakes visible in the arguments answer before Ray, Optuna and torch
are imported; the runner (studies/tuning/runner.py) is imported only once the arguments parse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from salgl_core.config import ConfigError
from studies.design import cli
from studies.design.spec import StudyError, StudySpec

if TYPE_CHECKING:
    from studies.tuning.runner import Outcome


def get_args_parser(spec: StudySpec, argv: list[str] | None = None) -> argparse.ArgumentParser:
    return cli.get_args_parser(spec, argv)


def main(args: argparse.Namespace, spec: StudySpec) -> Outcome:
    from studies.tuning import runner  # Ray: only once the arguments are known

    return runner.main(args, spec)


def entry_points(spec: StudySpec) -> tuple[Callable[..., argparse.ArgumentParser], Callable[..., Outcome]]:
    """A named study's `get_args_parser(argv=None)` and `main(args)`, torchvision's reference-script pair:
    `get_args_parser, main = script.entry_points(SPEC)`."""

    def study_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
        return get_args_parser(spec, argv)

    def study_main(args: argparse.Namespace) -> Outcome:
        return main(args, spec)

    return study_parser, study_main


def run_script(spec: StudySpec, argv: list[str] | None = None) -> int:
    """Entry point of a study script: exit code 0 when the study finished, 2 for a user error (one line on
    stderr), 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = cli.get_args_parser(spec, argv).parse_args(argv)
    try:  # the mistakes visible here (config values included) answer before the heavy imports, in well under a second
        cli.check_args(args, spec)
    except (StudyError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from studies.tuning import runner

    return runner.run_cli(lambda: runner.main(args, spec))
