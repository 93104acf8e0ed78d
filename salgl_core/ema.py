"""Model-weight EMA, as the official training code (timm's ModelEma): every floating-point entry of the
state_dict is averaged, buffers included. That covers the co-occurrence counts (official
`comat_ema=True`) and BatchNorm statistics; integer buffers are copied.

The per-step decay (`step_decay`): UNOFF sets it to 0.82^(1 / iterations per epoch), so the EMA keeps 82% of
its weights per epoch; it hard-codes the iterations for each dataset at batch 128 (utils/util.py get_ema_co:
641 COCO, 39 VOC 2007, 980 NUS-WIDE). We keep the rule, not the constant: with TrainConfig.ema_epoch_retention
above 0 the decay is retention^(1 / len(train loader)), so a smaller batch or a subset keeps the same share
per epoch (the constant for 641 iterations left the EMA model of a 13-iteration run at its random
initialisation: 0.99969^13 = 0.996 per epoch). With retention 0 the constant TrainConfig.ema_decay is used
(official 0.9997).

Optional warm-up (ours; off by default, as the official code): the decay of update number t (0-based) is
min(decay, (1 + t) / (10 + t)), the `num_updates` rule of TensorFlow's ExponentialMovingAverage. Without it,
0.9997 with 13 steps an epoch leaves the EMA model at its initial weights for a whole short run
(0.9997^130 = 0.96). The update count is saved in `state_dict()` (as module extra state), so a resumed run
continues the same decay schedule.

Per-step cost: the entries to average are paired once (`_Pairs`: for every state_dict key, the module that owns it
and the attribute name, in the live model and in the copy) and every update reads the current tensors through
those owners, one dict look-up each, instead of building two state_dicts. Reading through the owner keeps it
right when a module re-assigns a buffer: SceneCooccurrence.update does `self.counts = new` every training step,
a new tensor each time, and `.to()` / `load_state_dict(assign=True)` replace tensors too. The pairing is rebuilt
when the live model is another object or either module's set of submodules changed (a cheap identity check); a
state_dict entry that no module attribute holds (a state-dict hook's, extra state) makes update() fall back to
the state_dict path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def step_decay(ema_decay: float, epoch_retention: float, steps_per_epoch: int) -> float:
    """The per-step EMA decay: epoch_retention^(1 / steps_per_epoch) when epoch_retention > 0 (the EMA then keeps
    exactly that share per epoch), else the constant ema_decay (TrainConfig's two fields)."""
    if epoch_retention > 0:
        if steps_per_epoch < 1:
            raise ValueError(f"an epoch of {steps_per_epoch} steps has no per-step EMA decay")
        return epoch_retention ** (1.0 / steps_per_epoch)
    return ema_decay


def describe_step_decay(ema_decay: float, epoch_retention: float, steps_per_epoch: int) -> str:
    """One log line: the per-step decay a run uses and where it comes from."""
    decay = step_decay(ema_decay, epoch_retention, steps_per_epoch)
    if epoch_retention > 0:
        return (f"EMA: {epoch_retention:g} per epoch over {steps_per_epoch} iterations -> per-step decay {decay:.6f} "
                f"(ema_epoch_retention; ema_decay {ema_decay:g} unused)")
    return (f"EMA: constant per-step decay {decay:g} (ema_decay; keeps {decay ** steps_per_epoch:.3g} per epoch of "
            f"{steps_per_epoch} iterations)")


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float, comat_ema: bool = True, warmup: bool = False) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.comat_ema = comat_ema
        self.warmup = warmup
        self.updates = 0  # number of update() calls so far
        self._pairs: _Pairs | None = None  # update()'s pairing of the live and the EMA tensors (a cache)

    def current_decay(self) -> float:
        """The decay the next update() uses."""
        if self.warmup:
            return min(self.decay, (1 + self.updates) / (10 + self.updates))
        return self.decay

    def _copied(self, name: str, t: torch.Tensor) -> bool:
        # Integers are copied; with comat_ema off the EMA model uses the live counts (the official
        # --no-comat-ema makes the EMA copy point at the live buffer).
        return not t.dtype.is_floating_point or (not self.comat_ema and name.endswith("cooccurrence.counts"))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_pairs": None}  # a copy or pickle must not drag the live model along

    def _pairs_for(self, model: nn.Module) -> _Pairs | None:
        pairs = self._pairs
        if pairs is None or not pairs.valid_for(model, self.module):
            pairs = self._pairs = _Pairs.build(model, self.module, self._copied)
        return pairs if pairs.complete else None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        pairs = self._pairs_for(model)
        if pairs is None:
            self._update_from_state_dicts(model, decay)
        else:
            for dst, src in zip(pairs.current(pairs.ema_copied), pairs.current(pairs.live_copied), strict=True):
                dst.copy_(src)
            avg = pairs.current(pairs.ema_avg)
            src = [v if v.dtype == a.dtype else v.to(a.dtype) for a, v in zip(avg, pairs.current(pairs.live_avg),
                                                                              strict=True)]
            # One fused multi-tensor op instead of hundreds of small kernels per step.
            torch._foreach_lerp_(avg, src, 1.0 - decay)
        self.updates += 1

    def _update_from_state_dicts(self, model: nn.Module, decay: float) -> None:
        """The reference path (and the fallback): the same update read from both state_dicts."""
        live = model.state_dict()
        avg, src = [], []
        for name, ema_v in self.module.state_dict().items():
            v = live[name].detach()
            if self._copied(name, ema_v):
                ema_v.copy_(v)
            else:
                avg.append(ema_v)
                src.append(v.to(ema_v.dtype))
        torch._foreach_lerp_(avg, src, 1.0 - decay)

    def get_extra_state(self) -> dict[str, int]:
        return {"updates": self.updates}

    def set_extra_state(self, state: Any) -> None:
        self.updates = int(state["updates"])

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load `state_dict()` of a ModelEMA, or (checkpoints written before the update count was saved)
        the EMA model's own state_dict: then the count is unknown, which only matters with warm-up."""
        if not any(k.startswith("module.") for k in state_dict):
            if self.warmup:
                raise ValueError("this checkpoint's EMA state has no update count (it was written before EMA "
                                 "warm-up existed), so the warm-up schedule cannot be resumed exactly; resume "
                                 "with EMA warm-up off, as the run was started")
            self.updates = 0
            return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


