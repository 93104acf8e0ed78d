"""Command-line flags generated from the config dataclasses, so every field is a flag with its help text
and a script cannot drift from the config. `--num-scenes 6` sets `num_scenes`; booleans take
`--flag / --no-flag`; optional paths take `none`."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from salgl_core.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    paper_preset,
    synthetic_preset,
)

SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))


def _optional_str(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (),
                         only: tuple[str, ...] | None = None) -> None:
    """One flag per config field (or per field in `only`). Defaults are SUPPRESSed so that only flags a
    user typed appear in the namespace and override the preset; the help shows the paper's default."""
    for title, cls in SECTIONS:
        chosen = [f for f in fields(cls) if f.name not in exclude and (only is None or f.name in only)]
        if not chosen:
            continue
        group = parser.add_argument_group(
            f"{title} config (defaults shown are the paper's; --dataset synthetic starts from a CPU preset)")
        for f in chosen:
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            help_text = f"{f.metadata.get('help', '')} (default: {default})"
            kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
            if f.type == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            elif f.type == "int":
                group.add_argument(flag, type=int, metavar="N", **kw)
            elif f.type == "float":
                group.add_argument(flag, type=float, metavar="X", **kw)
            elif f.type == "str | None":
                group.add_argument(flag, type=_optional_str, metavar="PATH", **kw)
            else:
                group.add_argument(flag, type=str, metavar="STR", **kw)


def preset_for(dataset: str) -> dict[str, Any]:
    """The synthetic dataset gets the CPU-sized preset; real datasets the paper's recipe."""
    return synthetic_preset() if dataset == "synthetic" else paper_preset(dataset)


def config_from_args(args: argparse.Namespace, default_dataset: str = "synthetic") -> ExperimentConfig:
    """Preset for the chosen dataset, then every flag the user typed. Unknown/invalid values raise
    ConfigError naming the field."""
    typed = {f.name: getattr(args, f.name) for _, cls in SECTIONS for f in fields(cls) if hasattr(args, f.name)}
    dataset = typed.get("dataset", default_dataset)
    return ExperimentConfig.from_flat({**preset_for(dataset), **typed})
