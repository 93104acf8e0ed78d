"""The GPU memory estimate (salgl_core/memory.py): the fake-tensor trace against a real CPU run of the same step,
its persistent parts against the parameter count, and the paper recipe against what the review measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from salgl_core.config import ExperimentConfig
from salgl_core.memory import GB, MARGIN_BYTES, MARGIN_SHARE, estimate_train_memory, largest_batch, trace_train_step
from salgl_core.presets import SMOKE, recipe_config, synthetic_preset


def _small(**over) -> ExperimentConfig:
    """The smoke model (small CNN) at 32 px: a real CPU step takes well under a second."""
    return ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "batch_size": 8, **over})


def test_the_private_torch_apis_it_relies_on_still_exist():
    # salgl_core/memory.py is the one place these are imported; if a torch upgrade moves them, this names which.
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    with FakeTensorMode() as mode:
        x = torch.zeros(4, 1000)
        seen = []

        class Spy(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                seen.extend(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
                return out

        with Spy():
            y = (x * 2).sum(0)
    assert isinstance(y, FakeTensor) and y.fake_mode is mode and y.shape == (1000,)
    assert {t.untyped_storage().nbytes() for t in seen} == {16000, 4000}  # storage sizes without real memory


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_fake_trace_equals_a_real_cpu_run(amp):
    """The same step on real CPU tensors, counted the same way: the traced peak must agree (fake tensors only
    skip the arithmetic). bf16 autocast halves the activations (fp16 is as many bytes, slower on a CPU)."""
    cfg = _small(amp=amp)
    fake, real = trace_train_step(cfg), trace_train_step(cfg, fake=False)
    assert fake.keys() == real.keys()
    for k in fake:
        assert fake[k] == pytest.approx(real[k], rel=0.002), k
    assert fake["peak"] > fake["weights"] + fake["gradients"] + fake["optimizer"] + fake["ema"] + fake["inputs"]


def test_persistent_parts_match_the_parameter_count():
    """Weights, gradients, AdamW's moments and the EMA copy, against the model's own tensors (each allocation
    rounded to 512 bytes, as the CUDA caching allocator)."""
    from salgl_core.model import build_model

    cfg = _small()
    model = build_model(cfg.model, cfg.data.synthetic_classes, "synthetic")

    def rounded(ts):
        return sum(-(-t.numel() * t.element_size() // 512) * 512 for t in ts)

    params = list(model.parameters())
    b = trace_train_step(cfg)
    assert b["weights"] == rounded([*params, *model.buffers()]) == b["ema"]
    assert b["gradients"] == rounded(params)
    assert b["optimizer"] == 2 * rounded(params) + 512 * len(params)  # exp_avg, exp_avg_sq and a step counter each


def test_given_scenes_are_estimated_as_learned_ones():
    """Oracle / random scene ids are read by value in the model, which fake tensors have not: traced as learned."""
    oracle = estimate_train_memory(_small(scene_source="oracle", num_scenes=SMOKE["synthetic_scenes"]))
    learned = estimate_train_memory(_small(num_scenes=SMOKE["synthetic_scenes"]))
    assert oracle.total == learned.total


@pytest.mark.slow
def test_activations_grow_with_the_batch_and_shrink_with_amp():
    one = estimate_train_memory(_small(batch_size=8))
    two = estimate_train_memory(_small(batch_size=16))
    assert two.activations == pytest.approx(2 * one.activations, rel=0.15)
    assert two.weights == one.weights and two.optimizer == one.optimizer
    assert estimate_train_memory(_small(batch_size=16, amp="bf16")).activations < 0.8 * two.activations
    assert one.margin == MARGIN_BYTES + int(MARGIN_SHARE * one.traced_peak)
    assert one.total == one.traced_peak + one.margin


@pytest.mark.slow
def test_a_frozen_backbone_with_cached_features_has_no_backbone_gradients():
    full = estimate_train_memory(_small())
    cached = estimate_train_memory(_small(freeze_backbone=True, feature_cache=True))
    assert cached.weights == full.weights
    assert cached.gradients < full.gradients and cached.activations < full.activations


@pytest.mark.slow
def test_largest_batch_fits_and_one_more_does_not():
    cfg = _small(batch_size=32)
    budget = estimate_train_memory(cfg.replace(batch_size=20)).total + 1
    assert largest_batch(cfg, budget) == 20  # the estimate grows with every image: 21 does not fit
    assert largest_batch(cfg, 1.0) == 0  # the margin alone is larger
    assert largest_batch(cfg, 100 * GB) == 32


@pytest.mark.slow
def test_paper_recipe_at_batch_128_matches_the_review():
    """ResNet-101 at 448 px, batch 128, fp16 AMP: the review of the GPU path put it near 45-50 GB with the chunked
    attention; the trace (plus its margin) must land there, and without AMP far above."""
    cfg = ExperimentConfig.from_flat(recipe_config("paper-coco-r101-448"))
    est = estimate_train_memory(cfg)
    assert 40 * GB < est.total < 52 * GB
    assert 0.4 * GB < est.weights < 0.6 * GB  # ResNet-101 + the SALGL head at width 2048, float32
    assert est.trace_seconds < 60
    assert estimate_train_memory(cfg.replace(amp="none")).activations > 1.6 * est.activations


@pytest.mark.slow
def test_memory_benchmark_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "salgl_core.bench", "memory", "--recipe", "synthetic",
                          "--batch-size", "8", "--image-size", "32", "--gpu-memory-gb", "100"],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    assert result["benchmark"] == "memory" and result["batch_size"] == 8 and result["image_size"] == 32
    assert result["total_gb"] == pytest.approx(result["traced_peak_gb"] + result["margin_gb"], abs=0.02)
    assert result["fits"] is True and result["largest_batch_size"] == 8
