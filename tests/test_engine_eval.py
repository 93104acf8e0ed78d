"""The engine's evaluation and step mechanics (issue 19): one validation pass scoring the live and the EMA model,
a frozen backbone run once for both, eval_precision and the TF32 rule, divergence recorded on the device, and the
AdamW kernel choice. All on CPU, on the smoke configuration (seconds)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from salgl_core import engine, predict, training
from salgl_core.config import ConfigError, ExperimentConfig, field_spec
from salgl_core.metrics import evaluate
from salgl_core.presets import SMOKE, synthetic_preset


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic-cache"))


def _run(cache_dir: str, **over) -> engine._Run:
    """A smoke run (32 training images, 16 validation images in 2 batches) after one training epoch."""
    torch.set_num_threads(1)
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": cache_dir, **over})
    run = engine._build_run(cfg, None, lambda _: None)
    engine._train_epoch(run, 1, False)
    return run


class _Counting:
    """A loader that counts how often it is iterated (one pass = one iteration)."""

    def __init__(self, loader) -> None:
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN (a metric of a class with no positive is NaN in both)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("source", ["learned", "random"])
def test_one_pass_gives_the_metrics_and_predictions_of_two_passes(cache_dir, source):
    run = _run(cache_dir, scene_source=source)
    t = run.cfg.train
    # Two separate passes, as the engine evaluated before: one per model, each scored on its own.
    live = predict.predict(run.model, run.val_loader, run.device)
    avg = predict.predict(run.ema.module, run.val_loader, run.device)
    ignore = live["ignore"] if live["ignore"].any() else None
    m_live = evaluate(live["scores"], live["targets"], ignore, t.threshold, t.top_k, t.cp_cr_rule)
    m_ema = evaluate(avg["scores"], avg["targets"], ignore, t.threshold, t.top_k, t.cp_cr_rule)

    counting = _Counting(run.val_loader)
    run.val_loader = counting
    row, one = engine._evaluate_epoch(run, {"epoch": 1})
    assert counting.passes == 1  # the validation set is read once for both models
    # The same float32 operations on the same inputs: equal bit for bit, metrics included.
    for key, value in m_live.items():
        assert _same(row[key], value), key
    for ours, theirs in (("mAP_ema", "mAP"), ("mAP_ema_present", "mAP_present"), ("CF1_ema", "CF1"),
                         ("OF1_ema", "OF1")):
        assert _same(row[ours], m_ema[theirs]), ours
    assert set(one) == set(avg)
    for key in avg:
        assert one[key].dtype == avg[key].dtype and np.array_equal(one[key], avg[key]), key
    assert one["scores"].dtype == np.float32 and one["scores"].shape == (16, 8)
    # The scene outputs (the epoch row's scene usage) and the EMA predictions kept for best_scores.
    done = engine._Progress()
    engine._keep_if_best(run, done, row, one, None)
    assert torch.equal(done.best_scores["scores"], torch.from_numpy(avg["scores"]))
    assert torch.equal(done.best_scores["index"], torch.from_numpy(avg["index"]))
    engine._finish_row(run, done, row, one, 0.0, 0.0)
    k = run.cfg.model.num_scenes
    assert row["scene_usage"] == (np.bincount(avg["scenes"], minlength=k)[:k] / len(avg["scenes"])).tolist()


def test_a_frozen_backbone_runs_once_for_both_models(cache_dir):
    run = _run(cache_dir, freeze_backbone=True)
    # After a training epoch the EMA of a frozen backbone is still the backbone, bit for bit (lerp(a, a, w) = a).
    assert engine._shared_backbone(run)
    calls = []
    run.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    run.ema.module.backbone.register_forward_hook(lambda *a: calls.append(1))
    models = [run.model, run.ema.module]
    shared = predict.predict_models(models, run.val_loader, run.device, share_backbone=True)
    assert len(calls) == len(run.val_loader)  # once per batch, not once per batch and model
    calls.clear()
    apart = predict.predict_models(models, run.val_loader, run.device)
    assert len(calls) == 2 * len(run.val_loader)
    for a, b in zip(shared, apart, strict=True):
        for key in a:
            assert np.array_equal(a[key], b[key]), key
    # The engine only shares what is equal: not a training backbone, not a backbone whose EMA differs.
    with torch.no_grad():
        next(run.ema.module.backbone.parameters()).add_(1.0)
    assert not engine._shared_backbone(run)
    assert not engine._shared_backbone(_run(cache_dir, freeze_backbone=False))


def test_eval_precision_field_and_what_each_value_does():
    assert field_spec("eval_precision").default == "tf32"
    assert ExperimentConfig.from_flat({"eval_precision": "bf16"}).train.eval_precision == "bf16"
    with pytest.raises(ConfigError, match="eval_precision"):
        ExperimentConfig.from_flat({"eval_precision": "fp16"})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for p in ("fp32", "tf32", "bf16"):
        assert predict.eval_settings(cpu, p) == (None, None)  # CPU evaluates in float32, flags untouched
    assert predict.eval_settings(cuda, "fp32") == (False, None)  # strict: the official evaluate.py
    assert predict.eval_settings(cuda, "tf32") == (True, None)
    assert predict.eval_settings(cuda, "bf16") == (True, torch.bfloat16)


def _tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_eval_precision_context_sets_and_restores_the_tf32_flags():
    saved = _tf32_flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # training's setting
        for precision, inside in (("fp32", (False, False)), ("tf32", (True, True))):
            with predict.eval_precision(torch.device("cuda"), precision):  # the flags exist without a GPU
                assert _tf32_flags() == inside
            assert _tf32_flags() == (True, True)
        torch.backends.cuda.matmul.allow_tf32 = False
        for precision in ("fp32", "tf32", "bf16"):  # CPU: no flag moves, no autocast, float32 products
            with predict.eval_precision(torch.device("cpu"), precision):
                assert _tf32_flags() == (False, True) and not torch.is_autocast_enabled("cpu")
                assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        # Training's rule: TF32 on CUDA exactly with mixed precision; nothing changes on CPU.
        training.set_tf32(torch.device("cpu"), "fp16")
        assert _tf32_flags() == (False, True)
        for amp, on in (("none", False), ("fp16", True), ("bf16", True)):
            training.set_tf32(torch.device("cuda"), amp)
            assert _tf32_flags() == (on, on)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_non_finite_loss_is_found_at_its_step_after_the_fact(cache_dir, monkeypatch):
    # The check waits for the end of the epoch (no host sync per step), yet names the first bad step and its terms.
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": cache_dir, "epochs": 2})
    run = engine._build_run(cfg, None, lambda _: None)
    engine._train_epoch(run, 1, False)
    real, calls = run.criterion.forward, []

    def nan_at_second_step(*args):
        loss, terms = real(*args)
        calls.append(1)
        if len(calls) == 2:
            loss = loss * math.nan
            terms = {**terms, "loss_total": loss.detach()}
        return loss, terms

    monkeypatch.setattr(run.criterion, "forward", nan_at_second_step)
    with pytest.raises(engine.DivergedError, match="epoch 2, step 6") as info:
        engine._train_epoch(run, 2, False)
    assert len(calls) == len(run.train_loader) == 4  # found at the end of the epoch, not at once
    assert info.value.step == 4 + 2 and math.isnan(info.value.losses["loss_total"])
    assert math.isfinite(info.value.losses["loss_cls"])


def test_finite_watch_checks_every_n_steps():
    watch = training._FiniteWatch(torch.device("cpu"))
    terms = {"loss_total": torch.tensor(1.0), "loss_cls": torch.tensor(2.0)}
    watch.record(torch.tensor(1.0), terms, 1)
    watch.check(1, 0)  # all finite: nothing
    watch.record(torch.tensor(math.inf), {**terms, "loss_total": torch.tensor(math.inf)}, 2)
    watch.record(torch.tensor(math.nan), {**terms, "loss_cls": torch.tensor(math.nan)}, 3)  # not the first
    with pytest.raises(engine.DivergedError) as info:
        watch.check(3, 100)
    assert info.value.step == 102 and info.value.losses == {"loss_total": math.inf, "loss_cls": 2.0}


def test_adamw_kernel_fused_on_cuda_foreach_elsewhere_and_equal_to_the_default_loop():
    fake = lambda kind, fp=True: SimpleNamespace(device=SimpleNamespace(type=kind), is_floating_point=lambda: fp)  # noqa: E731
    assert training.adamw_kernel([fake("cuda"), fake("cuda")]) == {"fused": True, "foreach": False}
    assert training.adamw_kernel([fake("cuda"), fake("cpu")]) == {"fused": False, "foreach": True}
    assert training.adamw_kernel([fake("cuda", fp=False)]) == {"fused": False, "foreach": True}
    assert training.adamw_kernel([torch.zeros(2)]) == {"fused": False, "foreach": True}
    # On CPU the foreach form is the default loop's update: equal within float32 rounding over 20 steps.
    torch.manual_seed(0)
    params = [torch.randn(7, 5), torch.randn(5), torch.randn(3, 3, 3)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(20)]
    result = []
    for kernel in ({"foreach": False}, training.adamw_kernel(params)):
        ps = [p.clone().requires_grad_(True) for p in params]
        opt = torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2, **kernel)
        for g in grads:
            for p, gp in zip(ps, g, strict=True):
                p.grad = gp.clone()
            opt.step()
        result.append([p.detach() for p in ps])
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(*result, strict=True):
        # 20 steps of a few float32 operations each: a few ulps of the parameter's magnitude at most.
        torch.testing.assert_close(a, b, rtol=64 * eps, atol=64 * eps)
