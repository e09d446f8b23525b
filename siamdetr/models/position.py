"""Sine positional embedding of a padded feature map (DETR's, normalised to the unpadded extent)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """[B, H, W] padding mask → [B, 2 * num_pos_feats, H, W]; y features first, then x."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, offset: float = 0.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.offset = offset  # Deformable DETR uses -0.5 (pixel centres)
        self.scale = 2 * math.pi

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = (~mask).float()
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        eps = 1e-6
        y = (y + self.offset) / (y[:, -1:, :] + eps) * self.scale
        x = (x + self.offset) / (x[:, :, -1:] + eps) * self.scale
        return torch.cat(
            [sine(y, self.num_pos_feats, self.temperature), sine(x, self.num_pos_feats, self.temperature)], dim=-1
        ).permute(0, 3, 1, 2)


def sine(coord: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Interleaved sin/cos features of a coordinate tensor [...] → [..., num_feats]."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coord.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = coord.unsqueeze(-1) / dim_t
    return torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=-1).flatten(-2)


def box_sine(boxes: Tensor, num_feats: int = 128, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of normalised reference points/boxes [..., 2 or 4] → [..., k * num_feats].

    Conditional DETR's spatial query and Deformable DETR's query position both embed points this way
    (x, y order swapped to y, x to match the feature-map embedding).
    """
    parts = [sine(boxes[..., i] * 2 * math.pi, num_feats, temperature) for i in range(boxes.shape[-1])]
    if len(parts) >= 2:
        parts[0], parts[1] = parts[1], parts[0]
    return torch.cat(parts, dim=-1)
