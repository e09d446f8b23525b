"""One view of an image for the single-view baselines, built as their published code builds it.

UP-DETR (dddzg/up-detr, datasets/selfdet.py): the whole image at a random scale, neither flipped nor
colour-changed, with `num_patches` query patches drawn fresh for every sample (random boxes; the top
proposals of a store when `pretrain.proposals` is not `random`) and a mask over the patch queries.
DETReg (amirbar/DETReg, datasets/selfdet.py): every one of the image's top `num_targets` offline proposals
as a target, through DETReg's flip, resize and random-size crop; boxes the crop empties are dropped.
Both: each box's patch is cut from the augmented image, resized to crop_size² and colour-augmented on its
own (their query transform), here in the dataset because that is where the sample's generator lives.

Every draw comes from that generator, so a sample is a function of (seed, epoch, index).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from siamdetr.config import PretrainConfig
from siamdetr.data.colour import batched_colour_augment, normalise
from siamdetr.pretrain.base import crop_images
from siamdetr.pretrain.views import (
    View,
    choose_proposals,
    clip_to_rect,
    coin,
    duplicate_boxes,
    horizontal_flip,
    proposals_inside,
    random_int,
    resized_to,
)

TOP_K_SAMPLE = 32  # UP-DETR from a store: the same proposal pool as the two-view path (ViewConfig)
DETREG_SCALE = 480  # DETReg's largest resize (ImageNet); its crop sizes below scale with pretrain.short_max
DETREG_PRE_CROP = (400, 500, 600)  # short sides before the crop
DETREG_CROP = (384, 600)  # crop side range


def draws_own_patches(p: PretrainConfig) -> bool:
    """UP-DETR with `random` proposals draws its patches per sample and reads no store."""
    return p.method == "updetr" and p.proposals == "random"


def random_patches(height: int, width: int, n: int, min_side: int, generator: torch.Generator) -> Tensor:
    """n boxes [n, 4] xyxy in whole pixels, as UP-DETR's get_random_patch_from_img: width uniform in
    [min_side, W − min_side], height in [min_side, H − min_side], placed uniformly where they fit (an image
    narrower than 2 × min_side gets sides from min(min_side, W) up)."""

    def sides(extent: int) -> Tensor:
        low = min(min_side, extent)
        return torch.randint(low, max(extent - min_side, low) + 1, (n,), generator=generator)

    w, h = sides(width), sides(height)
    x0 = (torch.rand(n, generator=generator) * (width - w)).floor()
    y0 = (torch.rand(n, generator=generator) * (height - h)).floor()
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def stored_patches(
    proposals: Tensor, n: int, sample: bool, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """n of the stored proposals (sampled from the top 32, or the first n), jittered copies when there are
    fewer, copies of the whole image when there are none."""
    frame = torch.tensor([0.0, 0.0, width, height])
    chosen = choose_proposals(proposals_inside(proposals, frame, 0.0), n, sample, TOP_K_SAMPLE, generator)
    sources = chosen if len(chosen) else frame[None]
    return torch.cat([chosen, duplicate_boxes(sources, n - len(chosen), frame, generator)])


def resized(frame: Tensor, boxes: Tensor, short: int, max_size: int | None) -> tuple[Tensor, Tensor]:
    """The frame [3, h, w] with short side `short` (long side at most max_size), and its boxes."""
    h, w = frame.shape[-2:]
    scale = short / min(h, w) if max_size is None else min(short / min(h, w), max_size / max(h, w))
    return resized_to(frame, boxes, max(1, round(h * scale)), max(1, round(w * scale)))


def random_size_crop(
    frame: Tensor, boxes: Tensor, low: int, high: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """DETR's RandomSizeCrop: width and height uniform in [low, min(side, high)], position uniform; the
    boxes are clipped to the crop (those it empties have zero area)."""
    h, w = frame.shape[-2:]
    ch, cw = random_int(generator, min(low, h), min(h, high)), random_int(generator, min(low, w), min(w, high))
    top, left = random_int(generator, 0, h - ch), random_int(generator, 0, w - cw)
    shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    return frame[:, top : top + ch, left : left + cw], clip_to_rect(shifted, torch.tensor([0.0, 0.0, cw, ch]))


def detreg_geometry(
    frame: Tensor, boxes: Tensor, p: PretrainConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """DETReg's detection transform: a flip (p 0.5), then a resize, or on half the samples (with
    `detreg.crop`) a resize → random-size crop → resize, DETReg's crop sizes scaled by short_max / 480."""
    if coin(generator, 0.5):
        frame, boxes = horizontal_flip(frame, boxes)
    if p.detreg.crop and coin(generator, 0.5):
        ratio = p.short_max / DETREG_SCALE
        pre = DETREG_PRE_CROP[random_int(generator, 0, len(DETREG_PRE_CROP) - 1)]
        frame, boxes = resized(frame, boxes, round(pre * ratio), None)
        low, high = (round(s * ratio) for s in DETREG_CROP)
        frame, boxes = random_size_crop(frame, boxes, low, high, generator)
    return resized(frame, boxes, random_int(generator, p.short_min, p.short_max), p.max_size)


def with_patches(frame: Tensor, boxes: Tensor, size: int, generator: torch.Generator) -> View:
    """The sample's one view: the image itself (no colour change), its boxes and their patches, each cut
    out, resized to size² and colour-augmented on its own (SimCLR's jitter, grayscale and blur)."""
    boxes = boxes.float()
    patches = batched_colour_augment(crop_images(frame[None], [boxes], size).clamp(0, 1), generator)
    image = normalise(frame)
    return View.single(image, image, boxes, boxes, patches=normalise(patches))


def updetr_sample(
    image: Tensor, proposals: Tensor, p: PretrainConfig, num_queries: int, generator: torch.Generator
) -> tuple[View]:
    """UP-DETR: patches in the image's own pixels, the image resized with them, and which queries keep their
    patch feature (each one with probability 1 − mask_ratio)."""
    u = p.updetr
    frame = TF.to_dtype(image, torch.float32, scale=True)
    h, w = frame.shape[-2:]
    if draws_own_patches(p):
        boxes = random_patches(h, w, u.num_patches, u.min_patch, generator)
    else:
        boxes = stored_patches(proposals, u.num_patches, p.sample_proposals, h, w, generator)
    frame, boxes = resized(frame, boxes, random_int(generator, p.short_min, p.short_max), p.max_size)
    keep = torch.rand(num_queries, generator=generator) > u.mask_ratio
    return (dataclasses.replace(with_patches(frame, boxes, p.crop_size, generator), query_keep=keep[None]),)


def detreg_sample(image: Tensor, proposals: Tensor, p: PretrainConfig, generator: torch.Generator) -> tuple[View]:
    """DETReg: the top num_targets proposals, all of them, through its geometry; those the crop empties are
    dropped, and a view left with none gets the whole view as its one target (DETReg draws another image)."""
    frame = TF.to_dtype(image, torch.float32, scale=True)
    frame, boxes = detreg_geometry(frame, proposals[: p.detreg.num_targets], p, generator)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if not len(boxes):
        boxes = torch.tensor([[0.0, 0.0, frame.shape[-1], frame.shape[-2]]])
    return (with_patches(frame, boxes, p.crop_size, generator),)
