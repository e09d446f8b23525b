import random

import numpy as np
import pytest
import torch

from siamdetr.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pth", {"rng": rng_state(), "w": torch.arange(3)})
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_same_state_gives_the_same_bytes_wherever_written(tmp_path):
    state = {"w": torch.arange(4.0), "epoch": 3}
    save_checkpoint(tmp_path / "a" / "checkpoint.pth", state)
    save_checkpoint(tmp_path / "b" / "checkpoint.pth", state)
    assert (tmp_path / "a/checkpoint.pth").read_bytes() == (tmp_path / "b/checkpoint.pth").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint.pth"]  # no temp file left


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pth")
