"""The `pretrain` stage: self-supervised pretraining of a DETR variant's Transformer with Siamese DETR,
UP-DETR or DETReg, on unlabeled images and their offline proposals (UP-DETR's random patches are drawn per
sample instead), backbone frozen.

It writes `<out_dir>/pretrained.pth` ({"model": DETR state dict, "meta": method/dataset/proposals/variant}),
which `siamdetr finetune --init` loads, and resumes exactly from `<out_dir>/checkpoint.pth` like fine-tuning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from siamdetr.config import Config, ConfigError, backbone_stride
from siamdetr.data.manifest import pretraining_images
from siamdetr.engine.checkpoint import epoch_seed, save_checkpoint, seed_everything
from siamdetr.engine.distributed import DistInfo, init_distributed, mean_across_processes
from siamdetr.engine.loop import autocast, one_drop_schedule
from siamdetr.engine.training import Training, run_training
from siamdetr.errors import NonFiniteLoss
from siamdetr.io import atomic_write_json
from siamdetr.models.criterion import weighted_total
from siamdetr.models.variants import build_detector
from siamdetr.pretrain.base import RegionPretrainer
from siamdetr.pretrain.data import PretrainImages, collate_views, view_sampler
from siamdetr.run_hash import run_hash
from siamdetr.tracking import RunLogger

log = logging.getLogger(__name__)

PRETRAINED = "pretrained.pth"

StepHook = Callable[[int, dict[str, float]], None]


def build_method(cfg: Config) -> RegionPretrainer:
    """The pretraining module for cfg.pretrain.method around a fresh DETR of cfg.model (backbone frozen)."""
    from siamdetr.data.colour import batched_colour_augment
    from siamdetr.pretrain.detreg import DETReg
    from siamdetr.pretrain.siamese import SiameseDETR
    from siamdetr.pretrain.updetr import UPDETR

    p = cfg.pretrain
    detr = build_detector(cfg.model, num_classes=1)
    if p.method == "siamese":
        return SiameseDETR(
            detr,
            p.lambda_loc,
            p.lambda_r,
            p.lambda_g,
            p.crop_size,
            p.region_detection,
            p.semantic,
            crop_colour=CropColour(batched_colour_augment),
        )
    if p.method == "updetr":
        return UPDETR(detr, p.lambda_loc, p.updetr.lambda_r)
    return DETReg(detr, p.lambda_loc, p.detreg.lambda_embed, p.detreg.embed_level)


class CropColour(nn.Module):
    """Per-crop colour augmentation for L_r's targets (its randomness follows the global torch seed)."""

    def __init__(self, augment: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.augment = augment

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=crops.device).manual_seed(int(torch.randint(0, 2**62, ())))
        return self.augment(crops, generator)


def pretrain_dataset(cfg: Config, root: Path, store: Mapping[str, Any]) -> PretrainImages:
    """The images of `root` with their proposals, made into the views of cfg.pretrain.method."""
    max_aspect = cfg.pretrain.max_size / backbone_stride(cfg.model)  # capped at max_size, the short side keeps a stride
    sample = view_sampler(cfg.pretrain, cfg.model.num_queries)
    return PretrainImages(root, store, sample, cfg.seed, cfg.data.on_bad_image, max_aspect)


def make_loader(ds: PretrainImages, cfg: Config, dist_info: DistInfo, epoch: int) -> DataLoader:
    ds.set_epoch(epoch)
    sampler = DistributedSampler(ds, dist_info.world_size, dist_info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(
        ds,
        batch_size=cfg.pretrain.batch_size // dist_info.world_size,
        sampler=sampler,
        collate_fn=collate_views,
        num_workers=cfg.pretrain.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, dist_info.rank)),
    )


