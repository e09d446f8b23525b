"""The training skeleton on a toy model: a resumed run's MLflow history equals an uninterrupted one's, a
killed run's MLflow run ends KILLED and its temp files are cleaned, a second process on the run is refused."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from siamdetr.config import load_config
from siamdetr.engine.distributed import DistInfo
from siamdetr.engine.loop import one_drop_schedule
from siamdetr.engine.training import Training, locked, run_training
from siamdetr.errors import RunLocked
from siamdetr.tracking import RunLogger

EPOCHS, STEPS = 3, 4
ROOT = Path(__file__).parents[2]


def toy_run(out: Path, stop_at: tuple[int, int] | None = None, how: str = "interrupt") -> dict:
    """Train a linear model for EPOCHS epochs of STEPS logged steps; stop at (epoch, step) by a
    KeyboardInterrupt, or by SIGKILL as a crash would."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = one_drop_schedule(optimizer, 2)
    cfg = load_config(params=None, profile="smoke")
    dist = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))

    def train_epoch(epoch: int, run: RunLogger) -> dict:
        total = 0.0
        for step in range(STEPS):
            if (epoch, step) == stop_at:
                if how == "kill":
                    (out / ".checkpoint.pth.dead.tmp").write_bytes(b"half")  # a writer's leftover
                    os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt
            x = torch.randn(8, 3)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            run.log_metrics({"step/loss": loss.item()}, step=epoch * STEPS + step)
        scheduler.step()
        run.log_metrics({"epoch/loss": total / STEPS}, step=epoch)
        return {"train": {"loss": total / STEPS}}

    training = Training(out, "key", EPOCHS, 0, dist, {}, model, optimizer, scheduler)
    return run_training(
        training,
        lambda: RunLogger(cfg, "toy", f"toy-{out.name}", {"out": str(out)}),
        train_epoch,
        lambda history, run: history[-1]["train"],
    )


def runs_of(out: Path) -> list:
    return mlflow.search_runs(
        experiment_names=["siamdetr"],
        filter_string=f"tags.out = '{out}'",
        output_format="list",
        order_by=["start_time"],
    )


def metric_history(run) -> dict[str, list[tuple[int, float]]]:
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def test_a_resumed_run_logs_the_same_history_as_an_uninterrupted_one(tmp_path):
    whole = toy_run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path / "resumed", stop_at=(1, 2))
    assert toy_run(tmp_path / "resumed") == whole
    (expected,) = runs_of(tmp_path / "whole")
    failed, resumed = runs_of(tmp_path / "resumed")
    assert failed.info.status == "FAILED" and resumed.info.status == "FINISHED"
    history = metric_history(resumed)
    assert history == metric_history(expected)
    assert [step for step, _ in history["step/loss"]] == list(range(EPOCHS * STEPS))
    assert [step for step, _ in history["epoch/loss"]] == list(range(EPOCHS))


def test_a_killed_run_is_marked_killed_and_its_temp_files_removed_on_resume(tmp_path):
    out = tmp_path / "killed"
    code = (
        "from pathlib import Path; from tests.engine.test_training import toy_run; "
        f"toy_run(Path({str(out)!r}), stop_at=(1, 1), how='kill')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    (left,) = runs_of(out)
    assert left.info.status == "RUNNING" and (out / ".checkpoint.pth.dead.tmp").exists()
    toy_run(out)
    killed, resumed = runs_of(out)
    assert killed.info.status == "KILLED" and resumed.info.status == "FINISHED"
    assert not list(out.glob(".*.tmp"))
    assert [step for step, _ in metric_history(resumed)["step/loss"]] == list(range(EPOCHS * STEPS))


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    out = tmp_path / "busy"
    with locked(out), pytest.raises(RunLocked, match=f"{out}: another process is writing here"):
        toy_run(out)
    toy_run(out)  # the lock went with its holder
