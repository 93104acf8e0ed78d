"""`python -m salgl_core.bench attention|loader|train|features|probe`: run one benchmark and print its JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from salgl_core.bench import attention, features, loader, probe, train

BENCHMARKS = {"attention": attention, "loader": loader, "train": train, "features": features, "probe": probe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salgl_core.bench",
                                     description="SALGL benchmarks; each prints one JSON object.")
    sub = parser.add_subparsers(dest="which", required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY))
    args = parser.parse_args(argv)
    print(json.dumps(BENCHMARKS[args.which].run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
