"""The pretrain stage end to end on the smoke profile: every method writes a checkpoint fine-tuning loads,
a killed run resumes exactly, and each run is tracked with per-step losses."""

import os
from pathlib import Path

import mlflow
import pytest
import torch

from siamdetr.config import load_config
from siamdetr.engine.checkpoint import CHECKPOINT, load_checkpoint
from siamdetr.errors import DatasetError
from siamdetr.models.variants import build_detector
from siamdetr.stages.data import run as prepare_data
from siamdetr.stages.finetune import load_init
from siamdetr.stages.pretrain import PRETRAINED
from siamdetr.stages.pretrain import run as pretrain
from siamdetr.stages.proposals import run as compute_proposals


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pre")
    cfg = load_config(
        params=None,
        profile="smoke",
        overrides=[
            f"data.prepared_dir={root / 'prepared'}",
            f"proposals.out_dir={root / 'proposals'}",
            "proposals.workers=1",
        ],
    )
    prepare_data(cfg)
    summary = compute_proposals(cfg)
    assert summary["n_images"] == cfg.data.synth.imagenet_images
    return root / "prepared", root / "proposals"


def smoke(prepared, out, *extra):
    data, proposals = prepared
    return load_config(
        params=None,
        profile="smoke",
        overrides=[
            f"data.prepared_dir={data}",
            f"proposals.out_dir={proposals}",
            f"pretrain.out_dir={out}",
            "pretrain.epochs=2",
            "pretrain.log_every=1",
            *extra,
        ],
    )


@pytest.mark.parametrize("method", ["siamese", "updetr", "detreg"])
def test_each_method_writes_a_checkpoint_that_fine_tuning_loads(prepared, tmp_path, method):
    cfg = smoke(prepared, tmp_path / method, f"pretrain.method={method}")
    losses = pretrain(cfg)
    assert losses["steps"] > 0 and torch.isfinite(torch.tensor(losses["loss"]))
    ckpt = load_checkpoint(tmp_path / method / PRETRAINED)
    assert ckpt["meta"]["method"] == method
    downstream = build_detector(cfg.model, num_classes=6)
    load_init(downstream, tmp_path / method / PRETRAINED)
    for name, value in downstream.state_dict().items():
        if name.startswith("transformer."):
            assert torch.equal(value, ckpt["model"][name])


def test_updetr_draws_its_random_patches_itself_and_reads_no_store(prepared, tmp_path):
    cfg = smoke(prepared, tmp_path / "u", "pretrain.method=updetr", "pretrain.proposals=random", "pretrain.epochs=1")
    assert not (prepared[1] / "imagenet_random").exists()  # only the EdgeBoxes store was computed
    assert pretrain(cfg)["steps"] > 0
    with pytest.raises(DatasetError, match="no proposals here"):  # the other methods' random boxes are an offline store
        pretrain(smoke(prepared, tmp_path / "d", "pretrain.method=detreg", "pretrain.proposals=random"))


def test_killed_pretraining_resumes_exactly(prepared, tmp_path):
    whole = pretrain(smoke(prepared, tmp_path / "whole"))
    kill, _ = stop_in_second_epoch()  # at step 1 of the second epoch
    with pytest.raises(KeyboardInterrupt):
        pretrain(smoke(prepared, tmp_path / "resumed"), on_step=kill)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["epoch"] == 0
    assert pretrain(smoke(prepared, tmp_path / "resumed")) == whole
    (tmp_path / "resumed" / PRETRAINED).unlink()  # a finished run whose outputs DVC removed writes them again
    assert pretrain(smoke(prepared, tmp_path / "resumed")) == whole
    a = load_checkpoint(tmp_path / "whole" / PRETRAINED)["model"]
    b = load_checkpoint(tmp_path / "resumed" / PRETRAINED)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_loss_term_is_logged_per_step(prepared, tmp_path):
    cfg = smoke(prepared, tmp_path / "tracked", "seed=11")
    pretrain(cfg)
    runs = mlflow.search_runs(
        experiment_names=["siamdetr"],
        output_format="list",
        filter_string=f"tags.params_hash = '{cfg.params_hash()}' and tags.stage = 'pretrain'",
    )
    assert len(runs) == 1
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for term in ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_region", "loss_global"):
        history = client.get_metric_history(runs[0].info.run_id, f"step/{term}")
        assert len(history) >= 2, term
    assert runs[0].data.tags["method"] == "siamese" and runs[0].data.tags["proposals"] == "edgeboxes"


