"""Shared fixtures: one small synthetic tree per test session (written in about a second)."""

from __future__ import annotations

import os

# Before torch loads libgomp: OpenMP threads that spin-wait slow a 2-core machine >20x when another process
# takes a core (docs/method.md, benchmarks); a short spin keeps full speed on an idle machine.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from siamdetr.config import SynthConfig, load_config  # noqa: E402
from siamdetr.data.synthetic import write_synthetic  # noqa: E402

pytest_plugins = ["tests.sweep_workspace"]


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_config(params=None, profile="smoke")


@pytest.fixture(scope="session")
def synth_cfg() -> SynthConfig:
    """Enough scene images that crowds, difficult and truncated objects all occur."""
    return SynthConfig(
        image_size=64,
        imagenet_classes=3,
        imagenet_images=9,
        coco_train=40,
        coco_val=8,
        voc_trainval=30,
        voc_test=6,
        max_objects=6,
        workers=1,
    )


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory, synth_cfg: SynthConfig) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tree"
    write_synthetic(root, synth_cfg, seed=0, workers=1)
    return root


@pytest.fixture(autouse=True, scope="session")
def _mlflow_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests track into their own SQLite store, never the project's mlflow.db."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def store(tmp_path):
    """(tracking uri, client, experiment id) of an empty store with the siamdetr experiment."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("siamdetr", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, exp_id
