"""DETReg (Bar et al. 2022) as a baseline: detect the top unsupervised proposals of one view with the
ordinary learned queries, and regress each detected region's frozen-backbone embedding (L1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from siamdetr.models.criterion import num_boxes_across_processes
from siamdetr.models.detr import DETR
from siamdetr.pretrain.base import RegionPretrainer, View, normalised_cxcywh
from siamdetr.pretrain.losses import embedding_l1_loss, layer_suffix, set_losses_per_layer
from siamdetr.pretrain.regions import crop_features


class DETReg(RegionPretrainer):
    def __init__(self, detr: DETR, lambda_loc: float = 1.0, lambda_r: float = 1.0, crop_size: int = 128) -> None:
        super().__init__(detr, lambda_loc, 0.0)
        self.crop_size = crop_size
        layers = len(detr.transformer.decoder_layers)
        for i in range(layers):
            s = layer_suffix(i, layers)
            self.weights.pop(f"loss_region{s}")
            self.weights[f"loss_embed{s}"] = lambda_r

    def forward(self, view: View) -> dict[str, Tensor]:
        n = view.boxes[0].shape[0]
        embeddings = crop_features(self.detr.backbone, view.plain, view.boxes, self.crop_size).view(
            len(view.boxes), n, -1
        )
        memory = self.encode(self.backbone_levels(view), view.mask)
        content, pos = self.detr.queries(memory.tokens.shape[0])
        hs, refs = self.detr.transformer.decode(memory, content, pos)
        logits, boxes = self.objectness(hs), self.detr.predict_boxes(hs, refs)
        targets = [
            {"labels": torch.zeros(len(b), dtype=torch.int64, device=b.device), "boxes": b}
            for b in normalised_cxcywh(view.boxes, view.sizes)
        ]
        losses, all_indices = set_losses_per_layer(self.criterion, logits, boxes, targets)
        num_boxes = num_boxes_across_processes(targets, hs.device)
        predicted = self.sem_head(hs)
        for i, indices in enumerate(all_indices):
            losses[f"loss_embed{layer_suffix(i, len(all_indices))}"] = embedding_l1_loss(
                predicted[i], embeddings, indices, num_boxes
            )
        return losses
