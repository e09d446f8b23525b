"""End to end: `dvc repro` runs every stage (data → backbone → proposals → pretrain → finetune → report)
on the smoke profile and a small grid; a second `dvc repro` does nothing; τ reruns only what depends on it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


pytestmark = pytest.mark.slow  # `dvc repro` of the whole smoke pipeline, several times


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "siamdetr", root / "siamdetr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "sweeps").mkdir()
    shutil.copy(ROOT / "sweeps" / "dvc.yaml", root / "sweeps" / "dvc.yaml")
    (root / "experiments").mkdir()
    shutil.copy(ROOT / "tests" / "pipeline_data" / "runs.yaml", root / "experiments" / "runs.yaml")
    shutil.copy(ROOT / "experiments" / "sweep.yaml", root / "experiments" / "sweep.yaml")
    (root / "params.yaml").write_text(
        "profile: smoke\nseed: 0\ndata: {}\nmodel: {backbone_checkpoint: runs/backbone/backbone.pth}\n"
        "backbone: {}\nproposals: {}\npretrain: {}\nfinetune: {}\ngrid: {}\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    first = dvc(root, "repro")
    return root, first


def test_every_stage_runs_and_writes_reports(project):
    root, first = project
    for stage in (
        "data",
        "backbone",
        "proposals@imagenet-edgeboxes",
        "pretrain@siamese-imagenet",
        "pretrain@updetr-imagenet",
        "finetune@voc-conditional",
        "report",
    ):
        assert f"Running stage '{stage}'" in first
    summary = json.loads((root / "runs" / "finetune" / "voc-conditional.metrics.json").read_text())
    assert set(summary) == {"voc-cond100-e50-scratch", "voc-cond100-e50-in-siamese", "voc-cond100-e50-in-updetr"}
    assert all(s["AP_n"] == 2 for s in summary.values())  # the smoke profile's two seeds
    index = (root / "reports" / "index.md").read_text()
    assert "## Table 2" in index
    used = json.loads((root / "reports" / "runs.json").read_text())["runs_used"]
    assert len(used["table2"]) == 6  # 3 runs × 2 seeds, read back from MLflow
    curves = (root / "runs" / "finetune" / "voc-conditional.curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,") and len(curves) == 2


def test_the_default_repro_leaves_the_sweep_pipeline_alone_and_it_can_be_run_on_its_own(project):
    root, first = project
    assert "sweep" not in first
    assert not (root / "runs" / "sweeps").exists()
    dry = dvc(root, "repro", "--dry", "sweeps/dvc.yaml")
    assert "Running stage 'sweeps/dvc.yaml:sweep'" in dry and "> siamdetr sweep" in dry
    assert "Running stage 'data'" not in dry  # its inputs are the main pipeline's, already up to date


def test_a_second_repro_does_nothing(project):
    root, _ = project
    out = dvc(root, "repro")
    assert "Running stage" not in out


def test_changing_tau_retrains_only_what_depends_on_it(project):
    root, _ = project
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("pretrain: {}", "pretrain: {tau: 0.7}"))
    done = root / "runs" / "finetune" / "voc-conditional"
    before = {p: p.stat().st_mtime_ns for p in done.glob("*/s*/done.json")}
    dvc(root, "repro")
    changed = {p.parent.parent.name for p, t in before.items() if p.stat().st_mtime_ns != t}
    assert changed == {"voc-cond100-e50-in-siamese"}  # not from scratch, not from UP-DETR
