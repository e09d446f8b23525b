"""The `backbone` stage: train the small ResNet on the unlabeled ImageNet(-like) images, and a k-NN probe
on held-out images that says whether its features learned anything.

The paper freezes a SwAV ResNet-50 during Transformer pretraining; CPU profiles cannot afford one, so this
stage trains the small ResNet with SwAV (`backbone.method: swav`), or supervised on the folder labels
(`supervised`, the "Sup." backbone of Table 1; the tiny profile's choice, because SwAV does not converge
in a CPU budget: docs/method.md). With model.backbone = resnet50 it trains nothing (the user supplies the
SwAV checkpoint) and only writes a metrics.json that says so.

Every HOLD_OUT-th image is left out of training and queries the probe. Optimiser: AdamW with a linear
warm-up and a per-step cosine decay of backbone.lr to zero (SwAV's schedule; AdamW instead of LARS because
the batches here are small). Resumes exactly like fine-tuning: a checkpoint after every epoch, and each
epoch's randomness a function of (seed, epoch). Outputs in backbone.out_dir:

    checkpoint.pth  resume state (model, optimiser, schedule, RNG, history)
    backbone.pth    the trained trunk, keys as resnet_trunk("small") has them: model.backbone_checkpoint
    metrics.json    final loss; held-out k-NN accuracy of the trained trunk and of its random initialisation
    history.json    per-epoch loss and lr
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from siamdetr.config import Config, ConfigError
from siamdetr.data.folder import ImageFolder
from siamdetr.data.images import collate_skipping_bad
from siamdetr.data.manifest import manifest_entry
from siamdetr.engine.checkpoint import save_checkpoint, seed_everything
from siamdetr.engine.distributed import DistInfo, init_distributed, mean_across_processes
from siamdetr.engine.loop import StepHook
from siamdetr.engine.training import Training, run_training
from siamdetr.errors import NonFiniteLoss
from siamdetr.io import atomic_write_json
from siamdetr.models.backbone import resnet_trunk
from siamdetr.run_hash import run_hash
from siamdetr.tracking import RunLogger
from siamdetr.trunk.probe import HOLD_OUT, held_out, knn_probe
from siamdetr.trunk.supervised import LabelledCrops, SupervisedTrunk
from siamdetr.trunk.swav import MultiCrop, MultiCropImages, SwAV, colour_crops, stack_crops, train_step

log = logging.getLogger(__name__)

BACKBONE = "backbone.pth"
METRICS = "metrics.json"
HISTORY = "history.json"


def unlabeled_images(cfg: Config) -> Path:
    """The ImageNet(-like) folder recorded by the data stage."""
    return Path(manifest_entry(cfg.data.prepared_dir, "imagenet", "pretraining images")["root"])


def build_swav(cfg: Config) -> SwAV:
    b = cfg.backbone
    trunk = resnet_trunk("small", frozen_bn=False, small_width=cfg.model.small_width)
    return SwAV(trunk, b.feature_dim, b.prototypes, b.temperature, b.epsilon, b.sinkhorn_iters)


def build_method(cfg: Config, images: ImageFolder) -> tuple[nn.Module, Dataset]:
    """The model that trains the trunk (its `.trunk`) and the dataset of its training samples."""
    b = cfg.backbone
    if b.method == "swav":
        return build_swav(cfg), MultiCropImages(images, MultiCrop(b.global_size, b.local_size, b.n_local), cfg.seed)
    crops = LabelledCrops(images, b.global_size, cfg.seed)
    trunk = resnet_trunk("small", frozen_bn=False, small_width=cfg.model.small_width)
    return SupervisedTrunk(trunk, len(crops.classes)), crops


def make_loader(ds: Subset, cfg: Config, dist_info: DistInfo, epoch: int) -> DataLoader:
    """Full batches only (BatchNorm and the equal partition want them), in an order fixed by (seed, epoch)."""
    ds.dataset.set_epoch(epoch)
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


Step = Callable[[dict[str, Any], int], float | None]


def swav_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Config, device: torch.device) -> Step:
    def step(batch: dict[str, Any], index: int) -> float | None:
        if len(batch.get("crops", [])) < 2:  # BatchNorm needs two images; bad files left fewer
            return None
        crops = colour_crops([c.to(device, non_blocking=True) for c in stack_crops(batch["crops"])])
        return train_step(model, crops, optimizer, index, cfg.backbone.freeze_prototypes_steps)

    return step


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> Step:
    def step(batch: dict[str, Any], index: int) -> float | None:
        if len(batch.get("image", [])) < 2:  # BatchNorm needs two images; bad files left fewer
            return None
        images = torch.stack(batch["image"]).to(device, non_blocking=True)
        loss = model(images, torch.tensor(batch["label"], device=device))
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"supervised trunk loss is {loss.item()} at step {index}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def train_one_epoch(
    step: Step,
    model: nn.Module,
    loader: DataLoader,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    first_step: int,
    dist_info: DistInfo,
    on_step: StepHook | None,
) -> dict[str, float]:
    """One epoch of the method's steps (the schedule advances per step); returns the mean loss and the last lr."""
    model.train()
    total, steps, skipped = 0.0, 0, 0
    for i, batch in enumerate(tqdm(loader, desc="backbone", unit="batch", leave=False, disable=not dist_info.is_main)):
        skipped += batch["skipped"]
        loss = step(batch, first_step + i)
        if loss is None:
            continue
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


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then a cosine decay to zero at `total` (SwAV's schedule)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trunk_state(trunk: nn.Module) -> dict[str, Tensor]:
    """The trunk's weights and BatchNorm statistics under exactly the keys of resnet_trunk("small"), the
    FrozenBatchNorm trunk that detection loads them into (so no `num_batches_tracked`)."""
    state = trunk.state_dict()
    return {k: state[k].detach().cpu().clone() for k in resnet_trunk("small").state_dict()}


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


def finished_metrics(out: Path, key: str) -> dict[str, Any] | None:
    """The metrics of a run that already wrote all its outputs with these params, else None."""
    if not (out / BACKBONE).is_file() or not (out / METRICS).is_file():
        return None
    metrics = json.loads((out / METRICS).read_text())
    return metrics if metrics.get("run_hash") == key else None


def run(cfg: Config, on_step: StepHook | None = None) -> dict[str, Any]:
    """Train the small ResNet (SwAV or supervised), write backbone.pth and metrics.json; returns the metrics.

    `on_step(step, {"loss": ...})` is an observation hook (tests raise from it to simulate a kill).
    """
    if cfg.model.backbone != "small":
        return record_pretrained_backbone(cfg)
    b = cfg.backbone
    out = Path(b.out_dir)
    key = run_hash(cfg, "backbone")
    dist_info = init_distributed()
    if b.batch_size % dist_info.world_size:
        raise ConfigError(
            f"{cfg.source_of('backbone.batch_size')}: backbone.batch_size = {b.batch_size} is not "
            f"divisible by the {dist_info.world_size} processes"
        )
    root = unlabeled_images(cfg)
    images = ImageFolder(root, on_bad_image=cfg.data.on_bad_image)
    training = [i for i in range(len(images)) if not held_out(i)]
    seed_everything(cfg.seed)
    model, ds = build_method(cfg, images)
    ds = Subset(ds, training)
    steps_per_epoch = len(ds) // b.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{cfg.source_of('backbone.batch_size')}: backbone.batch_size = {b.batch_size} is larger than the "
            f"{len(ds)} training images in {root} (every {HOLD_OUT}th is held out for the probe)"
        )
    initial_trunk = copy.deepcopy(model.trunk).to(dist_info.device)
    if dist_info.world_size > 1 and dist_info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # small per-GPU batches need global statistics
    model.to(dist_info.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=b.weight_decay)
    scheduler = warmup_cosine(optimizer, b.warmup_steps, b.epochs * steps_per_epoch)
    train_model = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    step = (
        swav_step(train_model, optimizer, cfg, dist_info.device)
        if b.method == "swav"
        else supervised_step(train_model, optimizer, dist_info.device)
    )

    def open_run() -> RunLogger:
        tags = {"method": b.method, "backbone": "small"}
        return RunLogger(
            cfg, "backbone", f"backbone-{b.method}-small-s{cfg.seed}", tags, dist_info.is_main, str(dist_info.device)
        )

    def train_epoch(epoch: int, run: RunLogger) -> dict[str, Any]:
        loader = make_loader(ds, cfg, dist_info, epoch)
        stats = train_one_epoch(step, model, loader, scheduler, epoch * steps_per_epoch, dist_info, on_step)
        stats = mean_across_processes(stats, dist_info.device)
        run.log_metrics(stats, step=epoch)
        return {"train": stats}

    def finish(history: list[dict[str, Any]], run: RunLogger | None) -> dict[str, Any]:
        if run is None and (done := finished_metrics(out, key)) is not None:
            return done
        if not dist_info.is_main:
            return {}
        trunk = model.trunk
        save_checkpoint(out / BACKBONE, trunk_state(trunk))
        probe = knn_probe(
            {"": trunk, "_random_init": initial_trunk},
            root,
            b.global_size,
            cfg.data.on_bad_image,
            b.num_workers,
            dist_info.device,
        )
        metrics = {
            "backbone": "small",
            "method": b.method,
            "trained": True,
            "epochs": b.epochs,
            "final_loss": history[-1]["train"]["loss"],
            **probe,
            "run_hash": key,
        }
        atomic_write_json(out / HISTORY, history, indent=2)
        atomic_write_json(out / METRICS, metrics, indent=2)
        if run is not None:
            run.log_metrics(probe)
            run.log_artifact(out / METRICS)
        log.info(
            "backbone: held-out k-NN accuracy %.3f after %s training, %.3f at random init",
            probe["knn_acc"] or float("nan"),
            b.method,
            probe["knn_acc_random_init"] or float("nan"),
        )
        return metrics

    training = Training(out, key, b.epochs, cfg.seed, dist_info, cfg.to_dict(), model, optimizer, scheduler)
    return run_training(training, open_run, train_epoch, finish)
