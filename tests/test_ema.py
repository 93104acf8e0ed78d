import copy
import io

import pytest
import torch
from torch import nn

from salgl_core.ema import ModelEMA, describe_step_decay, step_decay


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)
        self.register_buffer("counts", torch.zeros(2))


def test_ema_averages_weights_and_float_buffers_copies_integers():
    m = Tiny()
    ema = ModelEMA(m, decay=0.9)
    start = ema.module.lin.weight.clone()
    with torch.no_grad():
        m.lin.weight.add_(1.0)
        m.counts.fill_(10.0)
        m.bn.num_batches_tracked.fill_(7)
    ema.update(m)
    torch.testing.assert_close(ema.module.lin.weight, 0.9 * start + 0.1 * m.lin.weight)
    torch.testing.assert_close(ema.module.counts, torch.full((2,), 1.0))  # averaged, as official comat_ema
    assert ema.module.bn.num_batches_tracked.item() == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_comat_ema_off_uses_live_counts():
    class WithCo(nn.Module):
        def __init__(self):
            super().__init__()
            self.cooccurrence = Tiny()

    m = WithCo()
    ema = ModelEMA(m, decay=0.9, comat_ema=False)
    m.cooccurrence.counts.fill_(10.0)
    ema.update(m)
    torch.testing.assert_close(ema.module.cooccurrence.counts, torch.full((2,), 10.0))


def _drifting_updates(m, ema, n):
    for _ in range(n):
        with torch.no_grad():
            m.lin.weight.add_(1.0)
        ema.update(m)


def test_warmup_follows_the_num_updates_rule():
    m = Tiny()
    ema = ModelEMA(m, decay=0.9997, warmup=True)
    start = ema.module.lin.weight.clone()
    assert ema.current_decay() == 0.1  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        m.lin.weight.add_(1.0)
    ema.update(m)
    torch.testing.assert_close(ema.module.lin.weight, 0.1 * start + 0.9 * m.lin.weight)
    assert ema.updates == 1 and ema.current_decay() == 2 / 11
    ema.updates = 100_000
    assert ema.current_decay() == 0.9997  # capped at the configured decay
    off = ModelEMA(m, decay=0.9997)
    assert off.current_decay() == 0.9997 and not off.warmup  # default: the official constant decay


def test_warmup_moves_the_ema_off_its_initial_weights_in_a_short_run():
    # 10 epochs x 13 steps with 0.9997 after a jump of the live weights from w0 to w1: the EMA is
    # w1 + r (w0 - w1), where r = product of the decays. Without warm-up r = 0.9997^130 = 0.962; with it
    # r = prod_t (1 + t) / (10 + t) = 9! 130! / 139!, about 3e-14.
    m = Tiny()
    plain, warm = ModelEMA(m, 0.9997), ModelEMA(m, 0.9997, warmup=True)
    w0 = m.lin.weight.detach().double().clone()
    with torch.no_grad():
        m.lin.weight.add_(1.0)
    for _ in range(130):
        plain.update(m)
        warm.update(m)
    w1 = m.lin.weight.detach().double()
    remaining = lambda e: ((e.module.lin.weight.double() - w1) / (w0 - w1)).mean().item()  # noqa: E731
    assert remaining(plain) == pytest.approx(0.9997**130, rel=1e-4)
    assert abs(remaining(warm)) < 1e-6


