"""The encoder output every DETR variant hands to its decoder (and to the pretraining heads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Memory:
    """Encoder memory of one batch, all feature levels flattened into one token axis.

    Vanilla and Conditional DETR have one level; Deformable-MS has several. Pretraining methods attend to
    `tokens` from another view's queries, and Siamese DETR's L_g pools them (pretrain/losses.py).
    """

    tokens: Tensor  # [B, S, C] encoder output
    mask: Tensor  # [B, S] bool, True = padding
    pos: Tensor  # [B, S, C] positional (+ level) embedding of each token
    spatial_shapes: Tensor  # [L, 2] long, (H, W) of each level
    level_start_index: Tensor  # [L] long, first token of each level
    valid_ratios: Tensor  # [B, L, 2] float, (w, h) fraction of each level that is not padding


def flatten_levels(
    srcs: list[Tensor], masks: list[Tensor], pos: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """[B, C, H, W] per level → flattened tokens, mask, pos, spatial shapes, level starts, valid ratios."""
    shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    flat_mask = torch.cat([m.flatten(1) for m in masks], 1)
    flat_pos = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1)
    ratios = torch.stack([valid_ratio(m) for m in masks], 1)
    return tokens, flat_mask, flat_pos, shapes, starts, ratios


def valid_ratio(mask: Tensor) -> Tensor:
    """[B, H, W] padding mask → [B, 2] (w, h) fraction of the level covered by the image."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / h
    valid_w = (~mask[:, 0, :]).sum(1).float() / w
    return torch.stack([valid_w, valid_h], -1)
