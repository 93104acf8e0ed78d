"""The named studies: every studies/<name>.py that defines `SPEC`, a StudySpec. A new named study is one file.

    python -m studies.catalog              # the named studies, one line each
    python -m studies.catalog --examples   # the ones with a committed example in results/ (`make results`)

The one-axis ablations and the studies of named arms have committed examples; the joint search (tune.py)
has none. Any other field is an ablation without a file: `python -m studies.ablate FIELD --values ...`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
from pathlib import Path

from studies.design.spec import StudySpec

# Modules of studies/ that are tools, not studies.
NOT_STUDIES = ("ablate", "analyze", "bench_overhead", "catalog", "script")


def named_studies() -> dict[str, StudySpec]:
    """{study name: its spec}, in file-name order. Importing a study script is light (no torch, no Ray)."""
    out: dict[str, StudySpec] = {}
    for m in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if m.ispkg or m.name in NOT_STUDIES:
            continue
        spec = getattr(importlib.import_module(f"studies.{m.name}"), "SPEC", None)
        if isinstance(spec, StudySpec):
            out[spec.study] = spec
    return out


def has_example(spec: StudySpec) -> bool:
    """Whether `make results` commits an example run of the study (results/<study>/default)."""
    return spec.axis is not None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.catalog", description=__doc__.split("\n")[0])
    p.add_argument("--examples", action="store_true",
                   help="print only the names of the studies with a committed example, one per line")
    args = p.parse_args(argv)
    specs = named_studies()
    if args.examples:
        print("\n".join(name for name, spec in specs.items() if has_example(spec)))
        return 0
    for name, spec in specs.items():
        what = f"axis {spec.axis}" if spec.axis else "joint search"
        first = re.split(r"(?<=[.?])\s", spec.description, maxsplit=1)[0]
        print(f"{name:12s} {what:20s} python studies/{name}.py   {first}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