def test_update_count_round_trips_through_state_dict_weights_only():
    m = Tiny()
    ema = ModelEMA(m, decay=0.999, warmup=True)
    _drifting_updates(m, ema, 7)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = ModelEMA(Tiny(), decay=0.999, warmup=True)
    fresh.load_state_dict(state)
    assert fresh.updates == 7
    for a, b in zip(fresh.module.state_dict().values(), ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # Resumed and uninterrupted runs stay identical, step for step.
    m2 = copy.deepcopy(m)
    _drifting_updates(m, ema, 5)
    _drifting_updates(m2, fresh, 5)
    assert fresh.updates == ema.updates == 12
    assert torch.equal(fresh.module.lin.weight, ema.module.lin.weight)


def test_old_checkpoint_format_still_loads():
    # Checkpoints written before the update count was saved hold the bare EMA model's state_dict.
    m = Tiny()
    with torch.no_grad():
        m.lin.weight.fill_(3.0)
    old = ModelEMA(m, decay=0.9).module.state_dict()
    ema = ModelEMA(Tiny(), decay=0.9)
    ema.load_state_dict(old)
    assert torch.equal(ema.module.lin.weight, torch.full((2, 2), 3.0)) and ema.updates == 0
    with pytest.raises(ValueError, match="no update count"):
        ModelEMA(Tiny(), decay=0.9, warmup=True).load_state_dict(old)
    with pytest.raises(RuntimeError, match="Missing key"):
        ModelEMA(Tiny(), decay=0.9).load_state_dict({"module.lin.weight": torch.zeros(2, 2)})


# --- the per-epoch rule (ema_epoch_retention): the same share per epoch at any batch size


def _remaining_after(ema, m, steps):
    """The EMA weights' remaining share of the initial weights after `steps` updates towards a jumped model."""
    w0 = ema.module.lin.weight.detach().double().clone()
    with torch.no_grad():
        m.lin.weight.add_(1.0)
    for _ in range(steps):
        ema.update(m)
    w1 = m.lin.weight.detach().double()
    return ((ema.module.lin.weight.double() - w1) / (w0 - w1)).mean().item()


@pytest.mark.parametrize("images", [208, 82_081])
def test_retention_per_epoch_is_the_same_at_two_batch_sizes(images):
    # One epoch of N steps at batch B and of N/2 steps at batch 2B (drop_last): both keep 0.82 of the start.
    shares = []
    for batch in (16, 32):
        steps = images // batch
        m = Tiny()
        ema = ModelEMA(m, step_decay(0.9997, 0.82, steps))
        shares.append(_remaining_after(ema, m, steps))
    assert shares == pytest.approx([0.82, 0.82], rel=1e-6)
    # UNOFF's constant for COCO at batch 128 (641 iterations) on 13 iterations: the EMA barely leaves the start.
    m = Tiny()
    assert _remaining_after(ModelEMA(m, 0.82 ** (1 / 641)), m, 13) == pytest.approx(0.82 ** (13 / 641), rel=1e-6)


def test_step_decay_rule_and_its_log_line():
    assert step_decay(0.9997, 0.82, 641) == pytest.approx(0.99969045, abs=1e-8)  # UNOFF's COCO value
    assert step_decay(0.9997, 0.82, 39) == pytest.approx(0.82 ** (1 / 39), abs=1e-15)
    assert step_decay(0.99, 0.0, 13) == 0.99  # retention 0: the constant ema_decay (the synthetic preset's)
    with pytest.raises(ValueError, match="0 steps"):
        step_decay(0.9997, 0.82, 0)
    line = describe_step_decay(0.9997, 0.82, 13)
    assert line == "EMA: 0.82 per epoch over 13 iterations -> per-step decay 0.984850 (ema_epoch_retention; " \
                   "ema_decay 0.9997 unused)"
    assert describe_step_decay(0.99, 0.0, 46) == ("EMA: constant per-step decay 0.99 (ema_decay; keeps 0.63 per "
                                                  "epoch of 46 iterations)")


def test_the_config_field_and_which_wins():
    from salgl_core.config import ConfigError, ExperimentConfig, field_spec

    cfg = ExperimentConfig()
    assert (cfg.train.ema_epoch_retention, cfg.train.ema_decay) == (0.0, 0.9997)  # official: the constant
    assert "wins over ema_decay" in field_spec("ema_epoch_retention").help
    assert ExperimentConfig.from_flat({"ema_epoch_retention": 1}).train.ema_epoch_retention == 1.0
    for bad in (-0.1, 1.5, "0.82"):
        with pytest.raises(ConfigError, match=r"ema_epoch_retention = .* expected a number in \[0.0, 1.0\]"):
            ExperimentConfig.from_flat({"ema_epoch_retention": bad})


@pytest.mark.slow
def test_fit_derives_the_step_decay_from_its_own_loader(tmp_path):
    """The engine: a smoke run at batch 8 and 16 (4 and 2 iterations an epoch) keeps 0.82 per epoch either way,
    logs the decay and records it in each epoch row."""
    from salgl_core.config import ExperimentConfig
    from salgl_core.engine import fit
    from salgl_core.presets import SMOKE, synthetic_preset

    torch.set_num_threads(2)
    for batch, steps in ((8, 4), (16, 2)):
        cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": str(tmp_path),
                                          "batch_size": batch, "ema_epoch_retention": 0.82, "ema_warmup": False})
        lines = []
        result = fit(cfg, data=None, log=lines.append)
        decay = result.epochs[0]["ema_step_decay"]
        assert decay ** steps == pytest.approx(0.82, rel=1e-9)
        assert f"EMA: 0.82 per epoch over {steps} iterations -> per-step decay {decay:.6f}" in lines[0]


