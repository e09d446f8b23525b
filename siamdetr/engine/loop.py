"""One training epoch and one prediction pass: the loops every stage shares."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert
from tqdm import tqdm

from siamdetr.errors import NonFiniteLoss
from siamdetr.models.detr import pad_images, postprocess

StepHook = Callable[[int, dict[str, float]], None]


def one_drop_schedule(optimizer: torch.optim.Optimizer, lr_drop: int) -> torch.optim.lr_scheduler.LRScheduler:
    """DETR's schedule: the learning rate divided by 10 once, after `lr_drop` epochs (never, if that is
    beyond the last epoch). Not StepLR, which would divide it again every `lr_drop` epochs."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[lr_drop], gamma=0.1)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; CPU runs stay in float32 (deterministic, and bf16 is slow there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    images, mask = pad_images([im.to(device, non_blocking=True) for im in batch["image"]])
    targets = [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in batch["target"]]
    return images, mask, targets


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    weight_dict: dict[str, float],
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    clip_max_norm: float,
    amp: bool,
    on_step: StepHook | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """Returns the epoch's mean of every loss term (weighted total under 'loss') and the skipped-image count."""
    from siamdetr.models.criterion import weighted_total

    model.train()
    criterion.train()
    sums: dict[str, float] = {}
    steps = skipped = 0
    for batch in tqdm(loader, desc="train", unit="batch", leave=False, disable=None if show_progress else True):
        skipped += batch["skipped"]
        if "image" not in batch:
            continue  # every image of this batch was unreadable
        images, mask, targets = to_device(batch, device)
        with autocast(device, amp):
            outputs = model(images, mask)
        losses = criterion(_float(outputs), targets)
        loss = weighted_total(losses, weight_dict)
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(
                f"loss is {loss.item()} at step {steps}: { ({k: v.item() for k, v in losses.items()}) }"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        optimizer.step()
        values = {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        if on_step is not None:
            on_step(steps, values)
        steps += 1
    return {**{k: v / max(steps, 1) for k, v in sums.items()}, "skipped_images": float(skipped)}


def _float(outputs: Any) -> Any:
    """Losses in float32 even when the forward pass ran under bf16 autocast."""
    if isinstance(outputs, Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_float(v) for v in outputs]
    return outputs


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    focal: bool,
    category_ids: list[int],
    amp: bool = False,
    top_k: int = 100,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Detections in COCO results format (boxes in original pixels), for `coco_metrics` or a results file."""
    model.eval()
    results = []
    for batch in tqdm(loader, desc="predict", unit="batch", leave=False, disable=None if show_progress else True):
        if "image" not in batch:
            continue
        images, mask, targets = to_device(batch, device)
        with autocast(device, amp):
            outputs = model(images, mask)
        orig = torch.tensor([t["orig_size"] for t in targets], device=device)
        for t, det in zip(targets, postprocess(_float(outputs), orig, focal, top_k), strict=True):
            xywh = box_convert(det["boxes"], "xyxy", "xywh").cpu().tolist()
            for box, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist(), strict=True):
                results.append(
                    {
                        "image_id": int(t["image_id"]),
                        "category_id": category_ids[label],
                        "bbox": [round(v, 3) for v in box],
                        "score": round(score, 5),
                    }
                )
    return results
