"""The training skeleton the backbone, pretrain and fine-tune stages share.

A stage builds its model, optimizer and schedule and hands over two plain callables: `train_epoch(epoch, run)`
(one epoch, logging what it likes through `run`, returning the epoch's record) and `finish(history, run)`
(outputs after the last epoch; `run` is None when a rerun finds every epoch done). The skeleton does the rest
in one place: it locks the run directory, removes temp files a dead writer left, resumes under the run's key,
marks the MLflow run a killed process left RUNNING as KILLED, replays the finished epochs' metrics into the
new run exactly as they were logged (same keys, same steps), seeds every epoch by (seed, epoch, rank),
checkpoints after every epoch, and closes the run as finished, killed (a `Stopped` request) or failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from siamdetr.engine.checkpoint import CHECKPOINT, epoch_seed, resume, save_checkpoint, seed_everything, training_state
from siamdetr.engine.distributed import DistInfo
from siamdetr.errors import Stopped
from siamdetr.io import atomic_write_text, locked, remove_stale_temp_files
from siamdetr.tracking import RunLogger, mark_killed

log = logging.getLogger(__name__)

R = TypeVar("R")
RUN_ID = "mlflow_run_id"  # the MLflow run that is training (or was, when a kill left it RUNNING)


@dataclass
class Training:
    """What one training run is: where it checkpoints, what it must match to resume, how long, which seed."""

    out: Path
    key: str
    epochs: int
    seed: int
    dist_info: DistInfo
    config: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT


def run_training(
    t: Training,
    open_run: Callable[[], RunLogger],
    train_epoch: Callable[[int, RunLogger], dict[str, Any]],
    finish: Callable[[list[dict[str, Any]], RunLogger | None], R],
) -> R:
    """Resume or start `t`, train its remaining epochs, then `finish`; returns what `finish` returns."""
    main = t.dist_info.is_main
    with locked(t.out, enabled=main):
        if main:
            remove_stale_temp_files(t.out)
        start, t.history = resume(t.checkpoint, t.key, t.model, t.optimizer, t.scheduler)
        if start >= t.epochs:  # outputs may have been removed (DVC does before a rerun): write them again
            log.info("%s: all %d epochs are done; nothing to train", t.checkpoint, t.epochs)
            return finish(t.history, None)
        run_id_file = t.out / RUN_ID
        if main and run_id_file.is_file():
            mark_killed(run_id_file.read_text().strip())
        run = open_run()
        run.set_tags({"run_hash": t.key})  # what the report matches against the results in the workspace
        if main and run.run_id:
            atomic_write_text(run_id_file, run.run_id)
        try:
            # the finished epochs, logged again exactly as they were the first time
            run.replay([entry for record in t.history for entry in record.get("logged", [])])
            for epoch in range(start, t.epochs):
                seed_everything(epoch_seed(t.seed, epoch, t.dist_info.rank))
                record = {"epoch": epoch, **train_epoch(epoch, run)}
                record["logged"] = run.take_logged()
                t.history.append(record)
                if main:
                    state = training_state(t.model, t.optimizer, t.scheduler, epoch, t.key, t.history, t.config)
                    save_checkpoint(t.checkpoint, state)
                if t.on_epoch is not None:
                    t.on_epoch(epoch, record)
            result = finish(t.history, run)
        except Stopped:
            run.close("KILLED")
            raise
        except BaseException:
            run.close("FAILED")
            raise
        run.close()
        if main:
            run_id_file.unlink(missing_ok=True)
        return result
