"""Atomic checkpoints with everything an exact resume needs, loadable with `weights_only=True`."""

from __future__ import annotations

import io
import json
import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamdetr.errors import CheckpointError
from siamdetr.io import atomic_write_bytes

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"  # every training run's resumable state, in its output directory


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, as tensors and plain values only."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, (internal, gauss_next) = state["python"][0], state["python"][1:]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise in memory, then write atomically: a kill never leaves a half checkpoint, and the bytes do
    not depend on a temp file's name (torch.save records the file name inside its zip archive)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load tensors and plain data only: a checkpoint from elsewhere cannot run code. A file that is not a
    readable checkpoint dict is a CheckpointError that says which of the ways it is not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # it names a function or class to import: code, not weights
            raise CheckpointError(
                f"{path}: refused as unsafe: it holds Python objects beyond tensors and plain data, which "
                "loading would execute; only weights-only checkpoints are read"
            ) from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint") from e
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0][:100]
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({reason})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a dict of tensors")
    return state


def training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    run_hash: str,
    history: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Everything an exact resume needs, after `epoch` has finished."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "epoch": epoch,
        "run_hash": run_hash,
        "history": json.dumps(history),
        "config": json.dumps(config),
    }


def resume(
    path: str | Path, run_hash: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Restore a run from its checkpoint if it was written with the same params → (next epoch, history).

    A checkpoint of other params is ignored (the run starts afresh and will overwrite it).
    """
    path = Path(path)
    if not path.is_file():
        return 0, []
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; to restart this run from its first epoch, delete it: rm {path}") from e
    if ckpt.get("run_hash") != run_hash:
        log.warning("%s was written with other params; starting afresh", path)
        return 0, []
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    log.info("resuming %s after epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"] + 1, json.loads(ckpt["history"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A sample's own randomness depends only on (seed, epoch, index): the same in any worker or process."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**62


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Each epoch's randomness depends only on (seed, epoch, rank): what makes a resume exact."""
    return (seed * 100_003 + epoch) * 1009 + rank
