import random

import numpy as np
import pytest
import torch

from salgl_core.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()
    save_checkpoint(tmp_path / "ckpt.pt", {"rng": capture_rng(), "epoch": 4, "w": torch.arange(3.0)})
    expected = _draws()
    _draws()  # move every generator on
    state = load_checkpoint(tmp_path / "ckpt.pt")  # torch.load(weights_only=True) inside
    restore_rng(state["rng"])
    assert _draws() == expected
    assert state["epoch"] == 4 and torch.equal(state["w"], torch.arange(3.0))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", {"a": torch.zeros(2)})
    save_checkpoint(tmp_path / "c.pt", {"a": torch.ones(2)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("salgl_core.io.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c.pt", {"a": torch.full((2,), 7.0)})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
