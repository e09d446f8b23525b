"""What the three pretraining methods share: a frozen-backbone DETR, region features from that backbone,
region-conditioned queries, and the localisation / region-feature losses of one decoding pass.

Region features, batched over every box of the batch: object-level z is RoIAlign on the backbone's feature
maps (paper Eq. 4); crop-level p is each box cut out of the image tensor by RoIAlign at a fixed size,
colour-augmented per crop, run through the backbone and pooled (Eq. 5), in one batched forward pass. On a
multi-level backbone (Deform-MS: C3–C5) each level is pooled on its own and concatenated, as the official
code. UP-DETR's and DETReg's patches are cut in the dataset (`pretrain/single_view.py`) and only pooled here.

A method is one module whose `forward(batch)` returns a dict of named, unweighted losses; `weights` says
how they add up. The DETR inside keeps fine-tuning's parameter names, so its state dict is what
`siamdetr finetune --init` loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, roi_align

from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamdetr.models.backbone import Backbone
from siamdetr.models.criterion import Indices, SetCriterion, num_boxes_across_processes
from siamdetr.models.detr import DETR
from siamdetr.models.heads import MLP
from siamdetr.models.matcher import HungarianMatcher
from siamdetr.models.memory import Memory
from siamdetr.pretrain.losses import layer_suffix, region_losses_per_layer, set_losses_per_layer
from siamdetr.pretrain.views import View

LOC_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}  # the matcher's costs too, as in the official code


# ------------------------------------------------------------------------------------------ region features
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


# ------------------------------------------------------------------------------------------ detection
def normalised_cxcywh(boxes: list[Tensor], sizes: list[tuple[int, int]]) -> list[Tensor]:
    out = []
    for b, (h, w) in zip(boxes, sizes, strict=True):
        scale = torch.tensor([w, h, w, h], dtype=b.dtype, device=b.device)
        out.append(box_convert(b, "xyxy", "cxcywh") / scale)
    return out


class RegionPretrainer(nn.Module):
    """A DETR with a frozen backbone, an objectness head (object / no object, softmax with eos 0.1, for every
    variant as in the official code), a box head shared with fine-tuning and f_sem (d → d → C).

    C, the width of the region features (z, p), is C5's unless `region_channels` says otherwise (Siamese DETR
    on Deform-MS: C3 + C4 + C5); f_sem predicts `target_channels` if given (DETReg on Deform-MS: C3's).
    region_proj and f_sem are pretraining-only: not in `pretrained_state`.
    """

    def __init__(
        self,
        detr: DETR,
        lambda_loc: float,
        lambda_r: float,
        region_channels: int | None = None,
        target_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.detr = detr
        for p in detr.backbone.parameters():
            p.requires_grad_(False)
        d = detr.transformer.d_model
        channels = region_channels or detr.backbone.num_channels[-1]
        self.region_proj = nn.Linear(channels, d)  # region feature → query position (Eq. 7's z + φ_q)
        self.objectness = nn.Linear(d, 2)
        self.sem_head = MLP(d, d, target_channels or channels, 2)
        self.criterion = SetCriterion(
            1, HungarianMatcher(1.0, 5.0, 2.0, focal=False), LOC_WEIGHTS, eos_coef=0.1, focal=False
        )
        layers = len(detr.transformer.decoder_layers)
        self.weights = {}
        for i in range(layers):
            s = layer_suffix(i, layers)
            self.weights |= {f"{k}{s}": lambda_loc * w for k, w in LOC_WEIGHTS.items()}
            self.weights[f"loss_region{s}"] = lambda_r

    def train(self, mode: bool = True) -> RegionPretrainer:
        super().train(mode)
        self.detr.backbone.eval()  # frozen: FrozenBatchNorm anyway, but keep dropout-free semantics explicit
        return self

    @torch.no_grad()
    def backbone_levels(self, view: View) -> list[tuple[Tensor, Tensor]]:
        return self.detr.backbone(view.images, view.mask)

    def encode(self, levels: list[tuple[Tensor, Tensor]], mask: Tensor) -> Memory:
        return self.detr.transformer.encode(*self.detr.project(levels, mask))

    def region_queries(self, features: Tensor, num_queries: int) -> Tensor:
        """[B, n, C] region features → [B, Q, d]: projected, each region repeated over Q/n queries."""
        region = self.region_proj(features)
        return region.repeat(1, math.ceil(num_queries / region.shape[1]), 1)[:, :num_queries]

    def detect(
        self, memory: Memory, extra_pos: Tensor | None, target_boxes: list[Tensor]
    ) -> tuple[dict[str, Tensor], Tensor, list[Indices], float]:
        """Decode the learned queries (+ region conditioning) against `memory`: L_loc of every decoder layer,
        the decoder states [L, B, Q, d], each layer's matching and the number of target boxes."""
        content, pos = self.detr.queries(memory.tokens.shape[0])
        if extra_pos is not None:
            pos = pos + extra_pos
        hs, refs = self.detr.transformer.decode(memory, content, pos)
        logits, boxes = self.objectness(hs), self.detr.predict_boxes(hs, refs)
        targets = [
            {"labels": torch.zeros(len(b), dtype=torch.int64, device=b.device), "boxes": b} for b in target_boxes
        ]
        losses, indices = set_losses_per_layer(self.criterion, logits, boxes, targets)
        return losses, hs, indices, num_boxes_across_processes(targets, hs.device)

    def detect_regions(
        self, memory: Memory, extra_pos: Tensor | None, target_boxes: list[Tensor], target_features: Tensor | None
    ) -> dict[str, Tensor]:
        """L_loc and, given target features, L_r, for every decoder layer."""
        losses, hs, indices, num_boxes = self.detect(memory, extra_pos, target_boxes)
        if target_features is not None:
            losses |= region_losses_per_layer(self.sem_head(hs), target_features, indices, num_boxes)
        return losses

    def pretrained_state(self) -> dict[str, Tensor]:
        """The DETR's parameters under fine-tuning's names: what a pretraining checkpoint hands on."""
        return self.detr.state_dict()
