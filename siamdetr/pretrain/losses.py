"""Loss terms of the pretext tasks, each one function (weights are applied by the caller).

L_loc reuses the fine-tuning SetCriterion layer by layer so the matching of each decoder layer is also
available to L_r; L_r and L_g follow the paper's Eq. 11-12 and the official code (docs/method.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from siamdetr.models.criterion import (
    Indices,
    SetCriterion,
    matched_queries,
    matched_targets,
    num_boxes_across_processes,
)
from siamdetr.models.memory import Memory


def layer_suffix(i: int, num_layers: int) -> str:
    """SetCriterion's naming: the final layer has no suffix, auxiliary layer i has `_i`."""
    return "" if i == num_layers - 1 else f"_{i}"


def set_losses_per_layer(
    criterion: SetCriterion, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]
) -> tuple[dict[str, Tensor], list[Indices]]:
    """loss_ce / loss_bbox / loss_giou of every decoder layer ([L, B, Q, ...] inputs) and each layer's matching."""
    num_boxes = num_boxes_across_processes(targets, logits.device)
    losses: dict[str, Tensor] = {}
    all_indices = []
    for i in range(logits.shape[0]):
        layer = {"pred_logits": logits[i], "pred_boxes": boxes[i]}
        indices = criterion.matcher(layer, targets)
        suffix = layer_suffix(i, logits.shape[0])
        losses |= {f"{k}{suffix}": v for k, v in criterion.layer_losses(layer, targets, indices, num_boxes).items()}
        all_indices.append(indices)
    return losses, all_indices


def region_loss(predicted: Tensor, target_features: Tensor, indices: Indices, num_boxes: float) -> Tensor:
    """Normalised L2 distance ‖norm(f_sem(q̂)) − norm(p)‖² over matched queries, / num_boxes (Eq. 12).

    predicted: [B, Q, C] of one decoder layer; target_features: [B, n, C] (no gradient: frozen backbone).
    """
    pred = F.normalize(predicted[matched_queries(indices)], dim=-1)
    targets = [{"feat": t} for t in target_features]
    goal = F.normalize(matched_targets(targets, indices, "feat"), dim=-1).detach()
    return ((pred - goal) ** 2).sum() / num_boxes


def region_losses_per_layer(
    predicted: Tensor, target_features: Tensor, all_indices: list[Indices], num_boxes: float
) -> dict[str, Tensor]:
    return {
        f"loss_region{layer_suffix(i, len(all_indices))}": region_loss(predicted[i], target_features, ind, num_boxes)
        for i, ind in enumerate(all_indices)
    }


def embedding_l1_loss(predicted: Tensor, target_features: list[Tensor], indices: Indices) -> Tensor:
    """DETReg's embedding loss: L1 between predicted and frozen-backbone embeddings of the matched regions,
    averaged over their elements as DETReg does (not divided by the number of boxes).

    predicted: [B, Q, C] of one decoder layer; target_features: [n_i, C] per image (no gradient).
    """
    targets = [{"feat": t} for t in target_features]
    goal = matched_targets(targets, indices, "feat").detach()
    return F.l1_loss(predicted[matched_queries(indices)], goal)


class SimSiamHead(nn.Module):
    """L_g's head as the official code: projector in → d → d → d (3x Linear-BN, ReLU between, biases and affine
    BatchNorm throughout) and predictor d → d → d (Linear-BN-ReLU-Linear, no bottleneck).

    `in_dim` is d per pooled memory level (Deform-MS: 3d); the official hidden width is 256 = d_model in every
    config, so it is d here too.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(in_dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim),
            nn.BatchNorm1d(dim),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim)
        )

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """(p, z) = (predictor(projector(x)), projector(x))."""
        z = self.projector(pooled)
        return self.predictor(z), z


def pooled_memory(memory: Memory, levels: int) -> Tensor:
    """Each of the first `levels` levels averaged over its non-padding tokens, concatenated: [B, levels·C].

    Per level, as the official code pools Deform-MS's C3–C5 memory for L_g (its extra strided level is left
    out); padding must not leak into global features.
    """
    sizes = (memory.spatial_shapes[:, 0] * memory.spatial_shapes[:, 1]).tolist()
    tokens, masks = memory.tokens.split(sizes, dim=1), memory.mask.split(sizes, dim=1)
    return torch.cat([masked_mean(t, m) for t, m in zip(tokens[:levels], masks[:levels], strict=True)], dim=-1)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    keep = (~mask).unsqueeze(-1).to(tokens.dtype)
    return (tokens * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def global_loss(p1: Tensor, z1: Tensor, p2: Tensor, z2: Tensor) -> Tensor:
    """Symmetric negative cosine, stop-gradient on the targets: 0.5·(2−2cos(p1, sg z2)) + 0.5·(2−2cos(p2, sg z1))."""

    def half(p: Tensor, z: Tensor) -> Tensor:
        return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()

    return 0.5 * half(p1, z2) + 0.5 * half(p2, z1)


def mean_of(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Key-wise mean of the two branches of a symmetric loss (0.5 / 0.5)."""
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}