# --- update() pairs the tensors once (no state_dict per step); it must equal the state_dict path


class Reassigning(nn.Module):
    """Re-assigns a float buffer every forward (as SceneCooccurrence does with its counts) and holds an integer one."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.cooccurrence = nn.Module()
        self.cooccurrence.register_buffer("counts", torch.zeros(2, 2))

    def forward(self, x):
        y = self.bn(self.lin(x))
        self.cooccurrence.counts = self.cooccurrence.counts * 0.5 + y.detach().t() @ y.detach()  # a new tensor
        return y


def _step(m, opt):
    opt.zero_grad()
    m(torch.randn(4, 3)).square().sum().backward()
    opt.step()


@pytest.mark.parametrize("comat_ema", [True, False])
def test_cached_pairs_equal_the_state_dict_path_over_steps_and_loads(comat_ema):
    torch.manual_seed(0)
    m = Reassigning()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    cached, reference = ModelEMA(m, 0.7, comat_ema), ModelEMA(m, 0.7, comat_ema)

    def same():
        for (name, a), b in zip(cached.state_dict().items(), reference.state_dict().values(), strict=True):
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name

    for _ in range(5):
        _step(m, opt)
        cached.update(m)
        with torch.no_grad():
            reference._update_from_state_dicts(m, reference.current_decay())
        reference.updates += 1
        same()
    assert cached._pairs is not None and cached._pairs.complete  # the cached path ran, not the fallback
    # Loading (in place, and by assignment: new tensor objects) and a live model that is another object.
    state = {k: v.clone() + 1 if v.is_floating_point() else v for k, v in reference.state_dict().items()
             if k.startswith("module.")}
    state["_extra_state"] = reference.get_extra_state()
    for assign in (False, True):
        cached.load_state_dict(state, assign=assign)
        reference.load_state_dict(state)
        other = copy.deepcopy(m)
        for model in (m, other):
            _step(model, torch.optim.SGD(model.parameters(), lr=0.1))
            cached.update(model)
            with torch.no_grad():
                reference._update_from_state_dicts(model, reference.current_decay())
            reference.updates += 1
            same()
    if not comat_ema:  # the counts followed the live buffer (of the last model updated from), a new tensor each step
        assert torch.equal(cached.module.cooccurrence.counts, other.cooccurrence.counts)


def test_a_copied_ema_does_not_carry_the_live_model():
    m = Tiny()
    ema = ModelEMA(m, 0.9)
    ema.update(m)
    assert ema._pairs is not None and copy.deepcopy(ema)._pairs is None
