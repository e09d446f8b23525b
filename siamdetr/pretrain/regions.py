"""Region features from the frozen backbone, batched over every box of the batch.

Object-level features z: RoIAlign on the backbone's last feature map (paper Eq. 4). Crop-level features p:
each box cut out of the image tensor by RoIAlign at a fixed size, colour-augmented per crop, run through the
backbone and pooled (Eq. 5) — one batched forward pass, not a Python loop over crops. UP-DETR's and
DETReg's patches are cut in the dataset (`pretrain/single_view.py`) and only pooled here.
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
    backbone: Backbone, images: Tensor, boxes: list[Tensor], size: int, colour: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """p: pooled backbone features of each box's crop → [sum n_i, C]. `colour` augments crops in [0, 1]."""
    crops = crop_images(images, boxes, size)
    if colour is not None:
        mean, std = _stats(crops)
        crops = (colour((crops * std + mean).clamp(0, 1)) - mean) / std
    return patch_features(backbone, crops)
