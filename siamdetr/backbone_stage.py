"""The `backbone` stage: SwAV self-supervision of the small ResNet on the unlabeled images, and a k-NN probe
that says whether its features learned anything.

The paper freezes a SwAV ResNet-50 during Transformer pretraining; CPU profiles cannot afford one, so this
stage trains the small ResNet the same way. With model.backbone = resnet50 it trains nothing (the user
supplies the SwAV checkpoint) and only writes a metrics.json that says so.

Optimiser: AdamW with a per-step cosine decay of backbone.lr to zero (SwAV's schedule; AdamW instead of LARS
because the batches here are small). Resumes exactly like fine-tuning: a checkpoint after every epoch, and
each epoch's randomness a function of (seed, epoch). Outputs in backbone.out_dir:

    checkpoint.pth  resume state (SwAV model, optimiser, schedule, RNG, history)
    backbone.pth    the trained trunk, keys as resnet_trunk("small") has them: model.backbone_checkpoint
    metrics.json    final loss; k-NN accuracy of the trained trunk and of its random initialisation
    history.json    per-epoch loss and lr
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision.transforms import v2
from tqdm import tqdm

from siamdetr.config import Config, ConfigError
from siamdetr.data.folder import ImageFolder
from siamdetr.data.images import collate_skipping_bad
from siamdetr.data.prepare import manifest_entry
from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamdetr.engine.checkpoint import epoch_seed, resume, save_checkpoint, seed_everything, training_state
from siamdetr.engine.distributed import DistInfo, init_distributed, mean_across_processes
from siamdetr.engine.loop import StepHook
from siamdetr.io import atomic_write_json
from siamdetr.models.backbone import resnet_trunk
from siamdetr.pretrain.swav import MultiCrop, MultiCropImages, SwAV, colour_crops, stack_crops, train_step
from siamdetr.tracking import RunLogger

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
BACKBONE = "backbone.pth"
METRICS = "metrics.json"
HISTORY = "history.json"
KNN_K = 5
KNN_FOLDS = 5  # fold f: every 5th image from index f queries the other four fifths
KNN_MAX_IMAGES = 10_000  # an evenly strided subset of a large folder (real ImageNet) is enough for a probe


def unlabeled_images(cfg: Config) -> Path:
    """The ImageNet(-like) folder recorded by the data stage."""
    return Path(manifest_entry(cfg, "imagenet", "pretraining images")["root"])


def stage_params_hash(cfg: Config) -> str:
    """What the trunk depends on: seed, data, model.backbone and the backbone section, less where it is
    written and the loader workers (samples are seeded per index). A later stage's params do not restart it."""
    section = {k: v for k, v in dataclasses.asdict(cfg.backbone).items() if k not in ("out_dir", "num_workers")}
    relevant = {
        "seed": cfg.seed,
        "data": dataclasses.asdict(cfg.data),
        "model": [cfg.model.backbone, cfg.model.small_width],
        "backbone": section,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def build_swav(cfg: Config) -> SwAV:
    b = cfg.backbone
    trunk = resnet_trunk("small", frozen_bn=False, small_width=cfg.model.small_width)
    return SwAV(trunk, b.feature_dim, b.prototypes, b.temperature, b.epsilon, b.sinkhorn_iters)


def make_loader(ds: MultiCropImages, cfg: Config, dist_info: DistInfo, epoch: int) -> DataLoader:
    """Full batches only (BatchNorm and the equal partition want them), in an order fixed by (seed, epoch)."""
    ds.set_epoch(epoch)
    sampler = DistributedSampler(ds, dist_info.world_size, dist_info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(
        ds,
        batch_size=cfg.backbone.batch_size // dist_info.world_size,
        sampler=sampler,
        collate_fn=collate_skipping_bad,
        num_workers=cfg.backbone.num_workers,
        drop_last=True,
    )


def swav_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    first_step: int,
    cfg: Config,
    dist_info: DistInfo,
    on_step: StepHook | None,
) -> dict[str, float]:
    """One epoch of SwAV steps (the schedule advances per step); returns the mean loss and the last lr."""
    model.train()
    total, steps, skipped = 0.0, 0, 0
    for i, batch in enumerate(tqdm(loader, desc="swav", unit="batch", leave=False, disable=not dist_info.is_main)):
        skipped += batch["skipped"]
        if len(batch.get("crops", [])) < 2:  # BatchNorm needs two images; bad files left fewer
            continue
        crops = colour_crops([c.to(dist_info.device, non_blocking=True) for c in stack_crops(batch["crops"])])
        loss = train_step(model, crops, optimizer, first_step + i, cfg.backbone.freeze_prototypes_steps)
        scheduler.step()
        total += loss
        if on_step is not None:
            on_step(i, {"loss": loss})
        steps += 1
    return {
        "loss": total / max(steps, 1),
        "lr": scheduler.get_last_lr()[0],
        "steps": float(steps),
        "skipped_images": float(skipped),
    }


def trunk_state(trunk: nn.Module) -> dict[str, Tensor]:
    """The trunk's weights and BatchNorm statistics under exactly the keys of resnet_trunk("small"), the
    FrozenBatchNorm trunk that detection loads them into (so no `num_batches_tracked`)."""
    state = trunk.state_dict()
    return {k: state[k].detach().cpu().clone() for k in resnet_trunk("small").state_dict()}


# ------------------------------------------------------------------------------------------- k-NN probe
@torch.no_grad()
def pooled_features(trunk: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, list[str]]:
    """Unit-length average-pooled C5 of every image (BatchNorm in eval mode, as a frozen backbone runs)."""
    trunk.eval()
    features, paths = [], []
    for batch in loader:
        if "image" not in batch:
            continue
        c5 = trunk(torch.stack(batch["image"]).to(device))["C5"]
        features.append(F.normalize(c5.mean(dim=(2, 3)), dim=1).cpu())
        paths += batch["path"]
    return torch.cat(features), paths


def knn_accuracy(features: Tensor, labels: Tensor, k: int, folds: int = KNN_FOLDS) -> float:
    """Share of images whose k most cosine-similar images of the other folds vote, weighted by similarity,
    for the image's own label. Fold f holds out every `folds`-th image from index f, so every image is a
    query once (less noise than one split of a few hundred images)."""
    fold = torch.arange(len(features)) % folds
    correct = 0
    for f in range(folds):
        query, bank = features[fold == f], features[fold != f]
        bank_labels = labels[fold != f]
        similarity, nearest = (query @ bank.T).topk(min(k, len(bank)), dim=1)
        votes = torch.zeros(len(query), int(labels.max()) + 1).scatter_add_(1, bank_labels[nearest], similarity)
        correct += int((votes.argmax(dim=1) == labels[fold == f]).sum())
    return correct / len(features)


def knn_probe(trunks: dict[str, nn.Module], root: Path, cfg: Config, device: torch.device) -> dict[str, Any]:
    """k-NN classification of the images by their folder (wnid) from each trunk's features: `knn_acc<name>`.

    Images are resized and centre-cropped to the global crop size. Fewer than two folders means no labels:
    the accuracies are None.
    """
    size = cfg.backbone.global_size
    transform = v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    images = ImageFolder(root, transform, cfg.data.on_bad_image)
    subset = Subset(images, range(0, len(images), math.ceil(len(images) / KNN_MAX_IMAGES)))
    loader = DataLoader(subset, batch_size=64, collate_fn=collate_skipping_bad, num_workers=cfg.backbone.num_workers)
    result: dict[str, Any] = {"knn_k": KNN_K}
    for name, trunk in trunks.items():
        features, paths = pooled_features(trunk, loader, device)
        folders = [str(Path(p).parent) for p in paths]
        classes = sorted(set(folders))
        labels = torch.tensor([classes.index(f) for f in folders])
        accuracy = knn_accuracy(features, labels, KNN_K) if len(classes) >= 2 else None
        result |= {f"knn_acc{name}": accuracy, "knn_classes": len(classes), "knn_images": len(paths)}
    if result["knn_classes"] < 2:
        log.warning("%s: the images are not in class folders; the k-NN probe has no labels", root)
    return result


# ------------------------------------------------------------------------------------------------ stage
def record_pretrained_backbone(cfg: Config) -> dict[str, Any]:
    """model.backbone = resnet50: the paper's SwAV R50 is the user's checkpoint; nothing to train."""
    info = {
        "backbone": cfg.model.backbone,
        "trained": False,
        "checkpoint": cfg.model.backbone_checkpoint,
        "reason": "the ResNet-50 comes pretrained with SwAV (model.backbone_checkpoint); "
        "this stage trains only the small ResNet",
    }
    atomic_write_json(Path(cfg.backbone.out_dir) / METRICS, info, indent=2)
    log.info("backbone stage: model.backbone = %s, nothing to train", cfg.model.backbone)
    return info


def finished_metrics(out: Path, params_hash: str) -> dict[str, Any] | None:
    """The metrics of a run that already wrote all its outputs with these params, else None."""
    if not (out / BACKBONE).is_file() or not (out / METRICS).is_file():
        return None
    metrics = json.loads((out / METRICS).read_text())
    return metrics if metrics.get("params_hash") == params_hash else None


def train_backbone(cfg: Config, on_step: StepHook | None = None) -> dict[str, Any]:
    """Train the small ResNet with SwAV, write backbone.pth and metrics.json; returns the metrics.

    `on_step(step, {"loss": ...})` is an observation hook (tests raise from it to simulate a kill).
    """
    if cfg.model.backbone != "small":
        return record_pretrained_backbone(cfg)
    b = cfg.backbone
    out = Path(b.out_dir)
    params_hash = stage_params_hash(cfg)
    dist_info = init_distributed()
    if b.batch_size % dist_info.world_size:
        raise ConfigError(
            f"{cfg.source_of('backbone.batch_size')}: backbone.batch_size = {b.batch_size} is not "
            f"divisible by the {dist_info.world_size} processes"
        )
    root = unlabeled_images(cfg)
    ds = MultiCropImages(
        ImageFolder(root, on_bad_image=cfg.data.on_bad_image),
        MultiCrop(b.global_size, b.local_size, b.n_local),
        cfg.seed,
    )
    steps_per_epoch = len(ds) // b.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{cfg.source_of('backbone.batch_size')}: backbone.batch_size = {b.batch_size} is larger than the "
            f"{len(ds)} images in {root}"
        )
    seed_everything(cfg.seed)
    model = build_swav(cfg)
    initial_trunk = copy.deepcopy(model.trunk).to(dist_info.device)
    if dist_info.world_size > 1 and dist_info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # SwAV's small per-GPU batches need global stats
    model.to(dist_info.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=b.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=b.epochs * steps_per_epoch)
    start_epoch, history = resume(out / CHECKPOINT, params_hash, model, optimizer, scheduler)
    if start_epoch >= b.epochs and (done := finished_metrics(out, params_hash)) is not None:
        log.info("%s: all %d epochs are done; nothing to train", out / CHECKPOINT, b.epochs)
        return done
    train_model = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    tracker = RunLogger(
        cfg, "backbone", f"backbone-swav-small-s{cfg.seed}", {"method": "swav", "backbone": "small"}, dist_info.is_main
    )
    metrics: dict[str, Any] = {}
    try:
        for record in history:  # a resumed run re-logs the finished epochs, so its MLflow run is complete
            tracker.log_metrics(record["train"], step=record["epoch"])
        for epoch in range(start_epoch, b.epochs):
            seed_everything(epoch_seed(cfg.seed, epoch, dist_info.rank))
            stats = swav_one_epoch(
                train_model,
                make_loader(ds, cfg, dist_info, epoch),
                optimizer,
                scheduler,
                epoch * steps_per_epoch,
                cfg,
                dist_info,
                on_step,
            )
            stats = mean_across_processes(stats, dist_info.device)
            history.append({"epoch": epoch, "train": stats})
            tracker.log_metrics(stats, step=epoch)
            if dist_info.is_main:
                state = training_state(model, optimizer, scheduler, epoch, params_hash, history, cfg.to_dict())
                save_checkpoint(out / CHECKPOINT, state)
        if dist_info.is_main:
            save_checkpoint(out / BACKBONE, trunk_state(model.trunk))
            probe = knn_probe({"": model.trunk, "_random_init": initial_trunk}, root, cfg, dist_info.device)
            metrics = {
                "backbone": "small",
                "trained": True,
                "epochs": b.epochs,
                "final_loss": history[-1]["train"]["loss"],
                **probe,
                "params_hash": params_hash,
            }
            atomic_write_json(out / HISTORY, history, indent=2)
            atomic_write_json(out / METRICS, metrics, indent=2)
            tracker.log_metrics(probe)
            tracker.log_artifact(out / METRICS)
            log.info(
                "backbone: k-NN accuracy %.3f after SwAV, %.3f at random init",
                probe["knn_acc"] or float("nan"),
                probe["knn_acc_random_init"] or float("nan"),
            )
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    return metrics
