"""The `finetune` stage: train a DETR variant on COCO-format data (VOC after conversion), evaluate, track.

Resumes exactly: each epoch's randomness (shuffling, augmentation, dropout) is derived from (seed, epoch),
and a checkpoint written atomically after every epoch holds model, optimiser, scheduler, RNG states and
the epoch, so a run killed anywhere and restarted ends with the same weights and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from siamdetr.config import Config, ConfigError, backbone_stride
from siamdetr.data.coco import CocoDetection
from siamdetr.data.images import collate_skipping_bad
from siamdetr.data.manifest import manifest_entry
from siamdetr.data.transforms import eval_transforms, train_transforms
from siamdetr.engine.checkpoint import (
    epoch_seed,
    load_checkpoint,
    seed_everything,
)
from siamdetr.engine.distributed import DistInfo, gather_lists, init_distributed, mean_across_processes
from siamdetr.engine.loop import StepHook, one_drop_schedule, predict, train_one_epoch
from siamdetr.engine.training import Training, run_training
from siamdetr.io import atomic_write_json
from siamdetr.models.detr import DETR
from siamdetr.models.variants import VARIANTS, build_detector
from siamdetr.run_hash import run_hash
from siamdetr.tracking import RunLogger

log = logging.getLogger(__name__)

METRICS = "metrics.json"
DETECTIONS = "detections.json"
HISTORY = "history.json"
RESET_ON_INIT = ("class_embed.",)  # the downstream classes are new: their head starts fresh
# Deformable DETR's main.py (lr_linear_proj_names) matches these as substrings of a parameter's name; here they
# are MSDeformAttn.sampling_offsets and DeformableTransformer.reference_points, in no other variant
LINEAR_PROJ_NAMES = ("sampling_offsets", "reference_points")


def is_linear_proj(name: str) -> bool:
    return any(key in name for key in LINEAR_PROJ_NAMES)


def dataset_paths(cfg: Config) -> dict[str, dict[str, str]]:
    """Train / test images and annotations of the downstream dataset, from the data stage's manifest."""
    name = cfg.finetune.dataset
    entry = manifest_entry(cfg.data.prepared_dir, name, "finetune.dataset")
    test_split = "test" if name == "voc" else "val"
    return {"train": entry["train"], "test": entry[test_split]}


def build_criterion(cfg: Config, num_classes: int) -> tuple[nn.Module, dict[str, float]]:
    from siamdetr.models.criterion import SetCriterion, aux_weights
    from siamdetr.models.matcher import HungarianMatcher

    v, f = VARIANTS[cfg.model.variant], cfg.finetune
    loss_ce = f.loss_ce if f.loss_ce is not None else v.loss_ce
    matcher = HungarianMatcher(cost_class=2.0 if v.focal else 1.0, cost_bbox=5.0, cost_giou=2.0, focal=v.focal)
    base = {"loss_ce": loss_ce, "loss_bbox": f.loss_bbox, "loss_giou": f.loss_giou}
    weights = aux_weights(base, cfg.model.dec_layers - 1) if cfg.model.aux_loss else base
    criterion = SetCriterion(num_classes, matcher, weights, eos_coef=f.eos_coef, focal=v.focal)
    return criterion, weights


