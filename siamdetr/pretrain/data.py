"""Pretraining samples: unlabeled images + their offline proposals → two views (Siamese DETR) or one view
(UP-DETR, DETReg), batched into `View`s.

Every sample's randomness comes from a generator seeded by (seed, epoch, index), so a sample is the same
whatever the worker count, and a resumed epoch replays exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from siamdetr.config import Config
from siamdetr.data.folder import list_images
from siamdetr.data.images import read_image
from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamdetr.models.detr import pad_images
from siamdetr.pretrain.base import View


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


TOP_K_SAMPLE = 32  # the same proposal pool as the two-view path (views.ViewConfig.top_k_sample)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**62


def single_view(image: Tensor, proposals: Tensor, cfg: Config, generator: torch.Generator) -> dict[str, Any]:
    """The whole image resized and maybe flipped, colour-augmented, with n of its proposals as targets."""
    from siamdetr.views import batched_colour_augment, choose_proposals, duplicate_boxes, proposals_inside

    p = cfg.pretrain
    h, w = image.shape[-2:]
    short = int(torch.randint(p.short_min, p.short_max + 1, (), generator=generator))
    scale = min(short / min(h, w), p.max_size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    plain = TF.resize(image, [nh, nw], antialias=True).float() / 255
    boxes = proposals * scale
    if torch.rand((), generator=generator) < 0.5:
        plain = plain.flip(-1)
        boxes = torch.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], dim=1)
    frame = torch.tensor([0.0, 0.0, nw, nh])
    kept = proposals_inside(boxes, frame, min_frac=0.0)
    chosen = choose_proposals(kept, p.n_proposals, p.sample_proposals, TOP_K_SAMPLE, generator)
    sources = chosen if len(chosen) else frame[None]  # no proposal at all: the frame itself
    boxes = torch.cat([chosen, duplicate_boxes(sources, p.n_proposals - len(chosen), frame, generator)])
    coloured = batched_colour_augment(plain[None], generator)[0]
    return {
        "view": normalise(coloured),
        "plain": normalise(plain),
        "boxes": boxes,
        "query_boxes": boxes,
        "size": (nh, nw),
    }


def normalise(x: Tensor) -> Tensor:
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


class PretrainImages(Dataset):
    """Unlabeled images with their proposals (a ProposalStore keyed by the path relative to `root`)."""

    def __init__(self, root: str | Path, store: Any, cfg: Config, two_views: bool) -> None:
        self.root = Path(root)
        self.paths = list_images(self.root)
        self.store = store
        self.cfg = cfg
        self.two_views = two_views
        self.epoch = 0
        self.view_cfg = view_config(cfg) if two_views else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def proposals(self, key: str) -> Tensor:
        if key not in self.store:
            return torch.zeros((0, 4))
        boxes, _ = self.store[key]
        return torch.as_tensor(boxes, dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from siamdetr.views import sample_view_pair

        key = str(self.paths[index])
        image = read_image(self.root / key, self.cfg.data.on_bad_image)
        if image is None:
            return None
        generator = torch.Generator().manual_seed(sample_seed(self.cfg.seed, self.epoch, index))
        if not self.two_views:
            return {"views": [single_view(image.as_subclass(Tensor), self.proposals(key), self.cfg, generator)]}
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
            View(images, mask, plain, [v["boxes"] for v in vs], [v["query_boxes"] for v in vs], [v["size"] for v in vs])
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
    )
