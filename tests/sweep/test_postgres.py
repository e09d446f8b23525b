"""Many workers on one PostgreSQL study: a real server (Debian's package, on loopback, started here).

Two worker processes share the study and run disjoint trials; one is killed mid-trial; the heartbeat
marks its trial failed, a copy with the same values is queued, and the study goes on.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.sweep_workspace import write_space


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway server on 127.0.0.1 with trust authentication; its URL."""
    binaries = pg_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)")
    data = Path(tempfile.mkdtemp(prefix="siamdetr-pg-"))  # not below pytest's 0700 tmp: the server's user reads it
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True)  # noqa: E731
    init = run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = run(
        str(binaries / "pg_ctl"),
        "-D",
        str(data),
        "-w",
        "-l",
        str(data / "log"),
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
        "start",
    )
    if start.returncode:
        pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]}")
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    shutil.rmtree(data, ignore_errors=True)


def worker(root: Path, url: str, n_trials: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    args = [
        "-q",
        "sweep",
        "--storage",
        url,
        "--search-only",
        "--n-trials",
        str(n_trials),
        "--set",
        "grid.epoch_scale=0.04",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "siamdetr", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_workers_trial_fails_and_is_retried(workspace, postgres):
    write_space(workspace, heartbeat={"interval": 1, "grace": 4, "max_retry": 1}, pruner={"type": "none"})
    a, b = worker(workspace, postgres, 6), worker(workspace, postgres, 6)
    study = lambda: optuna.load_study(study_name="siamese-weights", storage=postgres)  # noqa: E731

    def running_trial_of_a():
        try:
            trials = study().get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except KeyError:  # not created yet
            return None
        return next((t for t in trials if t.user_attrs.get("worker", "").endswith(f":{a.pid}")), None)

    victim = wait_for(running_trial_of_a, 240, "worker A to start a trial")
    a.send_signal(signal.SIGKILL)
    a.wait()
    out, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out.decode()[-3000:]

    trials = study().trials
    by_number = {t.number: t for t in trials}
    assert by_number[victim.number].state == optuna.trial.TrialState.FAIL  # by B's heartbeat check
    client = mlflow.MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    victim_runs = client.search_runs(
        [client.get_experiment_by_name("siamdetr").experiment_id],
        f"tags.sweep_role = 'trial' and tags.optuna_trial = '{victim.number}'",
    )
    assert [r.info.status for r in victim_runs] == ["FAILED"]  # closed by the surviving worker
    workers = {t.user_attrs.get("worker") for t in trials}
    assert any(w.endswith(f":{a.pid}") for w in workers) and any(w.endswith(f":{b.pid}") for w in workers)
    dirs = [t.user_attrs["dir"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(dirs) == len(set(dirs))  # disjoint: no trial was trained twice

    # the study is usable: one more worker finishes the work, the retry of the killed trial included
    c = worker(workspace, postgres, 7)
    out, _ = c.communicate(timeout=600)
    assert c.returncode == 0, out.decode()[-3000:]
    retries = [t for t in study().trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == victim.params
    assert retries[0].user_attrs["dir"] == victim.user_attrs["dir"]  # it resumed the killed trial's runs