def build_optimizer(
    model: nn.Module, cfg: Config
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with the backbone at its own lr and Deformable DETR's sampling-offset and reference-point
    projections at lr × lr_linear_proj_mult; the lr is divided by 10 once, after lr_drop epochs."""
    f = cfg.finetune
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in trainable if n.startswith("backbone.")]
    linear_proj = [p for n, p in trainable if not n.startswith("backbone.") and is_linear_proj(n)]
    rest = [p for n, p in trainable if not n.startswith("backbone.") and not is_linear_proj(n)]
    groups = [{"params": rest, "lr": f.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": f.lr_backbone})
    if linear_proj:
        groups.append({"params": linear_proj, "lr": f.lr * f.lr_linear_proj_mult})
    optimizer = torch.optim.AdamW(groups, lr=f.lr, weight_decay=f.weight_decay)
    return optimizer, one_drop_schedule(optimizer, f.lr_drop)


def load_init(model: DETR, path: str | Path, only: Sequence[str] = ()) -> dict[str, Any]:
    """Start from a pretraining checkpoint: same parameter names, class head reset, differences logged;
    with `only` (name prefixes), just those tensors (finetune.init_only).

    Returns the checkpoint's `meta` (method, pretraining dataset, proposals) for the run's tags.
    """
    ckpt = load_checkpoint(path)
    state = ckpt.get("model", ckpt)
    own = model.state_dict()
    wanted = [k for k in own if not k.startswith(RESET_ON_INIT) and (not only or k.startswith(tuple(only)))]
    usable = {k: state[k] for k in wanted if k in state and own[k].shape == state[k].shape}
    model.load_state_dict(usable, strict=False)
    missing = [k for k in wanted if k not in usable]
    skipped = sorted(set(state) - set(usable))
    if missing:
        log.warning(
            "%s: %d parameters not in the checkpoint keep their fresh init: %s", path, len(missing), missing[:10]
        )
    if skipped:
        log.info(
            "%s: %d checkpoint tensors not used (reset heads, other shapes or names%s): %s",
            path,
            len(skipped),
            ", finetune.init_only" if only else "",
            skipped[:10],
        )
    return dict(ckpt.get("meta", {}))


def tracked(record: dict[str, Any]) -> dict[str, Any]:
    """One epoch's losses and metrics as MLflow scalars (AP at each IoU threshold included, for Figure 4)."""
    from siamdetr.engine.evaluate import per_iou_scalars  # pycocotools: imported where it is used

    metrics = record.get("metrics", {})
    return {**record["train"], **metrics, **per_iou_scalars(metrics)}


SAMPLE_CACHE_BYTES = 2 << 30  # per dataset: tiny's 2,500 images take 123 MB; a real dataset is cached in part
TRUNK_CACHE_BYTES = 2 << 30  # a frozen trunk's features per image: tiny's 2,500 take 80 MB


def make_loader(
    ds: CocoDetection, batch_size: int, train: bool, cfg: Config, dist_info: DistInfo, epoch: int
) -> DataLoader:
    """A loader whose global order depends only on (seed, epoch): process r of W takes every W-th image of
    one shuffled order, so N processes see the same global batches as one process (and a resume the same
    batches as the original run)."""
    if train:
        sampler = DistributedSampler(ds, dist_info.world_size, dist_info.rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:  # every image exactly once over all processes (DistributedSampler would pad with repeats)
        sampler = range(dist_info.rank, len(ds), dist_info.world_size)
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, dist_info.rank))  # worker seeds
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_skipping_bad,
        num_workers=cfg.finetune.num_workers,
        generator=generator,
    )