# (owner module, attribute name, "_parameters" or "_buffers"): where one state_dict entry lives.
_Ref = tuple[nn.Module, str, str]


class _Pairs:
    """The state_dict entries of a live model and its EMA copy, paired once by name and split into averaged and
    copied ones (ModelEMA._copied), each held as where the tensor lives rather than the tensor itself."""

    def __init__(self, live: nn.Module, ema: nn.Module) -> None:
        self.live, self.ema = live, ema
        self.live_modules, self.ema_modules = list(live.modules()), list(ema.modules())
        self.live_avg: list[_Ref] = []
        self.ema_avg: list[_Ref] = []
        self.live_copied: list[_Ref] = []
        self.ema_copied: list[_Ref] = []
        self.complete = True

    @classmethod
    def build(cls, live: nn.Module, ema: nn.Module, copied: Any) -> _Pairs:
        pairs = cls(live, ema)
        live_sd = live.state_dict(keep_vars=True)
        for name, ema_v in ema.state_dict(keep_vars=True).items():
            a, b = _owner(ema, name, ema_v), _owner(live, name, live_sd.get(name))
            if a is None or b is None:  # held by no module attribute: update() uses the state_dicts
                pairs.complete = False
                return pairs
            if copied(name, ema_v):
                pairs.ema_copied.append(a)
                pairs.live_copied.append(b)
            else:
                pairs.ema_avg.append(a)
                pairs.live_avg.append(b)
        return pairs

    def valid_for(self, live: nn.Module, ema: nn.Module) -> bool:
        # Same objects, same submodules (identity, in order): a cheap check, done every update.
        return (live is self.live and ema is self.ema
                and _same(live.modules(), self.live_modules) and _same(ema.modules(), self.ema_modules))

    @staticmethod
    def current(refs: list[_Ref]) -> list[torch.Tensor]:
        """The tensors the owners hold now (a re-assigned buffer is read as its new tensor)."""
        # No detach: update() runs under no_grad, and a detached view per tensor per step is what this avoids.
        return [getattr(m, kind)[n] for m, n, kind in refs]


def _owner(root: nn.Module, name: str, tensor: torch.Tensor | None) -> _Ref | None:
    """Which module attribute holds the state_dict entry `name` (that very tensor), or None."""
    if tensor is None:
        return None
    path, _, attr = name.rpartition(".")
    try:
        module = root.get_submodule(path)
    except AttributeError:
        return None
    for kind in ("_parameters", "_buffers"):
        held = getattr(module, kind).get(attr)
        if held is not None and held is tensor:
            return module, attr, kind
    return None


def _same(modules: Any, cached: list[nn.Module]) -> bool:
    n = 0
    for n, m in enumerate(modules, start=1):
        if n > len(cached) or cached[n - 1] is not m:
            return False
    return n == len(cached)
