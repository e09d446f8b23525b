"""MLflow tracking: one run per stage execution, logged from rank 0 only.

The default store is SQLite in the project (`sqlite:///<abs>/mlflow.db`; MLflow 3 deprecates the file
store), overridable with MLFLOW_TRACKING_URI (a server with PostgreSQL for many machines). MLflow is
imported lazily so GPU machines without it can still train: the run is then only logged locally.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from siamdetr.config import Config
from siamdetr.errors import TrackingError

log = logging.getLogger(__name__)

EXPERIMENT = "siamdetr"
REPLAY_BATCH = 1000  # MLflow's log_batch limit on metrics per call


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, before any compute, when the tracking store cannot serve runs: an HTTP server that
    does not answer (MLflow would retry for minutes), an SQLite file that is not a database or is read-only."""
    hint = "point MLFLOW_TRACKING_URI at a working store, or unset it to track into ./mlflow.db"
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            message = f"MLFLOW_TRACKING_URI={redact(uri)}: no MLflow server answers ({reason}); {hint}"
            raise TrackingError(message) from e
        return
    if not uri.startswith("sqlite:///"):
        if "://" in uri and not uri.startswith(("file:", "databricks")):
            check_database(uri, timeout, hint)
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        if not os.access(db.parent if db.parent.exists() else Path.cwd(), os.W_OK):
            raise TrackingError(f"{db}: cannot create the MLflow store here (directory not writable); {hint}")
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)) as con:
            con.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise TrackingError(f"{db}: not a readable SQLite database ({e}); move it away or {hint}") from e
    if not os.access(db, os.W_OK) or not os.access(db.parent, os.W_OK):
        raise TrackingError(f"{db}: the MLflow store is read-only; {hint}")


def check_database(uri: str, timeout: float, hint: str) -> None:
    """A database server (PostgreSQL, MySQL) that accepts a connection within `timeout` seconds."""
    import sqlalchemy

    args = {"connect_timeout": int(timeout)} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001  (drivers raise their own types; all mean "cannot track here")
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise TrackingError(f"MLFLOW_TRACKING_URI={redact(uri)}: cannot connect ({reason}); {hint}") from e


def redact(uri: str) -> str:
    """A URI without its password, for messages (postgresql://user:secret@host → user:***@host)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock next to a SQLite store (a no-op for servers and databases elsewhere)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(uri: str) -> str:
    """The id of the project's MLflow experiment in the store at `uri`, created on first use (hold
    `store_lock` around it)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=(Path.cwd() / "mlartifacts").resolve().as_uri())


def git_commit() -> str:
    """The commit the code runs from, with '-dirty' when the work tree has changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def compute_tags(device: str = "cpu") -> dict[str, str]:
    """What a CPU result depends on beyond code, config and seed: float kernels differ by instruction set
    and reductions by thread count, so one seed reproduces bit for bit only where these match. `device` is
    the one the run computed on (a machine with a GPU may still run on CPU)."""
    import torch

    return {
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": str(torch.get_num_threads()),
        "device": str(device),
    }


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def mark_killed(run_id: str) -> None:
    """Close a run that a killed process left RUNNING as KILLED (a resumed run calls this on its predecessor)."""
    try:
        import mlflow

        client = mlflow.MlflowClient(default_tracking_uri())
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
            log.info("MLflow run %s was left running by an interrupted process: marked KILLED", run_id)
    except Exception as e:  # noqa: BLE001  (bookkeeping of an old run must never stop a new one)
        log.warning("could not mark MLflow run %s as killed: %s", run_id, e)


class RunLogger:
    """Logs params, tags, metrics and artifacts of one run; a no-op off rank 0 or without MLflow."""

    def __init__(
        self,
        cfg: Config,
        stage: str,
        run_name: str,
        tags: Mapping[str, Any],
        enabled: bool = True,
        device: str = "cpu",
    ) -> None:
        self.run_id: str | None = None
        self._mlflow = None
        self._logged: list[list[Any]] = []  # [step, metrics] as logged, for a resumed run to replay
        if not enabled:
            return
        try:
            import mlflow
        except ImportError:
            log.warning("mlflow is not installed: run %s is not tracked", run_name)
            return
        self._mlflow = mlflow
        uri = default_tracking_uri()
        mlflow.set_tracking_uri(uri)
        with store_lock(uri):  # two processes creating one SQLite store race on its schema migration
            mlflow.set_experiment(experiment_id=ensure_experiment(uri))
        all_tags = {
            "stage": stage,
            "profile": cfg.profile,
            "seed": cfg.seed,
            "git_commit": git_commit(),
            "params_hash": cfg.params_hash(),
            **compute_tags(device),
            **tags,
        }
        if os.environ.get("DVC_EXP_NAME"):
            all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        run = mlflow.start_run(run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
        self.run_id = run.info.run_id
        mlflow.log_params({k: str(v) for k, v in flatten(cfg.to_dict()).items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self._logged.append([step, scalars])
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step=step)

    def replay(self, logged: list[list[Any]]) -> None:
        """Log [step, metrics] pairs of an earlier process again, in batches (a resumed run may replay
        thousands of steps); they are not recorded as this process's."""
        if self._mlflow is None or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for step, values in logged for k, v in values.items()]
        client = self._mlflow.MlflowClient()
        for i in range(0, len(metrics), REPLAY_BATCH):
            client.log_batch(self.run_id, metrics=metrics[i : i + REPLAY_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._mlflow is not None:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def take_logged(self) -> list[list[Any]]:
        """What was logged since the last call, as [step, metrics] pairs."""
        logged, self._logged = self._logged, []
        return logged

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self._mlflow is not None and self.run_id is not None:
            self._mlflow.end_run(status=status)
            self.run_id = None