def pretrain_one_epoch(
    model: nn.Module,
    weights: dict[str, float],
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    dist_info: DistInfo,
    tracker: RunLogger,
    first_step: int,
    on_step: StepHook | None,
) -> dict[str, float]:
    """One epoch; logs every term of the final decoder layer to MLflow every `log_every` steps."""
    model.train()
    sums: dict[str, float] = {}
    steps = short_batches = 0
    for batch in tqdm(loader, desc="pretrain", unit="batch", leave=False, disable=None if dist_info.is_main else True):
        if not batch["views"] or len(batch["views"][0].sizes) < 2:  # BatchNorm (L_g's head) needs two images;
            short_batches += 1  # bad files left fewer
            continue
        views = [v.to(dist_info.device) for v in batch["views"]]
        with autocast(dist_info.device, cfg.pretrain.amp):
            losses = model(*views)
        losses = {k: v.float() for k, v in losses.items()}
        loss = weighted_total(losses, weights)
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"pretraining loss is {loss.item()} at step {first_step + steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.pretrain.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.pretrain.clip_max_norm)
        optimizer.step()
        values = {"loss": loss.item(), **{k: v.item() for k, v in losses.items() if not k[-1].isdigit()}}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        if (first_step + steps) % cfg.pretrain.log_every == 0:
            tracker.log_metrics({f"step/{k}": v for k, v in values.items()}, step=first_step + steps)
        if on_step is not None:
            on_step(steps, values)
        steps += 1
    if short_batches:
        log.warning("pretrain: %d batches skipped: unreadable images left fewer than two", short_batches)
    return {**{k: v / max(steps, 1) for k, v in sums.items()}, "steps": float(steps)}


def write_outputs(out: Path, method: RegionPretrainer, meta: dict[str, Any], history: list) -> None:
    save_checkpoint(out / PRETRAINED, {"model": method.pretrained_state(), "meta": meta})
    atomic_write_json(out / "history.json", history, indent=2)


def run(cfg: Config, on_step: StepHook | None = None, tags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain, checkpoint every epoch (a rerun resumes), write pretrained.pth; returns the last epoch's losses."""
    from siamdetr.pretrain.single_view import draws_own_patches
    from siamdetr.proposals.coverage import check_coverage
    from siamdetr.proposals.store import ProposalStore, store_dir

    p = cfg.pretrain
    dist_info = init_distributed()
    if p.batch_size % dist_info.world_size:
        raise ConfigError(
            f"{cfg.source_of('pretrain.batch_size')}: pretrain.batch_size = {p.batch_size} is not "
            f"divisible by the {dist_info.world_size} processes"
        )
    out = Path(p.out_dir)
    seed_everything(cfg.seed)
    images, _ = pretraining_images(cfg.data.prepared_dir, p.dataset)
    store = {} if draws_own_patches(p) else ProposalStore.open(store_dir(cfg.proposals.out_dir, p.dataset, p.proposals))
    ds = pretrain_dataset(cfg, images, store)
    if isinstance(store, ProposalStore):
        check_coverage(store, images, [path.as_posix() for path in ds.paths], p.max_missing_proposals)
    method = build_method(cfg).to(dist_info.device)
    params = [q for q in method.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    scheduler = one_drop_schedule(optimizer, p.lr_drop)
    meta = {
        "method": p.method,
        "dataset": p.dataset,
        "proposals": p.proposals,
        "variant": cfg.model.variant,
        "region_detection": p.region_detection,
        "semantic": p.semantic,
    }
    train_model: nn.Module = (
        DistributedDataParallel(method, find_unused_parameters=True) if dist_info.world_size > 1 else method
    )
    steps_per_epoch = len(ds) // p.batch_size

    def open_run() -> RunLogger:
        return RunLogger(
            cfg,
            "pretrain",
            f"pretrain-{p.method}-{cfg.model.variant}-{p.dataset}-s{cfg.seed}",
            {**(tags or {}), **meta, "pretrain_dataset": p.dataset, "queries": cfg.model.num_queries},
            enabled=dist_info.is_main,
            device=str(dist_info.device),
        )

    def train_epoch(epoch: int, run: RunLogger) -> dict[str, Any]:
        loader = make_loader(ds, cfg, dist_info, epoch)
        losses = pretrain_one_epoch(
            train_model, method.weights, loader, optimizer, cfg, dist_info, run, epoch * steps_per_epoch, on_step
        )
        losses = mean_across_processes(losses, dist_info.device)
        scheduler.step()
        run.log_metrics({f"epoch/{k}": v for k, v in losses.items()}, step=epoch)
        return {"train": losses}

    def finish(history: list[dict[str, Any]], run: RunLogger | None) -> dict[str, float]:
        if dist_info.is_main:
            write_outputs(out, method, meta, history)
        return history[-1]["train"]

    training = Training(
        out,
        run_hash(cfg, "pretrain"),
        p.epochs,
        cfg.seed,
        dist_info,
        cfg.to_dict(),
        method,
        optimizer,
        scheduler,
    )
    return run_training(training, open_run, train_epoch, finish)
