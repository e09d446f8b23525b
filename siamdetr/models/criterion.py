"""DETR's set loss: match queries to targets, then score classes and boxes of the matched pairs.

Two classification styles share the box terms: softmax cross-entropy with an extra "no object" logit
(Vanilla DETR, the pretraining objectness head) and per-class sigmoid focal loss (Conditional and
Deformable DETR), where "no object" is simply every class being off.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from siamdetr.models.matcher import HungarianMatcher

Indices = list[tuple[Tensor, Tensor]]
Outputs = dict[str, Tensor | list[dict[str, Tensor]]]


def num_boxes_across_processes(targets: list[dict[str, Tensor]], device: torch.device | str) -> float:
    """Average number of target boxes per process, at least 1.

    Every process divides its sums by the same number, so the averaged gradient weights each box equally
    however the boxes happen to be spread over the processes.
    """
    num_boxes = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_boxes)
        world_size = dist.get_world_size()
    return max(num_boxes.item() / world_size, 1.0)


def weighted_total(losses: dict[str, Tensor], weight_dict: dict[str, float]) -> Tensor:
    """The scalar to back-propagate: the weighted sum of the terms that have a weight (the rest, e.g.
    class_error, are only logged); fine-tuning and every pretraining method use it."""
    device = next(iter(losses.values())).device
    return sum((losses[k] * w for k, w in weight_dict.items() if k in losses), torch.zeros((), device=device))


def aux_weights(base: dict[str, float], num_aux: int) -> dict[str, float]:
    """Give every auxiliary decoder layer the final layer's weights, under the `{name}_{i}` keys of SetCriterion."""
    return base | {f"{k}_{i}": weight for i in range(num_aux) for k, weight in base.items()}


def matched_queries(indices: Indices) -> tuple[Tensor, Tensor]:
    """(image index, query index) of every matched pair of the batch, to index [B, Q, ...] predictions."""
    image_indices = torch.cat([torch.full_like(query, image) for image, (query, _) in enumerate(indices)])
    query_indices = torch.cat([query for query, _ in indices])
    return image_indices, query_indices


def matched_targets(targets: list[dict[str, Tensor]], indices: Indices, key: str) -> Tensor:
    """targets[i][key] of every matched pair, in the order of matched_queries."""
    return torch.cat([t[key][target] for t, (_, target) in zip(targets, indices, strict=True)])


class SetCriterion(nn.Module):
    """Unweighted DETR losses of the final decoder layer and of every auxiliary one, each matched on its own."""

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float = 0.1,
        focal: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.focal = focal
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        # Down-weights "no object", which most queries are, so it does not swamp the real classes.
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: Outputs, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """loss_ce, loss_bbox, loss_giou and class_error of the final layer; loss_*_{i} for aux layer i."""
        num_boxes = num_boxes_across_processes(targets, outputs["pred_logits"].device)
        indices = self.matcher(outputs, targets)
        losses = self.layer_losses(outputs, targets, indices, num_boxes)
        losses["class_error"] = self.class_error(outputs["pred_logits"], targets, indices)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self.layer_losses(aux, targets, self.matcher(aux, targets), num_boxes)
            losses |= {f"{k}_{i}": loss for k, loss in aux_losses.items()}
        return losses

    def layer_losses(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """loss_ce, loss_bbox and loss_giou of one decoder layer under the given matching."""
        return {
            "loss_ce": self.classification_loss(outputs["pred_logits"], targets, indices, num_boxes),
            **self.box_losses(outputs["pred_boxes"], targets, indices, num_boxes),
        }

    def target_classes(self, logits: Tensor, targets: list[dict[str, Tensor]], indices: Indices) -> Tensor:
        """[B, Q] class each query is trained towards; num_classes ("no object") where unmatched."""
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        classes[matched_queries(indices)] = matched_targets(targets, indices, "labels")
        return classes

    def classification_loss(
        self, logits: Tensor, targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float
    ) -> Tensor:
        """Softmax CE averaged over queries, or sigmoid focal loss summed and divided by num_boxes.

        The focal sum over queries and classes / num_boxes equals Deformable DETR's `.mean(1).sum() / num_boxes * Q`.
        """
        classes = self.target_classes(logits, targets, indices)
        if not self.focal:
            return F.cross_entropy(logits.transpose(1, 2), classes, weight=self.empty_weight)
        one_hot = F.one_hot(classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
        focal = sigmoid_focal_loss(logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        return focal.sum() / num_boxes

    def box_losses(
        self, boxes: Tensor, targets: list[dict[str, Tensor]], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """L1 on (cx, cy, w, h) and 1 - GIoU of the matched pairs, each summed and divided by num_boxes."""
        matched_boxes = boxes[matched_queries(indices)]
        target_boxes = matched_targets(targets, indices, "boxes")
        giou = generalized_box_iou(
            box_convert(matched_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        ).diagonal()
        return {
            "loss_bbox": F.l1_loss(matched_boxes, target_boxes, reduction="sum") / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    @torch.no_grad()
    def class_error(self, logits: Tensor, targets: list[dict[str, Tensor]], indices: Indices) -> Tensor:
        """100 - top-1 accuracy (%) of the matched queries; 0 when the batch has no targets."""
        target_labels = matched_targets(targets, indices, "labels")
        if target_labels.numel() == 0:
            return torch.zeros((), device=logits.device)
        predicted = logits[matched_queries(indices)].argmax(-1)
        return 100 - 100 * (predicted == target_labels).float().mean()
