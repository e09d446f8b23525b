"""One-to-one assignment of predicted queries to ground-truth boxes (DETR's bipartite matching).

The set loss is only defined once every target owns exactly one query; the Hungarian algorithm picks the
assignment with the lowest total cost, and the queries left over are trained towards "no object".
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou

from siamdetr.errors import NonFiniteLoss


def softmax_class_cost(logits: Tensor, target_labels: Tensor) -> Tensor:
    """-p(target class): the 1 - p of DETR without the constant, which does not change the assignment."""
    return -logits.softmax(-1)[:, target_labels]


def focal_class_cost(logits: Tensor, target_labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """Focal loss of calling the query the target class minus that of calling it background (Deformable DETR).

    log-sigmoid stands in for log(p) and log(1 - p) so that confident logits cost a finite amount.
    """
    logits = logits[:, target_labels]
    prob = logits.sigmoid()
    positive = alpha * (1 - prob) ** gamma * F.softplus(-logits)
    negative = (1 - alpha) * prob**gamma * F.softplus(logits)
    return positive - negative


def solve_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Hungarian solution of one image's [Q, n] cost as int64 (query indices, target indices)."""
    query_indices, target_indices = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(query_indices, dtype=torch.int64), torch.as_tensor(target_indices, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """Optimal query-to-target assignment per image under a weighted class + L1 + GIoU cost."""

    def __init__(
        self,
        cost_class: float = 1,
        cost_bbox: float = 5,
        cost_giou: float = 2,
        focal: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal = focal
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def class_cost(self, logits: Tensor, target_labels: Tensor) -> Tensor:
        if self.focal:
            return focal_class_cost(logits, target_labels, self.focal_alpha, self.focal_gamma)
        return softmax_class_cost(logits, target_labels)

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Return, per image, (query indices, target indices) of the matched pairs, sorted by query.

        The cost of every query against every target of the batch is one matrix; only its per-image blocks
        are solved, so cross-image entries are computed but never used (cheaper than a Python loop on GPU).
        Costs are taken in float32 because half-precision costs tie too often to give a stable assignment.
        """
        batch_size, num_queries = outputs["pred_logits"].shape[:2]
        logits = outputs["pred_logits"].flatten(0, 1).float()
        boxes = outputs["pred_boxes"].flatten(0, 1).float()
        target_labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets]).float()

        cost = (
            self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
            + self.cost_class * self.class_cost(logits, target_labels)
            - self.cost_giou
            * generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
        )
        cost = cost.view(batch_size, num_queries, len(target_labels)).cpu()
        if not torch.isfinite(cost).all():  # the assignment solver would fail on it with a cryptic message
            raise NonFiniteLoss("the predictions are not finite: training diverged (lower the learning rate)")

        sizes = [len(t["boxes"]) for t in targets]
        return [solve_assignment(block[image]) for image, block in enumerate(cost.split(sizes, -1))]