def test_a_store_made_for_other_images_stops_pretraining_before_it_trains(prepared, tmp_path, synth_root):
    from siamdetr.proposals.runner import run_proposals

    other = tmp_path / "proposals"
    run_proposals("random", synth_root / "coco_like" / "val2017", other / "imagenet_edgeboxes", workers=1, top_k=4)
    cfg = smoke((prepared[0], other), tmp_path / "run")
    with pytest.raises(DatasetError, match=r"imagenet_edgeboxes: \d+ of \d+ images of .* have no usable proposals"):
        pretrain(cfg)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def stop_in_second_epoch():
    seen = []

    def hook(step, losses):
        seen.append(step)
        if seen.count(0) == 2 and step == 1:
            raise KeyboardInterrupt

    return hook, seen


def finished_history(cfg) -> dict[str, list[int]]:
    (run,) = mlflow.search_runs(
        experiment_names=["siamdetr"],
        output_format="list",
        filter_string=f"tags.params_hash = '{cfg.params_hash()}' and attributes.status = 'FINISHED'",
    )
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    return {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}


def test_a_resumed_pretrainings_mlflow_history_equals_an_uninterrupted_ones(prepared, tmp_path):
    whole, resumed = smoke(prepared, tmp_path / "whole", "seed=5"), smoke(prepared, tmp_path / "resumed", "seed=5")
    pretrain(whole)
    hook, _ = stop_in_second_epoch()
    with pytest.raises(KeyboardInterrupt):
        pretrain(resumed, on_step=hook)
    pretrain(resumed)
    expected = finished_history(whole)
    assert finished_history(resumed) == expected
    assert expected["epoch/loss"] == [0, 1] and len(expected["step/loss"]) >= 2


def test_a_finetune_value_does_not_restart_an_interrupted_pretraining(prepared, tmp_path):
    hook, _ = stop_in_second_epoch()
    with pytest.raises(KeyboardInterrupt):
        pretrain(smoke(prepared, tmp_path / "run"), on_step=hook)
    seen = []
    pretrain(
        smoke(prepared, tmp_path / "run", "finetune.lr=5e-4", "finetune.epochs=3"), on_step=lambda s, _: seen.append(s)
    )
    assert seen.count(0) == 1  # only the second epoch ran
    seen.clear()
    pretrain(smoke(prepared, tmp_path / "run", "pretrain.lr=5e-4"), on_step=lambda s, _: seen.append(s))
    assert seen.count(0) == 2  # a pretraining value does restart it


def test_a_batch_that_bad_images_left_with_one_image_is_skipped(prepared, tmp_path):
    from siamdetr.data.manifest import pretraining_images
    from siamdetr.engine.distributed import DistInfo
    from siamdetr.pretrain.data import collate_views
    from siamdetr.proposals.store import ProposalStore, store_dir
    from siamdetr.stages.pretrain import build_method, pretrain_dataset, pretrain_one_epoch
    from siamdetr.tracking import RunLogger

    cfg = smoke(prepared, tmp_path / "run")
    p = cfg.pretrain
    images, _ = pretraining_images(cfg.data.prepared_dir, p.dataset)
    ds = pretrain_dataset(cfg, images, ProposalStore.open(store_dir(cfg.proposals.out_dir, p.dataset, p.proposals)))
    method = build_method(cfg)  # Siamese DETR: L_g's head has BatchNorm, which fails on one image
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    one_left = collate_views([ds[0], None])
    dist = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))
    run = RunLogger(cfg, "pretrain", "unused", {}, enabled=False)
    losses = pretrain_one_epoch(method, method.weights, [one_left], optimizer, cfg, dist, run, 0, None)
    assert losses["steps"] == 0
    assert (
        pretrain_one_epoch(method, method.weights, [collate_views([ds[0], ds[1]])], optimizer, cfg, dist, run, 0, None)[
            "steps"
        ]
        == 1
    )
