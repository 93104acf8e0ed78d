"""Named arms from the command line or a small file: each arm is a set of config overrides.

    --arm soft:soft_assignment=true --arm hard:soft_assignment=false --reference hard
    --arm deep:gnn_steps=5,num_scenes=6      (several fields: comma-separated; VALUE in JSON, else a string)
    --arms arms.toml                         (or .yaml / .yml / .json)

A file holds `reference = "NAME"` and one table per arm, in the order they are shown:

    reference = "hard"
    [arms.hard]
    soft_assignment = false
    [arms.soft]
    soft_assignment = true

Field names and value types are checked here, without torch or Ray; the values' ranges when the plan
builds every arm's config (ExperimentConfig), still before Ray starts.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from salgl_core.config import ConfigError, field_spec
from studies.design.spec import ARM, StudyError

_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+$")
# Chosen by --recipe / --dataset, or the seed axis: not an arm's to set.
NOT_ARM_FIELDS = ("recipe", "dataset", "seed")


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # a bare string such as a path or a policy name


def parse_arm(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:FIELD=VALUE[,FIELD=VALUE...]` -> (name, {field: value})."""
    name, sep, body = text.partition(":")
    if not sep or not _NAME.match(name) or not body:
        raise StudyError(f"--arm {text!r} is invalid: expected NAME:FIELD=VALUE[,FIELD=VALUE...], e.g. "
                         "--arm soft:soft_assignment=true (NAME: letters, digits, _ . @ + -)")
    overrides: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise StudyError(f"--arm {text!r}: {item!r} is not FIELD=VALUE")
        overrides[key.strip()] = _value(raw.strip())
    return name, check_overrides(name, overrides)


def check_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The arm's fields exist, may be set by an arm and have the field's type; StudyError naming what is wrong."""
    if not overrides:
        raise StudyError(f"arm {name!r} sets no config field")
    for key, value in overrides.items():
        if key in NOT_ARM_FIELDS or key == ARM:
            raise StudyError(f"arm {name!r} sets {key}, which an arm cannot set (use --recipe / --dataset / --seeds)")
        try:
            spec = field_spec(key)
        except ConfigError as e:
            raise StudyError(f"arm {name!r}: {e}") from None
        if value is None and spec.optional:
            continue
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            overrides[key] = value = float(value)
        if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
            raise StudyError(f"arm {name!r}: {key} = {value!r} is invalid: expected "
                             f"{spec.check.expected(spec.type)}")
        if not spec.check.ok(value, spec.type):
            raise StudyError(f"arm {name!r}: {key} = {value!r} is invalid: expected {spec.check.expected(spec.type)}")
    return overrides


def read_arms_file(path: str | Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The arms of a TOML, YAML or JSON file and its `reference` (None if it names none)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise StudyError(f"--arms {path}: cannot read it ({e.strerror or e})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml  # Ray depends on PyYAML

            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise StudyError(f"--arms {path}: expected a .toml, .yaml, .yml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        raise StudyError(f"--arms {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("arms"), dict) or not data["arms"]:
        raise StudyError(f"--arms {path}: expected a table `arms` of named arms (and optionally `reference`), "
                         "see python -m studies.ablate --help")
    arms: dict[str, dict[str, Any]] = {}
    for name, overrides in data["arms"].items():
        if not _NAME.match(str(name)) or not isinstance(overrides, dict):
            raise StudyError(f"--arms {path}: arm {name!r} must be a name (letters, digits, _ . @ + -) with a table "
                             "of config fields")
        arms[str(name)] = check_overrides(str(name), dict(overrides))
    reference = data.get("reference")
    return arms, None if reference is None else str(reference)


def collect_arms(items: list[str], file: str | None, reference: str | None) -> tuple[dict[str, dict[str, Any]], str]:
    """The arms of --arm items and/or an --arms file (file first), and the reference arm (--reference, else the
    file's, else the first arm)."""
    arms, file_reference = read_arms_file(file) if file else ({}, None)
    for item in items:
        name, overrides = parse_arm(item)
        if name in arms:
            raise StudyError(f"--arm {name} is given twice")
        arms[name] = overrides
    if len(arms) < 2:
        raise StudyError("a study of named arms needs at least two arms (--arm NAME:FIELD=VALUE, or --arms FILE)")
    reference = reference or file_reference or next(iter(arms))
    if reference not in arms:
        raise StudyError(f"--reference {reference} is not one of the arms ({', '.join(arms)})")
    return arms, reference
