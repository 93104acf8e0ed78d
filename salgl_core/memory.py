"""GPU memory of a config's training, estimated on any machine: one real training step traced without memory.

`estimate_train_memory(cfg)` builds the config's model (random init: the same shapes as its weights) and runs
a training step as salgl_core/engine.py does it (autocast forward at the recipe's AMP dtype, the loss, backward,
AdamW's step, the EMA update), on fake tensors: every operator runs for its output's shape, dtype and
strides only, so ResNet-101 at batch 128 and 448 px traces in seconds on a laptop, with no GPU and no memory.
While it runs, `_LiveBytes` sees every tensor an operator returns and counts its storage until Python frees it,
so the peak is measured, not derived from a formula: activations saved for backward, autocast's fp16 weight
copies, the chunked attention's checkpointed chunks, gradients, the optimizer's moments and its temporaries, the
EMA copy. The traced step starts from the steady state: the previous step's gradients and AdamW's moments exist.

What a GPU adds on top, as `margin`: the CUDA context (0.5-1 GB, outside PyTorch's allocator), cuDNN workspaces
(cudnn.benchmark may pick algorithms that take hundreds of MB) and the caching allocator's fragmentation:
MARGIN_BYTES + MARGIN_SHARE x the traced peak. Each allocation is rounded up to 512 bytes, as the CUDA caching
allocator does.

Where the trace differs from a GPU: it runs CPU autocast (fake tensors on "cpu"; CUDA autocast turns itself off
without a GPU). Both cast the same matmuls and convolutions to fp16/bf16; CUDA autocast also runs softmax and
layer_norm in float32, which CPU autocast leaves in fp16 (the encoder's LayerNorm outputs, a few hundred MB at
batch 128: inside the margin). ViT attention takes the CPU flash kernel, whose memory is linear in the tokens,
like CUDA's. Without AMP the label attention takes its float32 CPU kernel (salgl_core/attention.py), whose backward
keeps one or two fewer chunk-sized temporaries than autograd's on CUDA (about 0.5 GB each at batch 128 and 448
px): also inside the margin. tests/test_memory.py checks the trace against a real CPU run of a small config
(the same bytes), and the persistent parts against the parameter count.

Private PyTorch APIs are used here and nowhere else: FakeTensorMode (torch._subclasses), TorchDispatchMode
(torch.utils._python_dispatch) and tree_flatten (torch.utils._pytree). They are what torch.compile and
torch.export are built on, but they carry no stability promise; tests/test_memory.py fails at once if they change.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Private APIs (see the module docstring): the project's only imports of torch's private modules.
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from salgl_core.config import ExperimentConfig
from salgl_core.device import amp_dtype
from salgl_core.ema import ModelEMA
from salgl_core.losses import SALGLLoss
from salgl_core.model import SALGL, build_model

GB = 10**9  # decimal GB, as GPU makers and --gpu-memory-gb count
# The margin on top of the traced peak (module docstring): a fixed part for the CUDA context and cuDNN workspaces,
# a share for the caching allocator's fragmentation.
MARGIN_BYTES = int(1.5 * GB)
MARGIN_SHARE = 0.10
_BLOCK = 512  # the CUDA caching allocator's rounding of every allocation


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of GPU memory one training trial of a config needs. `activations` is everything else alive at the
    peak (the batch, saved activations, autocast's weight copies, temporaries); total = traced_peak + margin."""

    weights: int  # the model's parameters and buffers
    gradients: int
    optimizer: int  # AdamW's two moments (and step counters)
    ema: int  # the EMA model's copy of the parameters and buffers
    activations: int
    traced_peak: int  # the most bytes alive at once during the traced steady-state step
    margin: int  # CUDA context, cuDNN workspaces, allocator fragmentation (MARGIN_BYTES + MARGIN_SHARE x peak)
    total: int
    batch_size: int
    image_size: int
    backbone: str
    amp: str
    trace_seconds: float

    def gb(self) -> dict[str, float]:
        """The byte counts in GB (10^9 bytes), rounded to 0.01."""
        names = ("weights", "gradients", "optimizer", "ema", "activations", "traced_peak", "margin", "total")
        return {f"{n}_gb": round(getattr(self, n) / GB, 2) for n in names}

    def describe(self) -> str:
        """One phrase: what was estimated and what the total is made of."""
        amp = "no AMP" if self.amp == "none" else f"{self.amp} AMP"
        state = self.weights + self.gradients + self.optimizer + self.ema
        return (f"{self.backbone} at {self.image_size} px, batch {self.batch_size}, {amp}: activations "
                f"{self.activations / GB:.1f} GB, weights, gradients, AdamW and EMA {state / GB:.1f} GB, margin "
                f"{self.margin / GB:.1f} GB")


