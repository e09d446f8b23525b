"""The backbone stage: a trunk file the detectors load, exact resume after a kill, nothing trained for R50."""

import json
import logging
from pathlib import Path

import pytest
import torch

from siamdetr.config import ConfigError, load_config
from siamdetr.engine.checkpoint import CHECKPOINT, load_checkpoint, seed_everything
from siamdetr.models.backbone import load_trunk_weights, resnet_trunk
from siamdetr.stages.backbone import BACKBONE, METRICS, build_swav
from siamdetr.stages.backbone import run as train_backbone
from siamdetr.stages.data import run as prepare_data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare_data(load_config(params=None, profile="smoke", overrides=[f"data.prepared_dir={root}"]))
    return root


def smoke(prepared: Path, out: Path, *extra: str):
    return load_config(
        params=None,
        profile="smoke",
        overrides=[
            f"data.prepared_dir={prepared}",
            f"backbone.out_dir={out}",
            "backbone.epochs=2",
            "backbone.batch_size=2",  # three batches an epoch: a kill can land mid-epoch
            "backbone.global_size=32",
            "backbone.local_size=16",
            "backbone.n_local=2",
            "backbone.freeze_prototypes_steps=1",
            "backbone.num_workers=0",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def whole(prepared, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("whole")
    return out, train_backbone(smoke(prepared, out))


def test_the_trained_trunk_loads_into_the_detection_trunk_with_every_key(whole, prepared, caplog):
    out, metrics = whole
    state = torch.load(out / BACKBONE, map_location="cpu", weights_only=True)
    assert set(state) == set(resnet_trunk("small").state_dict())
    trunk = resnet_trunk("small")
    with caplog.at_level(logging.WARNING):
        load_trunk_weights(trunk, out / BACKBONE)
    assert "missing" not in caplog.text and "unexpected" not in caplog.text
    assert all(torch.equal(trunk.state_dict()[k], v) for k, v in state.items())

    cfg = smoke(prepared, out)
    seed_everything(cfg.seed)
    initial = build_swav(cfg).trunk.state_dict()  # the stage's own starting point
    assert not torch.equal(state["conv1.weight"], initial["conv1.weight"])
    assert not torch.equal(state["layer4.1.bn2.running_var"], initial["layer4.1.bn2.running_var"])

    assert metrics == json.loads((out / METRICS).read_text())
    assert metrics["trained"] and metrics["knn_classes"] == 2
    assert 0 <= metrics["knn_acc"] <= 1 and 0 <= metrics["knn_acc_random_init"] <= 1


def test_killed_mid_epoch_and_rerun_ends_like_an_uninterrupted_run(whole, prepared, tmp_path):
    out, metrics = whole
    calls = []

    def kill_in_second_epoch(step, losses):
        calls.append(step)
        if step == 1 and calls.count(0) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_backbone(smoke(prepared, tmp_path), on_step=kill_in_second_epoch)
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 0
    assert not (tmp_path / BACKBONE).exists() and not (tmp_path / METRICS).exists()
    assert train_backbone(smoke(prepared, tmp_path)) == metrics
    assert (tmp_path / BACKBONE).read_bytes() == (out / BACKBONE).read_bytes()


def test_a_finished_run_is_not_trained_again(whole, prepared):
    out, metrics = whole
    mtime = (out / CHECKPOINT).stat().st_mtime_ns
    assert train_backbone(smoke(prepared, out)) == metrics
    assert (out / CHECKPOINT).stat().st_mtime_ns == mtime


def test_resnet50_trains_nothing_and_says_so(prepared, tmp_path):
    metrics = train_backbone(smoke(prepared, tmp_path, "model.backbone=resnet50"))
    assert metrics["trained"] is False and metrics["backbone"] == "resnet50"
    assert json.loads((tmp_path / METRICS).read_text()) == metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS]


def test_without_the_data_stage_the_error_says_to_run_it(tmp_path):
    with pytest.raises(ConfigError, match="run the data stage first"):
        train_backbone(smoke(tmp_path / "nothing", tmp_path / "bb"))
