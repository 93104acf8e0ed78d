"""Command-line flags generated from the config dataclasses, so every field is a flag with its help text
and a script cannot drift from the config. `--num-scenes 6` sets `num_scenes`; booleans take
`--flag / --no-flag`; optional paths take `none`. A field's type, range and choices come from its one
declaration in `salgl_core.config` (`field_spec`): choices become the flag's choices, ranges are shown
in its help."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from salgl_core.config import DataConfig, ExperimentConfig, ModelConfig, OneOf, Range, TrainConfig, field_spec
from salgl_core.presets import dataset_preset

SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))


def _optional_str(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def _help(name: str, default: Any) -> str:
    spec = field_spec(name)
    notes = [spec.check.expected(spec.type)] if isinstance(spec.check, Range) else []
    notes.append(f"default: {default}")
    # argparse %-formats help strings.
    return f"{spec.help} ({'; '.join(notes)})".replace("%", "%%")


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (),
                         only: tuple[str, ...] | None = None, shown_defaults: Mapping[str, Any] | None = None,
                         ) -> None:
    """One flag per config field (or per field in `only`). Defaults are SUPPRESSed so that only flags a
    user typed appear in the namespace and override the preset.

    `shown_defaults` is what --help prints as each flag's default, over the dataclass defaults (the
    paper's recipe); it changes no value."""
    shown = {**ExperimentConfig().to_flat(), **(shown_defaults or {})}
    note = ("defaults shown are the paper's; --dataset synthetic starts from a CPU preset" if shown_defaults is None
            else "defaults shown are the ones this command starts from")
    for title, cls in SECTIONS:
        chosen = [f.name for f in fields(cls) if f.name not in exclude and (only is None or f.name in only)]
        if not chosen:
            continue
        group = parser.add_argument_group(f"{title} config ({note})")
        for name in chosen:
            spec = field_spec(name)
            flag = "--" + name.replace("_", "-")
            kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": _help(name, shown[name])}
            if spec.type is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            elif isinstance(spec.check, OneOf):
                group.add_argument(flag, type=spec.type, choices=spec.check.choices, **kw)
            elif spec.type is int:
                group.add_argument(flag, type=int, metavar="N", **kw)
            elif spec.type is float:
                group.add_argument(flag, type=float, metavar="X", **kw)
            elif spec.optional:
                group.add_argument(flag, type=_optional_str, metavar="PATH", **kw)
            else:
                group.add_argument(flag, type=str, metavar="STR", **kw)


def config_from_args(args: argparse.Namespace, default_dataset: str = "synthetic") -> ExperimentConfig:
    """Preset for the chosen dataset, then every flag the user typed. Unknown/invalid values raise
    ConfigError naming the field."""
    typed = {f.name: getattr(args, f.name) for _, cls in SECTIONS for f in fields(cls) if hasattr(args, f.name)}
    dataset = typed.get("dataset", default_dataset)
    return ExperimentConfig.from_flat({**dataset_preset(dataset), **typed})
