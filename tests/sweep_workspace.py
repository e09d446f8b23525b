"""A smoke-profile workspace with the inputs a sweep reads (prepared data, trunk, EdgeBoxes store), made once
per session; a plugin of the root conftest, since the sweep stage's tests (tests/stages) and the sweep
library's (tests/sweep) both use it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PARAMS = "profile: smoke\nmodel: {backbone_checkpoint: runs/backbone/backbone.pth}\n"


def siamdetr(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "siamdetr", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def sweep_inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep_inputs")
    (root / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "runs.yaml", root / "experiments" / "runs.yaml")
    (root / "params.yaml").write_text(PARAMS)
    siamdetr(root, "-q", "data", "prepare")
    siamdetr(root, "-q", "backbone")
    siamdetr(root, "-q", "proposals", "--method", "edgeboxes", "--set", "pretrain.dataset=imagenet")
    return root


@pytest.fixture
def workspace(sweep_inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the inputs as the current directory, with its own MLflow store."""
    root = tmp_path / "ws"
    shutil.copytree(sweep_inputs, root, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


def write_space(root: Path, **changes) -> Path:
    """The shipped sweep file with top-level keys replaced (a smoke sweep: short heartbeats)."""
    import yaml

    data = yaml.safe_load((ROOT / "experiments" / "sweep.yaml").read_text())
    data.update(changes)
    path = root / "experiments" / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
