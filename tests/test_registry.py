import subprocess
import sys

import pytest

from salgl_core import config
from salgl_core.presets import RECIPES
from salgl_core.registry import Registry, backbones, datasets, recipes


def _toy() -> Registry:
    return Registry("widget", None, {"a": "the first", "b": "the second"})


def test_names_descriptions_and_builders():
    reg = _toy()
    assert reg.names() == ("a", "b") and "a" in reg and "c" not in reg
    assert reg.describe() == "a (the first), b (the second)"

    @reg.register("a")
    def build_a(x: int) -> int:
        return x + 1

    assert reg.get("a") is build_a and reg.get("a")(1) == 2


def test_errors_say_what_to_do():
    reg = _toy()
    with pytest.raises(ValueError, match=r"unknown widget 'c'; known: \['a', 'b'\]"):
        reg.get("c")
    with pytest.raises(ValueError, match=r"widget 'c' is not declared: add it .* in salgl_core/registry\.py"):
        reg.register("c")
    with pytest.raises(LookupError, match=r"widget 'b' is declared .* but no builder is registered"):
        reg.get("b")
    reg.register("a")(len)
    with pytest.raises(ValueError, match=r"widget 'a' already has a builder: builtins\.len"):
        reg.register("a")(sorted)


def test_the_config_reads_the_registries():
    assert config.BACKBONES == backbones.names() and config.DATASETS == datasets.names()
    assert config.field_spec("backbone").check.choices == backbones.names()
    assert backbones.describe() in config.field_spec("backbone").help
    assert datasets.describe() in config.field_spec("dataset").help


@pytest.mark.parametrize("registry", [backbones, datasets], ids=lambda r: r.kind)
def test_every_declared_name_has_a_builder_in_its_module(registry):
    for name in registry.names():
        builder = registry.get(name)  # imports registry.module on first use
        assert builder.__module__.startswith(registry.module), (name, builder.__module__)


def test_presets_declares_the_recipe_names_the_config_validates():
    assert recipes.names() == tuple(RECIPES)
    assert recipes.describe() == ", ".join(f"{n} ({r.summary})" for n, r in RECIPES.items())
    with pytest.raises(config.ConfigError, match=r"TrainConfig\.recipe = 'bogus' is invalid: expected None or a"):
        config.ExperimentConfig.from_flat({"recipe": "bogus"})


def test_recipe_names_are_declared_whenever_the_config_is_imported():
    # A fresh interpreter that imports the config alone: the package's __init__ has imported presets.
    code = ("from salgl_core.config import ExperimentConfig as E; "
            "print(E.from_flat({'recipe': 'synthetic'}).train.recipe)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "synthetic", out.stderr


def test_declare_adds_a_name_once():
    reg = _toy()
    reg.declare("c", "the third")
    reg.declare("c", "the third")  # the owner module imported again
    assert reg.names() == ("a", "b", "c") and "c" in reg
    with pytest.raises(ValueError, match=r"widget 'c' is already declared: the third"):
        reg.declare("c", "another")
