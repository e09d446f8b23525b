"""Pretraining samples: unlabeled images + their offline proposals → two views (Siamese DETR) or one view
(UP-DETR, DETReg: `pretrain/single_view.py`), batched into `View`s.

Every sample's randomness comes from a generator seeded by (seed, epoch, index), so a sample is the same
whatever the worker count, and a resumed epoch replays exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from siamdetr.config import Config, backbone_stride
from siamdetr.data.folder import list_images
from siamdetr.data.images import elongation, read_image
from siamdetr.engine.checkpoint import sample_seed
from siamdetr.errors import BadImageError
from siamdetr.models.detr import pad_images
from siamdetr.pretrain.base import View

log = logging.getLogger(__name__)


def view_config(cfg: Config) -> Any:
    from siamdetr.views import ViewConfig

    p = cfg.pretrain
    return ViewConfig(
        tau=p.tau,
        n_boxes=p.n_proposals,
        short_min=p.short_min,
        short_max=p.short_max,
        max_size=p.max_size,
        jitter=p.jitter,
        sample_proposals=p.sample_proposals,
    )


def too_elongated(image: Tensor, max_aspect: float, path: Path, on_bad: str) -> bool:
    """True (with a warning) for an image so elongated that, its long side capped, the short side would be
    under one feature cell; an error under on_bad_image='error'."""
    problem = elongation(*image.shape[-2:], max_aspect)
    if problem is None:
        return False
    if on_bad == "error":
        raise BadImageError(f"{path}: {problem}")
    log.warning("skipping %s: %s", path, problem)
    return True


class PretrainImages(Dataset):
    """Unlabeled images with their proposals (a ProposalStore keyed by the path relative to `root`)."""

    def __init__(self, root: str | Path, store: Mapping[str, Any], cfg: Config) -> None:
        self.root = Path(root)
        self.paths = list_images(self.root)
        self.store = store
        self.cfg = cfg
        self.epoch = 0
        self.view_cfg = view_config(cfg) if cfg.pretrain.method == "siamese" else None
        self.max_aspect = cfg.pretrain.max_size / backbone_stride(cfg.model)  # the short side keeps one stride

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def proposals(self, key: str) -> Tensor:
        if key not in self.store:
            return torch.zeros((0, 4))
        boxes, _ = self.store[key]
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        return boxes[boxes.isfinite().all(dim=1)]  # a store's NaN rows never reach the views

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from siamdetr.pretrain.single_view import SAMPLES
        from siamdetr.views import sample_view_pair

        key = str(self.paths[index])
        image = read_image(self.root / key, self.cfg.data.on_bad_image)
        if image is None or too_elongated(image, self.max_aspect, self.root / key, self.cfg.data.on_bad_image):
            return None
        generator = torch.Generator().manual_seed(sample_seed(self.cfg.seed, self.epoch, index))
        if self.view_cfg is None:
            sample = SAMPLES[self.cfg.pretrain.method]
            return {"views": [sample(image.as_subclass(Tensor), self.proposals(key), self.cfg, generator)]}
        pair = sample_view_pair(image, self.proposals(key), self.view_cfg, generator)
        return {
            "views": [
                {
                    "view": pair.view1,
                    "plain": pair.plain1,
                    "boxes": pair.boxes1,
                    "query_boxes": pair.query_boxes1,
                    "size": tuple(pair.view1.shape[-2:]),
                },
                {
                    "view": pair.view2,
                    "plain": pair.plain2,
                    "boxes": pair.boxes2,
                    "query_boxes": pair.query_boxes2,
                    "size": tuple(pair.view2.shape[-2:]),
                },
            ]
        }


def collate_views(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Samples → one padded `View` per view position; bad images are dropped and counted."""
    good = [it for it in items if it is not None]
    out: dict[str, Any] = {"skipped": len(items) - len(good), "views": []}
    if not good:
        return out
    for k in range(len(good[0]["views"])):
        vs = [it["views"][k] for it in good]
        images, mask = pad_images([v["view"] for v in vs])
        plain, _ = pad_images([v["plain"] for v in vs])
        out["views"].append(
            View(
                images,
                mask,
                plain,
                [v["boxes"] for v in vs],
                [v["query_boxes"] for v in vs],
                [v["size"] for v in vs],
                torch.cat([v["patches"] for v in vs]) if "patches" in vs[0] else None,
                torch.stack([v["query_keep"] for v in vs]) if "query_keep" in vs[0] else None,
            )
        )
    return out


def view_to(view: View, device: torch.device) -> View:
    return View(
        view.images.to(device),
        view.mask.to(device),
        view.plain.to(device),
        [b.to(device) for b in view.boxes],
        [b.to(device) for b in view.query_boxes],
        view.sizes,
        None if view.patches is None else view.patches.to(device),
        None if view.query_keep is None else view.query_keep.to(device),
    )
