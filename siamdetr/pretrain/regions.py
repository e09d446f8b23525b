"""Region features from the frozen backbone, batched over every box of the batch.

Object-level features z: RoIAlign on the backbone's last feature map (paper Eq. 4). Crop-level features p:
each box cut out of the image tensor by RoIAlign at a fixed size, colour-augmented per crop, run through the
backbone and pooled (Eq. 5) — one batched forward pass, not a Python loop over crops. Siamese DETR on a
multi-level backbone (Deform-MS: C3–C5) pools each level on its own and concatenates, as the official code.
UP-DETR's and DETReg's patches are cut in the dataset (`pretrain/single_view.py`) and only pooled here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import roi_align

from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamdetr.models.backbone import Backbone

ROI_SIZE = 7


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return mean, std


@torch.no_grad()
def object_features(feature_map: Tensor, stride: float, boxes: list[Tensor]) -> Tensor:
    """z: RoIAlign 7x7 on the feature map, average pooled → [sum n_i, C]; boxes are xyxy image pixels."""
    pooled = roi_align(feature_map, boxes, ROI_SIZE, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
    return pooled.mean(dim=(2, 3))


@torch.no_grad()
def object_features_per_level(feature_maps: list[Tensor], strides: list[float], boxes: list[Tensor]) -> Tensor:
    """z of every level, concatenated along channels → [sum n_i, ΣC]; one level gives `object_features`."""
    return torch.cat([object_features(f, s, boxes) for f, s in zip(feature_maps, strides, strict=True)], dim=1)


def crop_images(images: Tensor, boxes: list[Tensor], size: int) -> Tensor:
    """Every box cut out of its (normalised) image and resized to size x size → [sum n_i, 3, size, size]."""
    return roi_align(images, boxes, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


@torch.no_grad()
def patch_features(backbone: Backbone, patches: Tensor, level: str | None = None) -> Tensor:
    """Normalised patches [N, 3, S, S] → their backbone feature map at `level` (default: the backbone's last
    returned level), average pooled → [N, C]."""
    return backbone.body(patches)[level or backbone.levels[-1]].mean(dim=(2, 3))


@torch.no_grad()
def crop_features(
    backbone: Backbone,
    images: Tensor,
    boxes: list[Tensor],
    size: int,
    colour: Callable[[Tensor], Tensor] | None = None,
    all_levels: bool = False,
) -> Tensor:
    """p: pooled backbone features of each box's crop → [sum n_i, C]. `colour` augments crops in [0, 1].

    `all_levels`: every level the backbone returns, each pooled on its own and concatenated → [sum n_i, ΣC]
    (the last level alone when the backbone returns one)."""
    crops = crop_images(images, boxes, size)
    if colour is not None:
        mean, std = _stats(crops)
        crops = (colour((crops * std + mean).clamp(0, 1)) - mean) / std
    if all_levels:
        levels = backbone.body(crops)
        return torch.cat([levels[name].mean(dim=(2, 3)) for name in backbone.levels], dim=1)
    return patch_features(backbone, crops)
