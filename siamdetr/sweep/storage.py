"""Where a study lives: an SQLite file (default), Optuna's journal file (several processes on one machine),
or any SQLAlchemy database URL (PostgreSQL: many machines).

The relational storages (SQLite, PostgreSQL) beat a heartbeat from every running trial: a worker killed
mid-trial stops beating, and the next worker to start a trial marks it FAIL after the grace period and
enqueues a copy with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). The journal file has
no heartbeat in Optuna: a killed worker's trial stays RUNNING there (docs/sweeps.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from siamdetr.config import ConfigError
from siamdetr.sweep.space import SweepSpace
from siamdetr.tracking import redact

JOURNAL = "journal:///"
CONNECT_TIMEOUT_S = 5


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'optuna.db').resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_storage(url: str, space: SweepSpace) -> optuna.storages.BaseStorage:
    """The storage behind `url`, connected now: a database that cannot be reached is one ConfigError here,
    before any training."""
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path))
        )
        return optuna.storages.JournalStorage(backend)
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected sqlite:///FILE, journal:///FILE or a database URL such as "
            "postgresql://user:password@host/db"
        )
    if is_sqlite(url):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: in use since v2.9
        return _rdb(url, engine_kwargs, space)


def _rdb(url: str, engine_kwargs: dict, space: SweepSpace) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=space.heartbeat_interval,
            grace_period=space.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(space.max_retry),
        )
    except ImportError as e:
        raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({e})") from e
    except Exception as e:  # sqlalchemy's OperationalError and friends: the message says what failed
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--storage {redact(url)}: cannot open the study storage: {reason}") from e
