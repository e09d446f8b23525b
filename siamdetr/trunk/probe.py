"""A k-NN probe of a trunk's features: held-out images classified by their folder (the ImageNet wnid)
from the training images' pooled C5 features. It says whether a trunk learned anything the detectors can use
(the tiny profile asks for 0.8 on 14 classes; a random trunk scores about 0.36 there)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from siamdetr.data.folder import ImageFolder
from siamdetr.data.images import collate_skipping_bad
from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

KNN_K = 5
HOLD_OUT = 5  # every 5th image is held out of the trunk's training and queries the k-NN probe
KNN_MAX_IMAGES = 10_000  # an evenly strided subset of a large folder (real ImageNet) is enough for a probe


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


def knn_accuracy(bank: Tensor, bank_labels: Tensor, queries: Tensor, query_labels: Tensor, k: int) -> float:
    """Share of queries whose k most cosine-similar bank images vote, weighted by similarity, for the
    query's own label."""
    similarity, nearest = (queries @ bank.T).topk(min(k, len(bank)), dim=1)
    classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = torch.zeros(len(queries), classes).scatter_add_(1, bank_labels[nearest], similarity)
    return float((votes.argmax(dim=1) == query_labels).float().mean())


def held_out(index: int) -> bool:
    """Every HOLD_OUT-th image is kept out of the trunk's training: the probe's queries."""
    return index % HOLD_OUT == 0


def knn_probe(
    trunks: dict[str, nn.Module], root: Path, size: int, on_bad_image: str, num_workers: int, device: torch.device
) -> dict[str, Any]:
    """k-NN classification of the held-out images by their folder (wnid) from each trunk's features, with
    the training images as the bank: `knn_acc<name>`. Fewer than two folders means no labels (None)."""
    transform = v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    images = ImageFolder(root, transform, on_bad_image)
    indices = list(range(0, len(images), math.ceil(len(images) / KNN_MAX_IMAGES)))
    loader = DataLoader(
        Subset(images, indices), batch_size=64, collate_fn=collate_skipping_bad, num_workers=num_workers
    )
    result: dict[str, Any] = {"knn_k": KNN_K}
    for name, trunk in trunks.items():
        features, paths = pooled_features(trunk, loader, device)
        position = {str(p): i for i, p in enumerate(images.paths)}
        query = torch.tensor([held_out(position[p]) for p in paths])
        folders = [str(Path(p).parent) for p in paths]
        classes = sorted(set(folders))
        labels = torch.tensor([classes.index(f) for f in folders])
        usable = len(classes) >= 2 and query.any() and (~query).any()
        accuracy = (
            knn_accuracy(features[~query], labels[~query], features[query], labels[query], KNN_K) if usable else None
        )
        result |= {
            f"knn_acc{name}": accuracy,
            "knn_classes": len(classes),
            "knn_bank_images": int((~query).sum()),
            "knn_held_out_images": int(query.sum()),
        }
    if result["knn_classes"] < 2:
        log.warning("%s: the images are not in class folders; the k-NN probe has no labels", root)
    return result
