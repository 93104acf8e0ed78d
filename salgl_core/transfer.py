"""--init-from: start a run from another run's weights (fine-tuning, e.g. VOC 2007 from a COCO run).

Every parameter and buffer of the new model whose name and shape match an entry of the source is loaded:
the backbone, the encoder, the scene classifier, the attention, the GNN and the head. The label-specific
modules (LABEL_SPECIFIC) start afresh even when their shapes match, as two datasets with the same number of
classes would have them: the label embeddings (what the new config says, e.g. the new dataset's BERT
vectors), the per-class classifier, and the per-scene co-occurrence counts (counts of the source's labels;
zero, as at the start of any run). Entries of the new model that the source lacks or holds in another shape
keep their fresh initialisation (skipped); the backbone must load whole (a run of another backbone is refused).

Which weights: the source's EMA weights, the model every view reports. A run folder gives its best_ema.pt
(the EMA model of its best epoch) or, without one (study trials write none), the EMA weights of its
checkpoint.pt (its last epoch); a file gives what it holds (best_ema.pt: `model`; checkpoint.pt: `ema`; or
a bare SALGL state_dict). The live model and its EMA copy both start from them. UNOFF fine-tunes the same
way (utils/util.py load_model: every entry whose name and shape match, minus INPUT_OUTPUT.resume_omit).

A resumed run continues from its own checkpoint: engine.fit applies init_from only to a run that starts afresh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salgl_core.checkpoint import BEST_EMA, CHECKPOINT, load_checkpoint
from salgl_core.config import ConfigError

RUN_FILES = (BEST_EMA, CHECKPOINT)  # what a run folder gives, in this order
# The modules that are about the labels of the source's dataset, by SALGL attribute name: never loaded.
LABEL_SPECIFIC = {
    "label_embedding": "label-specific: this config's label embeddings",
    "classifier": "label-specific: one classifier per class",
    "cooccurrence": "label-specific: co-occurrence counts start at zero",
}
LOADED, REINITIALISED, SKIPPED = "loaded", "re-initialised", "skipped"


class InitFromError(ConfigError):
    """--init-from names something that is not a usable SALGL run or checkpoint; the message says what it holds."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    action: str  # LOADED, REINITIALISED or SKIPPED
    why: str


@dataclasses.dataclass
class Source:
    """The weights --init-from names: the file read, its state_dict and what they are."""

    file: Path
    state: dict[str, torch.Tensor]
    what: str  # e.g. "the EMA model of epoch 3 (its best)"
    config: dict[str, Any] | None = None
    class_names: list[str] | None = None

    @property
    def backbone(self) -> str | None:
        return self.config.get("backbone") if self.config else None


@dataclasses.dataclass
class TransferReport:
    source: Source
    entries: list[Entry]

    def names(self, action: str) -> list[str]:
        return [e.name for e in self.entries if e.action == action]

    def table(self) -> str:
        """What was loaded (grouped by top-level module), re-initialised and skipped, one row each."""
        src = self.source
        dataset = f"{src.config.get('dataset')}, " if src.config else ""
        classes = f"{len(src.class_names)} classes, " if src.class_names else ""
        lines = [f"init_from {src.file}: {src.what} ({dataset}{classes}{src.backbone or 'backbone unknown'})"]
        rows: list[tuple[str, str, str, str]] = []
        groups: dict[str, list[Entry]] = {}
        for e in self.entries:
            if e.action == LOADED:
                groups.setdefault(e.name.split(".")[0], []).append(e)
        for module, es in groups.items():
            values = sum(math.prod(e.shape) for e in es)
            count = f"{len(es)} tensor{'s' if len(es) > 1 else ''}"
            rows.append((LOADED, f"{module}.* ({count})", f"{values:,} values", "name and shape match"))
        rows += [(e.action, e.name, str(list(e.shape)), e.why) for e in self.entries if e.action != LOADED]
        w = [max(len(r[i]) for r in [("", "name", "shape", ""), *rows]) for i in range(3)]
        lines.append(f"  {'':<{w[0]}}  {'name':<{w[1]}}  {'shape':<{w[2]}}  why")
        lines += [f"  {a:<{w[0]}}  {n:<{w[1]}}  {s:<{w[2]}}  {why}" for a, n, s, why in rows]
        return "\n".join(lines)


def label_specific(name: str) -> str | None:
    """Why the entry `name` is re-initialised, or None if it is not label-specific."""
    return LABEL_SPECIFIC.get(name.split(".")[0])


