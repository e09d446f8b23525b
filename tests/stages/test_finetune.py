"""The fine-tuning stage: exact resume after a kill, and the same first step on 1 or 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from siamdetr.config import load_config
from siamdetr.engine.checkpoint import CHECKPOINT, load_checkpoint
from siamdetr.models.backbone import Backbone
from siamdetr.models.variants import build_detector
from siamdetr.stages.data import run as prepare_data
from siamdetr.stages.finetune import METRICS, build_optimizer
from siamdetr.stages.finetune import run as finetune


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
            f"finetune.out_dir={out}",
            "finetune.epochs=2",
            "finetune.lr_drop=1",
            *extra,
        ],
    )


FROZEN_TRUNK_NO_AUGMENTATION = ("model.train_backbone=false", "finetune.augment=false", "finetune.train_scales=[64]")


@pytest.mark.parametrize("settings", [(), FROZEN_TRUNK_NO_AUGMENTATION], ids=["default", "trunk-features-cached"])
def test_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_run(prepared, tmp_path, settings):
    whole = finetune(smoke(prepared, tmp_path / "whole", *settings))
    calls = []

    def kill_in_second_epoch(step, losses):
        calls.append(step)
        if len(calls) > 1 and step == 1 and calls.count(0) == 2:  # step 1 of epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(smoke(prepared, tmp_path / "resumed", *settings), on_step=kill_in_second_epoch)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["epoch"] == 0
    assert not (tmp_path / "resumed" / METRICS).exists()
    resumed = finetune(smoke(prepared, tmp_path / "resumed", *settings))
    assert resumed == whole
    a = load_checkpoint(tmp_path / "whole" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "resumed" / METRICS).read_text()) == json.loads(
        (tmp_path / "whole" / METRICS).read_text()
    )


def test_samples_kept_in_memory_train_exactly_as_samples_read_each_epoch(prepared, tmp_path, monkeypatch):
    cached = finetune(smoke(prepared, tmp_path / "cached", "finetune.augment=false"))
    monkeypatch.setattr("siamdetr.stages.finetune.SAMPLE_CACHE_BYTES", 0)
    read = finetune(smoke(prepared, tmp_path / "read", "finetune.augment=false"))
    assert cached == read
    a = load_checkpoint(tmp_path / "cached" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "read" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_frozen_trunk_without_augmentation_runs_once_per_image(prepared, tmp_path, monkeypatch):
    caches, trunk_calls = [], []
    cache_features = Backbone.cache_features

    def spy(backbone, max_bytes):
        cache_features(backbone, max_bytes)
        caches.append(backbone.cache)
        body = backbone.body.forward
        backbone.body.forward = lambda x: trunk_calls.append(len(x)) or body(x)

    monkeypatch.setattr(Backbone, "cache_features", spy)
    finetune(smoke(prepared, tmp_path / "run", *FROZEN_TRUNK_NO_AUGMENTATION))
    (cache,) = caches
    seen = 2 * 6 + 2 * 4  # two epochs of the 6 VOC-like trainval images, two evaluations of the 4 test images
    # one trunk pass per distinct (image, padded size), none repeated: an image padded alike is a hit
    assert trunk_calls == [1] * len(cache.store) and 6 + 4 <= len(cache.store) < seen
    finetune(smoke(prepared, tmp_path / "augmented", "model.train_backbone=false"))
    assert len(caches) == 1  # augmented images differ every epoch: no cache


def test_a_finished_run_is_not_trained_again(prepared, tmp_path):
    cfg = smoke(prepared, tmp_path / "run", "finetune.epochs=1")
    first = finetune(cfg)
    mtime = (tmp_path / "run" / CHECKPOINT).stat().st_mtime_ns
    detections = (tmp_path / "run" / "detections.json").read_bytes()
    for name in ("detections.json", "history.json", METRICS):  # what DVC removes before rerunning a stage
        (tmp_path / "run" / name).unlink()
    assert finetune(cfg) == first
    assert (tmp_path / "run" / CHECKPOINT).stat().st_mtime_ns == mtime
    assert (tmp_path / "run" / "detections.json").read_bytes() == detections
    assert (tmp_path / "run" / "history.json").exists() and (tmp_path / "run" / METRICS).exists()


def square_dataset(prepared: Path, root: Path) -> Path:
    """The smoke VOC set resized to 64x64, so padding is the same however images are batched."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    for split in ("train", "test"):
        entry = manifest["voc"][split]
        data = json.loads(Path(entry["annotations"]).read_text())
        sizes = {}
        for im in data["images"]:
            sizes[im["id"]] = (im["width"], im["height"])
            dst = root / "images" / im["file_name"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.open(Path(entry["images"]) / im["file_name"]).convert("RGB").resize((64, 64)).save(dst)
            im["width"] = im["height"] = 64
        for a in data["annotations"]:
            w, h = sizes[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            a["bbox"] = [x * 64 / w, y * 64 / h, bw * 64 / w, bh * 64 / h]
        entry["annotations"] = str(root / f"{split}.json")
        entry["images"] = str(root / "images")
        Path(entry["annotations"]).write_text(json.dumps(data))
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.slow  # torchrun, two processes
def test_two_processes_take_the_same_first_step_as_one(prepared, tmp_path):
    data = square_dataset(prepared, tmp_path / "square")
    args = [
        f"data.prepared_dir={data}",
        "finetune.batch_size=4",
        "finetune.augment=false",
        "model.dropout=0.0",
        "finetune.train_scales=[64]",
        "finetune.num_workers=0",
    ]
    script = Path(__file__).parents[1] / "scripts" / "first_step.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(cmd, out):
        done = subprocess.run(
            [*cmd, str(script), *args, f"finetune.out_dir={out}"], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])["loss"]

    single = run([sys.executable], tmp_path / "one")
    double = run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"], tmp_path / "two"
    )
    assert double == pytest.approx(single, rel=1e-5, abs=1e-6)


