"""What a study trial settles from its own share of the node, on CPU: data-loader workers and torch threads from the
trial's CPUs (num_workers auto), and a cuda:N device mapped to the trial's own GPU (studies/tuning/trainable.py)."""

from __future__ import annotations

import pytest

from salgl_core import config as config_module
from salgl_core.data import resolve_num_workers
from salgl_core.presets import synthetic_preset
from studies.tuning.trainable import settle_trial, trial_device


@pytest.mark.parametrize(("requested", "cpus", "workers"), [
    (-1, 4, 3), (-1, 1, 0), (-1, 2, 1), (-1, 9, 8), (-1, 64, 8),  # auto: min(8, CPUs - 1)
    (0, 16, 0), (5, 2, 5), (12, 4, 12),  # an explicit count wins, whatever the CPUs
])
def test_auto_workers_leave_one_cpu_to_training(requested, cpus, workers):
    assert resolve_num_workers(requested, cpus) == workers


@pytest.mark.parametrize("driver_cpus", [2, 64])
def test_a_trial_with_4_cpus_gets_3_workers_whatever_the_driver_has(monkeypatch, driver_cpus):
    # The process's own CPU count (the driver's, or the node's in a Ray worker) must not matter.
    monkeypatch.setattr("salgl_core.data.available_cpus", lambda: driver_cpus)  # engine reads it from there
    base = {**synthetic_preset(), "num_workers": config_module.DataConfig().num_workers}
    cfg, threads, notes = settle_trial(base, 4, [])
    assert (cfg.data.num_workers, threads, notes) == (3, 1, [])  # 3 workers + 1 torch thread = the trial's 4 CPUs
    cfg, threads, _ = settle_trial(base, 1, [])
    assert (cfg.data.num_workers, threads) == (0, 1)  # one CPU: loading in the training process
    # Typed by the user: kept; torch still gets at least one thread.
    cfg, threads, _ = settle_trial({**base, "num_workers": 6}, 4, [])
    assert (cfg.data.num_workers, threads) == (6, 1)
    # A feature-cache run reads its cache in-process (no workers start): torch has the trial's CPUs.
    cached = {**base, "freeze_backbone": True, "feature_cache": True}
    assert settle_trial(cached, 4, [])[1] == 4


@pytest.mark.parametrize(("name", "gpus", "device"), [
    ("cuda:1", ["1"], "cuda"), ("cuda:0", ["5"], "cuda"), ("cuda:3", ["2", "3"], "cuda"),
    ("cuda:1", [], "cuda:1"),  # no GPU: left to resolve_device's own error ("CUDA is not available")
    ("cpu", ["0"], "cpu"), ("auto", ["0"], "auto"), ("cuda", ["0", "1"], "cuda"),
])
def test_device_indices_are_mapped_to_the_trials_own_gpus(name, gpus, device):
    mapped, note = trial_device(name, gpus)
    assert mapped == device
    if mapped == name:
        assert note is None
    else:  # one line saying what became of the index
        assert note is not None and "\n" not in note
        assert note.startswith(f"device {name} -> cuda") and f"node GPU {', '.join(gpus)}" in note


def test_settle_trial_maps_the_device_and_says_so():
    cfg, _, notes = settle_trial({**synthetic_preset(), "device": "cuda:1"}, 2, ["1"])
    assert cfg.train.device == "cuda" and len(notes) == 1 and "cuda:1 -> cuda" in notes[0]
