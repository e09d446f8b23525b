"""DETR's detection augmentations on torchvision.transforms.v2 + tv_tensors (boxes move with the image).

Train: horizontal flip; then either a multi-scale resize, or resize → random-size crop → multi-scale
resize. Eval: one resize. Both end with float normalisation and targets as normalised (cx, cy, w, h).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from siamdetr.config import FinetuneConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETR_PRE_CROP = (400, 500, 600)  # DETR's resize before cropping, for its 800-pixel test size


class RandomSizeCrop(v2.Transform):
    """A crop whose width and height are drawn uniformly in [min_size, min(max_size, image side)]."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        h, w = TF.get_size(image)
        ch = int(torch.randint(min(self.min_size, h), min(h, self.max_size) + 1, ()))
        cw = int(torch.randint(min(self.min_size, w), min(w, self.max_size) + 1, ()))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"top": top, "left": left, "height": ch, "width": cw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.crop(inpt, **params)


def _per_box(inputs: Any) -> tuple[Tensor, ...]:
    """Everything SanitizeBoundingBoxes must filter along with the boxes."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "iscrowd", "area") if k in target)


def train_transforms(cfg: FinetuneConfig) -> v2.Compose:
    scales = list(cfg.train_scales)
    pre_crop = [max(1, round(s * cfg.test_size / 800)) for s in DETR_PRE_CROP]
    steps: list[Any] = []
    if cfg.augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomChoice(
                [
                    v2.RandomShortestSize(scales, cfg.max_size),
                    v2.Compose(
                        [
                            v2.RandomShortestSize(pre_crop),
                            RandomSizeCrop(cfg.crop_min, cfg.crop_max),
                            v2.RandomShortestSize(scales, cfg.max_size),
                        ]
                    ),
                ]
            ),
        ]
    else:
        steps.append(v2.Resize(max(scales), max_size=cfg.max_size))
    steps += [v2.SanitizeBoundingBoxes(labels_getter=_per_box), *_finish()]
    return v2.Compose(steps)


def eval_transforms(cfg: FinetuneConfig) -> v2.Compose:
    return v2.Compose([v2.Resize(cfg.test_size, max_size=cfg.max_size), *_finish()])


def _finish() -> list[Any]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), NormalizedBoxes()]


class NormalizedBoxes(v2.Transform):
    """Target boxes → plain tensors of normalised (cx, cy, w, h), DETR's regression space; adds `size`."""

    def forward(self, *inputs: Any) -> Any:
        image, target = inputs if len(inputs) == 2 else inputs[0]
        h, w = TF.get_size(image)
        boxes = box_convert(target["boxes"].as_subclass(Tensor), "xyxy", "cxcywh")
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype)
        target = {**target, "boxes": boxes / scale, "size": (h, w)}
        return image.as_subclass(Tensor), target