def _rounded(nbytes: int) -> int:
    return -(-nbytes // _BLOCK) * _BLOCK


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an operator returns, from then until Python frees it (a weakref callback
    on the storage), and the peak of that count."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._live:  # a view, an in-place result or a tensor seen before
            return
        size = _rounded(st.nbytes())

        def freed(_: weakref.ref, key: int = key, size: int = size) -> None:
            if self._live.pop(key, None) is not None:
                self.current -= size

        self._live[key] = weakref.ref(st, freed)
        self.current += size
        self.peak = max(self.peak, self.current)

    def bytes_of(self, tensors: Iterable[torch.Tensor]) -> int:
        """The rounded bytes of the distinct storages of `tensors` (tracked or not)."""
        seen: dict[int, int] = {}
        for t in tensors:
            st = t.untyped_storage()
            seen[id(st)] = _rounded(st.nbytes())
        return sum(seen.values())

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


class _FakeMode(FakeTensorMode):
    # ModelEMA deep-copies the model; a fake tensor's __dict__ holds its mode, which must stay the same object
    # (fake tensors of two modes cannot meet in one operator).
    def __deepcopy__(self, memo: dict) -> _FakeMode:
        return self


def num_classes_of(cfg: ExperimentConfig) -> int:
    """The dataset's class count, without reading the data: the shipped label list (coco, voc2007, nuswide) or
    the synthetic generator's."""
    if cfg.data.dataset == "synthetic":
        return cfg.data.synthetic_classes
    from salgl_core.embeddings import shipped_class_names

    return len(shipped_class_names(cfg.data.dataset))


def _class_names(cfg: ExperimentConfig, classes: int) -> list[str] | None:
    # Shipped label vectors are checked against the class order: give them the shipped names.
    if cfg.model.label_embedding in ("bert", "glove") and cfg.data.dataset != "synthetic":
        from salgl_core.embeddings import shipped_class_names

        names = shipped_class_names(cfg.data.dataset)
        return names if len(names) == classes else None
    return None


def _build(cfg: ExperimentConfig, classes: int, mode: FakeTensorMode | None) -> SALGL:
    """The model with random init (no weights file is read: the shapes are the same). With a fake `mode` it is
    built on the meta device, outside the mode (nothing computed: some initialisations, such as ViT's truncated
    normal, read values, which fake tensors do not have), then given fake storage by to_empty inside it."""
    model_cfg = dataclasses.replace(cfg.model, backbone_weights=None)
    names = _class_names(cfg, classes)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format  # as the engine
    if mode is None:
        return build_model(model_cfg, classes, cfg.data.dataset, names).to(memory_format=fmt)
    with torch.device("meta"):
        model = build_model(model_cfg, classes, cfg.data.dataset, names).to(memory_format=fmt)
    with mode:  # empty_like keeps each tensor's layout
        return model.to_empty(device="cpu")


def _inputs(cfg: ExperimentConfig, model: SALGL, batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What one training batch puts on the device: float32 images (or, with feature_cache, the frozen backbone's
    tokens) and float targets."""
    size = cfg.data.image_size
    if cfg.train.feature_cache:
        model.takes_features = True
        with torch.no_grad():
            shape = model.backbone.eval()(torch.zeros(1, 3, size, size)).shape[1:]
        x = torch.zeros(batch, *shape)
    else:
        x = torch.zeros(batch, 3, size, size)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.zeros(batch, classes)


def _step(cfg: ExperimentConfig, model: SALGL, live: _LiveBytes, x: torch.Tensor,
          y: torch.Tensor) -> tuple[int, int, int, int]:
    """One steady-state training step as training.train_one_epoch does it, counting live bytes; returns its peak, the
    gradients', AdamW state's and the EMA's bytes."""
    with warnings.catch_warnings():  # its deep copy asks fake tensors for a data pointer (harmless, but warned)
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        ema = ModelEMA(model, 0.999, cfg.model.comat_ema)
    criterion = SALGLLoss(cfg.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel, as the engine on CUDA (training.adamw_kernel): no temporaries beyond the two moments.
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-2, fused=True)
    dtype = amp_dtype(cfg.train.amp)
    ema_state = [*ema.module.parameters(), *ema.module.buffers()]
    for t in (*model.parameters(), *model.buffers(), *ema_state, x, y):
        live.track(t)
    model.train()
    with live:
        # The state every step but the first starts from: the previous step's gradients (zero_grad frees them only
        # after the forward) and AdamW's moments, made here by one optimizer step on zero gradients.
        with torch.no_grad():
            for p in trainable:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        live.reset_peak()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, y)
        loss, _ = criterion(out.logits, out.scene_probs, y)
        del out
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        del loss
        optimizer.step()
        ema.update(model)
    grads = live.bytes_of(p.grad for p in trainable if p.grad is not None)
    moments = live.bytes_of(v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    return live.peak, grads, moments, live.bytes_of(ema_state)


def trace_train_step(cfg: ExperimentConfig, classes: int | None = None, *, fake: bool = True) -> dict[str, int]:
    """Bytes of one steady-state training step of `cfg` at its batch size: {peak, weights, gradients, optimizer,
    ema, inputs}. fake=False runs it for real on the CPU with the same counting (the tests compare the two)."""
    classes = classes or num_classes_of(cfg)
    mode = _FakeMode(allow_non_fake_inputs=True) if fake else None
    live = _LiveBytes()
    # Given scene ids (scene_source oracle / random) are checked by value in the model, which fake tensors have not:
    # traced as learned scenes, which take a K x D classifier and two scalar loss terms more (a few KB).
    cfg = cfg.replace(scene_source="learned")
    model = _build(cfg, classes, mode)
    with _maybe(mode):
        x, y = _inputs(cfg, model, cfg.train.batch_size, classes)
        weights = live.bytes_of([*model.parameters(), *model.buffers()])
        peak, grads, moments, ema = _step(cfg, model, live, x, y)
    inputs = live.bytes_of([x, y])
    return {"peak": peak, "weights": weights, "gradients": grads, "optimizer": moments, "ema": ema, "inputs": inputs}


@contextmanager
def _maybe(mode: FakeTensorMode | None) -> Iterator[None]:
    if mode is None:
        yield
    else:
        with mode:
            yield


def estimate_train_memory(cfg: ExperimentConfig, classes: int | None = None) -> MemoryEstimate:
    """The GPU memory a training trial of `cfg` needs (module docstring); `classes`: the dataset's class count
    (default: the shipped label list's, or the synthetic generator's)."""
    t0 = time.perf_counter()
    b = trace_train_step(cfg, classes)
    persistent = b["weights"] + b["gradients"] + b["optimizer"] + b["ema"]
    margin = MARGIN_BYTES + int(MARGIN_SHARE * b["peak"])
    return MemoryEstimate(weights=b["weights"], gradients=b["gradients"], optimizer=b["optimizer"], ema=b["ema"],
                          activations=max(0, b["peak"] - persistent), traced_peak=b["peak"], margin=margin,
                          total=b["peak"] + margin, batch_size=cfg.train.batch_size, image_size=cfg.data.image_size,
                          backbone=cfg.model.backbone, amp=cfg.train.amp,
                          trace_seconds=round(time.perf_counter() - t0, 2))


def largest_batch(cfg: ExperimentConfig, budget_bytes: float, classes: int | None = None,
                  estimate: MemoryEstimate | None = None) -> int:
    """The largest batch size at most cfg's whose estimate fits `budget_bytes` (0: not even one image);
    `estimate`: cfg's own, if already traced. The estimate grows about linearly in the batch (the attention's
    chunking changes with it), so two traces predict the answer and two or a few more confirm it."""
    totals: dict[int, int] = {}

    def total(batch: int) -> int:
        if batch not in totals:
            totals[batch] = estimate_train_memory(cfg.replace(batch_size=batch), classes).total
        return totals[batch]

    hi = cfg.train.batch_size
    if estimate is not None and estimate.batch_size == hi:
        totals[hi] = estimate.total
    if total(hi) <= budget_bytes:
        return hi
    half = max(1, hi // 2)
    per_image = max(1.0, (total(hi) - total(half)) / max(1, hi - half))
    guess = max(0, min(hi - 1, int(half + (budget_bytes - total(half)) // per_image)))
    while guess >= 1 and total(guess) > budget_bytes:
        guess = max(0, guess - max(1, guess // 16))
    if guess < 1:
        return 0
    # `guess` fits; bisect up to the smallest batch known not to fit, trying guess + 1 first (usually that one).
    fail = min(b for b, t in totals.items() if t > budget_bytes)
    probe = guess + 1
    while probe < fail:
        if total(probe) <= budget_bytes:
            guess = probe
        else:
            fail = probe
        probe = (guess + fail + 1) // 2
    return guess
