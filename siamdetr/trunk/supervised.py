"""Supervised training of the small ResNet on the ImageNet(-like) folder labels: the backbone of Table 1's
"Sup." rows, and the tiny profile's trunk (self-supervision does not converge in a CPU budget; see
docs/method.md).

ImageNet's standard augmentation (random resized crop, flip) and a linear classifier on the pooled C5
features; the classifier is dropped when the trunk is saved.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from siamdetr.data.colour import normalise
from siamdetr.data.folder import ImageFolder
from siamdetr.engine.checkpoint import sample_seed

CROP_SCALE = (0.6, 1.0)  # the object fills most of an ImageNet-like image; smaller crops would cut it away


def class_folders(images: ImageFolder) -> list[str]:
    """The class of each image is its folder (the wnid), as in ImageNet's train layout."""
    return sorted({p.parent.as_posix() for p in images.paths})


class LabelledCrops(Dataset):
    """A random resized, maybe flipped crop of each image with its folder's class index; the randomness of
    a sample comes from (seed, epoch, index) only, so it is the same in any worker or process."""

    def __init__(self, images: ImageFolder, size: int, seed: int) -> None:
        self.images, self.seed, self.epoch = images, seed, 0
        self.classes = class_folders(images)
        self.label_of = {c: i for i, c in enumerate(self.classes)}
        self.crop = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.images[index]
        if item is None:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            crop = normalise(self.crop(item["image"]).as_subclass(Tensor))
        return {"image": crop, "label": self.label_of[self.images.paths[index].parent.as_posix()]}


class SupervisedTrunk(nn.Module):
    """Trunk → average-pooled C5 → linear classifier; forward returns the cross-entropy."""

    def __init__(self, trunk: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.classifier = nn.Linear(trunk.channels["C5"], num_classes)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.classifier(self.trunk(images)["C5"].mean(dim=(2, 3))), labels)