def plan_transfer(target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> list[Entry]:
    """Every entry of `target` (a model's state_dict), loaded or not and why, then the source's entries the
    model does not have (skipped). Pure: nothing is loaded."""
    out = []
    for name, t in target.items():
        shape = tuple(t.shape)
        why = label_specific(name)
        if why is not None:
            out.append(Entry(name, shape, REINITIALISED, why))
        elif name not in source:
            out.append(Entry(name, shape, SKIPPED, "not in the source: fresh init"))
        elif tuple(source[name].shape) != shape:
            out.append(Entry(name, shape, SKIPPED, f"the source's is {list(source[name].shape)}: fresh init"))
        else:
            out.append(Entry(name, shape, LOADED, "name and shape match"))
    out += [Entry(name, tuple(t.shape), SKIPPED, "not in this model: unused")
            for name, t in source.items() if name not in target]
    return out


def resolve_file(path: str | Path) -> Path:
    """The file --init-from reads: the path itself, or a run folder's best_ema.pt, else its checkpoint.pt."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in RUN_FILES:
            if (p / name).is_file():
                return p / name
        raise InitFromError(f"--init-from {p} is a folder without {' or '.join(RUN_FILES)}: name a training run's "
                            "folder (--out of python -m salgl_core.train) or one of those files")
    if not p.is_file():
        raise InitFromError(f"--init-from {p} does not exist: name a training run's folder or its best_ema.pt")
    return p


def _ema_weights(ema: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    # ModelEMA.state_dict(): the EMA model under `module.`, plus its update count (extra state).
    if any(k.startswith("module.") for k in ema):
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.") and torch.is_tensor(v)}
    return dict(ema)  # checkpoints written before the count was saved: the EMA model's own state_dict


def read_source(path: str | Path) -> Source:
    """The EMA weights `path` names (see the module docstring); InitFromError naming the file otherwise."""
    file = resolve_file(path)
    try:
        obj = load_checkpoint(file)
    except Exception as e:  # not a torch file, or one holding objects weights_only refuses
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InitFromError(f"--init-from {file} is not a checkpoint ({reason[:120]}): name a training run's folder "
                            "or its best_ema.pt / checkpoint.pt") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping):
        state, what = _ema_weights(obj["ema"]), f"the EMA weights of epoch {obj.get('epoch', '?')} (its last saved)"
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state, what = dict(obj["model"]), f"the EMA model of epoch {obj.get('epoch', '?')} (its best)"
    elif isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
        state, what, obj = dict(obj), "a state_dict", {}
    else:
        keys = ", ".join(map(str, list(obj)[:4])) if isinstance(obj, Mapping) else type(obj).__name__
        raise InitFromError(f"--init-from {file} holds no model weights ({keys}): name a training run's folder or "
                            "its best_ema.pt / checkpoint.pt")
    if not any(k.startswith("backbone.") for k in state):
        first = ", ".join(list(state)[:3])
        raise InitFromError(f"--init-from {file} holds no SALGL model (its entries: {first}, ...): name a SALGL run; "
                            "backbone weights alone go to --backbone-weights")
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    names = obj.get("class_names")
    return Source(file, state, what, dict(config) if config else None, list(names) if names else None)


def check_backbone(source: Source, backbone: str, target: Mapping[str, torch.Tensor]) -> None:
    """The source must hold the whole backbone of the new model, in the same shapes (the same architecture)."""
    differ = [k for k, t in target.items() if k.startswith("backbone.")
              and (k not in source.state or tuple(source.state[k].shape) != tuple(t.shape))]
    if source.backbone not in (None, backbone) or (differ and source.backbone is None):
        holds = f"a {source.backbone} model" if source.backbone else "a model"
        raise InitFromError(f"{source.file} holds {holds} (backbone.* shapes differ): --init-from needs a {backbone} "
                            "run")
    if differ:  # the same backbone name with other weights' layout: a checkpoint of another version of the code
        raise InitFromError(f"{source.file} holds a {backbone} model whose backbone.* entries differ from this "
                            f"one's ({len(differ)}, e.g. {differ[0]}): --init-from needs a run of the same backbone")


def init_from(model: nn.Module, path: str | Path, log: Callable[[str], None] | None = print) -> TransferReport:
    """Load into `model` (a SALGL) every entry of `path`'s EMA weights whose name and shape match, the
    label-specific modules excepted; log the table of what was loaded, re-initialised and skipped."""
    source = read_source(path)
    target = model.state_dict()
    check_backbone(source, model.cfg.backbone, target)
    entries = plan_transfer(target, source.state)
    state = dict(target)
    for e in entries:
        if e.action == LOADED:
            state[e.name] = source.state[e.name]
    model.load_state_dict(state)
    report = TransferReport(source, entries)
    if log is not None:
        log(report.table())
    return report
