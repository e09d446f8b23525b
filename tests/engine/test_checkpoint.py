import random

import numpy as np
import pytest
import torch

from siamdetr.engine.checkpoint import load_checkpoint, resume, rng_state, save_checkpoint, set_rng_state
from siamdetr.errors import CheckpointError


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
    with pytest.raises(CheckpointError, match="evil.pth: refused as unsafe") as e:
        load_checkpoint(tmp_path / "evil.pth")
    assert "weights_only" not in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pth")


def good_checkpoint(path):
    save_checkpoint(path, {"model": {"w": torch.arange(1000.0)}})
    return path.read_bytes()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (lambda good: bytes(range(256)) * 4, "not a PyTorch checkpoint"),
        (lambda good: b"", "empty file"),
        (lambda good: good[: len(good) // 2], "truncated or corrupt"),
        (lambda good: None, "holds a list, expected a dict"),
    ],
    ids=["random", "empty", "truncated", "not-a-dict"],
)
def test_a_bad_checkpoint_file_is_one_clear_error(tmp_path, content, fragment):
    path = tmp_path / "bad.pth"
    data = content(good_checkpoint(tmp_path / "good.pth"))
    if data is None:
        torch.save([1, 2], path)
    else:
        path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"bad.pth: {fragment}"):
        load_checkpoint(path)


def test_a_corrupt_run_checkpoint_says_how_to_restart_the_run(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(good_checkpoint(tmp_path / "good.pth")[:100])
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match=f"delete it: rm {path}"):
        resume(path, "key", model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1))