def test_each_fine_tune_is_one_mlflow_run_with_config_tags_and_per_epoch_ap(prepared, tmp_path):
    import mlflow

    cfg = smoke(prepared, tmp_path / "tracked", "seed=7")
    metrics = finetune(cfg)
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=["siamdetr"], filter_string=f"tags.params_hash = '{cfg.params_hash()}'", output_format="list"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["stage"], tags["method"], tags["variant"], tags["downstream"]) == (
        "finetune",
        "scratch",
        "conditional",
        "voc",
    )
    assert (tags["seed"], tags["profile"]) == ("7", "smoke") and tags["git_commit"]
    # what else a bit-for-bit rerun needs to match: the instruction set and thread count the kernels ran with
    assert tags["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tags["torch_threads"] == str(torch.get_num_threads()) and tags["device"] == "cpu"
    assert run.data.params["model.variant"] == "conditional" and run.data.params["finetune.epochs"] == "2"
    ap = client.get_metric_history(run.info.run_id, "AP")
    assert [m.step for m in ap] == [0, 1]  # evaluated every epoch (Figure 6)
    assert ap[-1].value == pytest.approx(metrics["AP"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_giou")] == [0, 1]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["metrics.json"]


def test_init_loads_the_transformer_and_resets_the_class_head(tmp_path, caplog):
    import logging

    from siamdetr.models.variants import build_detector
    from siamdetr.stages.finetune import load_init

    cfg = load_config(params=None, profile="smoke")
    pretrained = build_detector(cfg.model, num_classes=1)  # e.g. an objectness head: other class count
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(1.0)
    state = {**pretrained.state_dict(), "sem_head.weight": torch.zeros(3)}
    path = tmp_path / "pretrain.pth"
    torch.save({"model": state, "meta": {"method": "siamese", "dataset": "imagenet", "proposals": "edgeboxes"}}, path)
    model = build_detector(cfg.model, num_classes=6)
    fresh_class = model.class_embed.weight.clone()
    with caplog.at_level(logging.INFO):
        meta = load_init(model, path)
    assert meta == {"method": "siamese", "dataset": "imagenet", "proposals": "edgeboxes"}
    for name, value in model.state_dict().items():
        if name.startswith("class_embed."):
            continue
        assert torch.equal(value, state[name]), name
    assert torch.equal(model.class_embed.weight, fresh_class)
    assert "sem_head.weight" in caplog.text and "keep their fresh init" not in caplog.text
    del state["transformer.decoder_norm.weight"]
    torch.save({"model": state}, path)
    caplog.clear()
    assert load_init(build_detector(cfg.model, num_classes=6), path) == {}
    assert "1 parameters not in the checkpoint keep their fresh init" in caplog.text
    assert "transformer.decoder_norm.weight" in caplog.text


def test_init_only_loads_just_the_named_tensors_and_the_rest_keeps_its_fresh_init(tmp_path):
    from siamdetr.models.variants import build_detector
    from siamdetr.stages.finetune import load_init

    cfg = load_config(params=None, profile="smoke")
    pretrained = build_detector(cfg.model, num_classes=1)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(1.0)
    path = tmp_path / "pretrain.pth"
    torch.save({"model": pretrained.state_dict()}, path)
    model = build_detector(cfg.model, num_classes=6)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_init(model, path, only=("transformer.encoder_layers", "input_proj"))
    loaded = {k for k, v in model.state_dict().items() if not torch.equal(v, fresh[k])}
    assert loaded and all(k.startswith(("transformer.encoder_layers", "input_proj")) for k in loaded)
    assert any(k.startswith("transformer.encoder_layers") for k in loaded) and any(
        k.startswith("input_proj") for k in loaded
    )
    decoder = [k for k in fresh if k.startswith("transformer.decoder_layers")]
    assert decoder and all(torch.equal(model.state_dict()[k], fresh[k]) for k in decoder)


def test_init_only_at_its_default_leaves_a_fine_tunes_key_unchanged(tmp_path):
    from siamdetr.run_hash import run_hash

    init = tmp_path / "init.pth"
    init.write_bytes(b"weights")
    base = ["model.backbone_checkpoint=null", f"finetune.init={init}"]
    key = run_hash(load_config(params=None, profile="smoke", overrides=base, check_paths=False), "finetune")
    same = load_config(params=None, profile="smoke", overrides=[*base, "finetune.init_only=[]"], check_paths=False)
    other = load_config(
        params=None, profile="smoke", overrides=[*base, "finetune.init_only=[input_proj]"], check_paths=False
    )
    assert run_hash(same, "finetune") == key != run_hash(other, "finetune")


@pytest.mark.slow
def test_the_pipeline_learns_an_easy_world(tmp_path):
    """Through the real data stage and `finetune` (loading, label mapping, transforms, optimiser groups,
    schedule), a few hundred steps on a world of big axis-aligned shapes, one hue per class, reach a clearly
    non-trivial AP50; a defect anywhere on that path (as the StepLR trap was) keeps it near zero."""
    world = [
        f"data.prepared_dir={tmp_path / 'prepared'}",
        "data.synth.voc_trainval=512",
        "data.synth.voc_test=64",
        "data.synth.max_objects=1",
        "data.synth.min_object_side=24",
        "data.synth.size_mix=[0,0,1]",
        "data.synth.clutter=0",
        "data.synth.class_appearance=1",
        "data.synth.max_rotation=0",
        "data.synth.background_saturation=0.3",
    ]
    training = [
        f"finetune.out_dir={tmp_path / 'ft'}",
        "finetune.batch_size=8",
        "finetune.epochs=20",  # 1,280 steps
        "finetune.lr_drop=16",
        "finetune.lr=4e-4",
        "finetune.augment=false",
        "finetune.eval_every=20",
        "model.dilation=true",
        "model.small_width=16",
        "model.d_model=64",
        "model.nheads=4",
        "model.enc_layers=2",
        "model.dec_layers=2",
        "model.dim_feedforward=128",
    ]
    cfg = load_config(params=None, profile="smoke", overrides=[*world, *training])
    prepare_data(cfg)
    metrics = finetune(cfg)
    assert metrics["AP50"] >= 8.0, metrics  # 17.9 % (seed 0), 28.1 % (seed 2); 10 epochs gave 1.9-17 % by seed


@pytest.mark.parametrize("variant", ["vanilla", "conditional", "deform_ss", "deform_ms"])
def test_deformable_sampling_offsets_and_reference_points_train_at_a_tenth_of_the_lr(variant):
    """Deformable DETR's main.py: parameters whose names hold `sampling_offsets` or `reference_points` get
    lr × lr_linear_proj_mult (0.1), the backbone lr_backbone, the rest lr; the other variants have no such
    parameters."""
    overrides = [f"model.variant={variant}", "model.enc_layers=2", "finetune.lr=2e-4", "finetune.lr_backbone=2e-5"]
    cfg = load_config(params=None, profile="smoke", overrides=overrides)
    model = build_detector(cfg.model, 3)
    optimizer, scheduler = build_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(lr_of) == len(trainable)  # every trainable parameter in exactly one group
    slow = []
    for name, p in trainable:
        if name.startswith("backbone."):
            assert lr_of[id(p)] == 2e-5, name
        elif "sampling_offsets" in name or "reference_points" in name:
            assert lr_of[id(p)] == pytest.approx(2e-5), name
            slow.append(name.rsplit(".", 1)[0])
        else:
            assert lr_of[id(p)] == 2e-4, name
    deformable = variant.startswith("deform")
    # one sampling-offset projection per encoder and decoder layer, plus the reference-point head
    assert len(set(slow)) == (cfg.model.enc_layers + cfg.model.dec_layers + 1 if deformable else 0)
    for _ in range(cfg.finetune.lr_drop):
        optimizer.step()  # no gradients: nothing moves, but the scheduler sees the order it expects
        scheduler.step()
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx(
        sorted(lr / 10 for lr in ([2e-4, 2e-5, 2e-5] if deformable else [2e-4, 2e-5]))
    )