def run(
    cfg: Config,
    on_step: StepHook | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate every `eval_every` epochs, checkpoint every epoch; returns the final metrics.

    `on_step(step, losses)` / `on_epoch(epoch, record)` are observation hooks (tests use them to stop a run
    mid-epoch as a kill would).
    """
    from siamdetr.engine.evaluate import coco_metrics

    f = cfg.finetune
    dist_info = init_distributed()
    if f.batch_size % dist_info.world_size:
        raise ConfigError(
            f"{cfg.source_of('finetune.batch_size')}: finetune.batch_size = {f.batch_size} is not "
            f"divisible by the {dist_info.world_size} processes"
        )
    per_process = f.batch_size // dist_info.world_size
    out = Path(f.out_dir)
    paths = dataset_paths(cfg)
    seed_everything(cfg.seed)
    max_aspect = f.max_size / backbone_stride(cfg.model)  # capped at max_size, the short side keeps one stride
    train_ds, test_ds = (
        CocoDetection(
            paths[s]["images"],
            paths[s]["annotations"],
            t,
            cfg.data.on_bad_image,
            max_aspect=max_aspect,
            cache_bytes=SAMPLE_CACHE_BYTES if deterministic else 0,
        )
        for s, t, deterministic in (("train", train_transforms(f), not f.augment), ("test", eval_transforms(f), True))
    )
    if test_ds.category_ids != train_ds.category_ids:
        raise ConfigError(f"{paths['test']['annotations']}: categories differ from {paths['train']['annotations']}")
    model = build_detector(cfg.model, len(train_ds.category_ids)).to(dist_info.device)
    if TRUNK_CACHE_BYTES and not cfg.model.train_backbone and not f.augment and dist_info.device.type == "cpu":
        model.backbone.cache_features(TRUNK_CACHE_BYTES)  # GPUs batch the trunk cheaply; hashing would cost a copy
    init_meta = load_init(model, f.init, f.init_only) if f.init else {}
    criterion, weights = build_criterion(cfg, len(train_ds.category_ids))
    optimizer, scheduler = build_optimizer(model, cfg)

    def evaluate(epoch: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        loader = make_loader(test_ds, per_process, False, cfg, dist_info, epoch)
        detections = predict(
            model, loader, dist_info.device, model.focal, train_ds.category_ids, f.amp, show_progress=dist_info.is_main
        )
        detections = gather_lists(detections, dist_info.device)
        return detections, coco_metrics(test_ds.coco, detections)

    def write_outputs(detections: list[dict[str, Any]], metrics: dict[str, Any], history: list) -> None:
        if dist_info.is_main:
            atomic_write_json(out / DETECTIONS, detections)
            atomic_write_json(out / METRICS, metrics, indent=2)
            atomic_write_json(out / HISTORY, history, indent=2)

    train_model: nn.Module = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    run_tags = {
        **(tags or {}),
        "method": init_meta.get("method", "scratch" if not f.init else "unknown"),
        "variant": cfg.model.variant,
        "downstream": f.dataset,
        "pretrain_dataset": init_meta.get("dataset", "-"),
        "proposals": init_meta.get("proposals", "-"),
        "region_detection": init_meta.get("region_detection", "-"),
        "semantic": init_meta.get("semantic", "-"),
        "queries": cfg.model.num_queries,
        "epochs": f.epochs,
    }
    last: dict[str, list[dict[str, Any]]] = {}  # the latest evaluation's detections

    def open_run() -> RunLogger:
        name = f"finetune-{cfg.model.variant}-{f.dataset}-s{cfg.seed}"
        return RunLogger(cfg, "finetune", name, run_tags, enabled=dist_info.is_main, device=str(dist_info.device))

    def train_epoch(epoch: int, run: RunLogger) -> dict[str, Any]:
        loader = make_loader(train_ds, per_process, True, cfg, dist_info, epoch)
        losses = train_one_epoch(
            train_model,
            criterion,
            weights,
            loader,
            optimizer,
            dist_info.device,
            f.clip_max_norm,
            f.amp,
            on_step,
            show_progress=dist_info.is_main,
        )
        losses = mean_across_processes(losses, dist_info.device)
        scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, "train": losses}
        if (epoch + 1) % f.eval_every == 0 or epoch + 1 == f.epochs:
            last["detections"], record["metrics"] = evaluate(epoch)
        run.log_metrics(tracked(record), step=epoch)
        return record

    def finish(history: list[dict[str, Any]], run: RunLogger | None) -> dict[str, Any]:
        if run is None:  # every epoch was done: the detections are computed again from the final weights
            last["detections"], _ = evaluate(f.epochs - 1)
        metrics = history[-1]["metrics"]
        write_outputs(last["detections"], metrics, history)
        if run is not None and dist_info.is_main:
            run.log_artifact(out / METRICS)
        return metrics

    training = Training(
        out,
        run_hash(cfg, "finetune"),
        f.epochs,
        cfg.seed,
        dist_info,
        cfg.to_dict(),
        model,
        optimizer,
        scheduler,
        on_epoch,
    )
    return run_training(training, open_run, train_epoch, finish)
