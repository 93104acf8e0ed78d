"""`python -m salgl_core.bench attention|loader|train|features|probe|memory|epochs`: run one benchmark and print its
JSON object (train: its JSON lines)."""

from __future__ import annotations

import argparse
import json
import sys

from salgl_core.bench import attention, epochs, features, loader, memory, probe, train

BENCHMARKS = {"attention": attention, "loader": loader, "train": train, "features": features, "probe": probe,
              "memory": memory, "epochs": epochs}


def get_args_parser() -> argparse.ArgumentParser:
    """One subcommand per benchmark; `which` names it (a benchmark's own arguments must not use that name)."""
    parser = argparse.ArgumentParser(prog="python -m salgl_core.bench",
                                     description="SALGL benchmarks; each prints one JSON object (train: "
                                                 "JSON lines, one per record as it is measured).")
    sub = parser.add_subparsers(dest="which", required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    result = BENCHMARKS[args.which].run(args)
    if result is not None:  # None: the benchmark printed JSON lines as it measured (train)
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
