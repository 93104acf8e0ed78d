import io
import random

import numpy as np
import pytest
import torch

from salgl_core.checkpoint import capture_rng, checkpoint_due, load_checkpoint, restore_rng, save_checkpoint


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


def test_a_checkpoint_streams_into_a_temporary_file_in_its_folder(tmp_path, monkeypatch):
    """torch.save writes straight to a file beside the checkpoint (no serialized copy in memory); a crash halfway
    through the write leaves the previous checkpoint intact and no temporary file behind."""
    real_save = torch.save
    seen = []

    def spy(obj, f, *args, **kwargs):
        seen.append((type(f), sorted(p.name for p in tmp_path.iterdir())))  # the folder while torch.save writes
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint(tmp_path / "c.pt", {"a": torch.ones(4)})
    ((kind, files),) = seen
    assert kind is io.BufferedWriter and len(files) == 1 and files[0].startswith(".c.pt.") and files[0].endswith(".tmp")

    def crash_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("the process was killed")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(tmp_path / "c.pt", {"a": torch.zeros(4)})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["a"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(("every", "epochs", "due"), [
    (1, 4, [1, 2, 3, 4]),
    (2, 5, [2, 4, 5]),  # every 2nd epoch, and the last
    (3, 3, [3]),
    (0, 4, [4]),  # 0: the last epoch only
    (10, 4, [4]),
])
def test_checkpoint_every_policy(every, epochs, due):
    assert [e for e in range(1, epochs + 1) if checkpoint_due(e, epochs, every)] == due


def test_pending_best_weights_are_committed_or_dropped_on_resume(tmp_path):
    from salgl_core.checkpoint import BEST_EMA, BEST_EMA_PENDING, commit_best, settle_pending_best

    save_checkpoint(tmp_path / BEST_EMA, {"epoch": 1})
    save_checkpoint(tmp_path / BEST_EMA_PENDING, {"epoch": 2})
    assert settle_pending_best(tmp_path, restored_epoch=2) is None  # the crash came after epoch 2's checkpoint
    assert load_checkpoint(tmp_path / BEST_EMA)["epoch"] == 2 and not (tmp_path / BEST_EMA_PENDING).exists()
    save_checkpoint(tmp_path / BEST_EMA_PENDING, {"epoch": 3})
    assert "epoch 3 dropped" in settle_pending_best(tmp_path, restored_epoch=2)  # epoch 3 is trained again
    assert load_checkpoint(tmp_path / BEST_EMA)["epoch"] == 2 and not (tmp_path / BEST_EMA_PENDING).exists()
    assert settle_pending_best(tmp_path, restored_epoch=2) is None
    save_checkpoint(tmp_path / BEST_EMA_PENDING, {"epoch": 4})
    commit_best(tmp_path)
    assert load_checkpoint(tmp_path / BEST_EMA)["epoch"] == 4
