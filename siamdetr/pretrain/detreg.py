"""DETReg (Bar et al. 2022) as a baseline, as its code trains it: the ordinary learned queries detect all of
one view's top Selective Search boxes, and the last decoder layer's matched queries regress each box's
embedding, the frozen backbone's pooled C3 (layer2) map of the box's colour-augmented patch (L1, weight 1).
"""

from __future__ import annotations

from torch import Tensor

from siamdetr.models.detr import DETR
from siamdetr.pretrain.base import RegionPretrainer, normalised_cxcywh, patch_features
from siamdetr.pretrain.losses import embedding_l1_loss, layer_suffix
from siamdetr.pretrain.views import View


class DETReg(RegionPretrainer):
    def __init__(self, detr: DETR, lambda_loc: float = 1.0, lambda_embed: float = 1.0, level: str = "C3") -> None:
        super().__init__(detr, lambda_loc, 0.0, target_channels=detr.backbone.level_channels[level])
        self.level = level
        layers = len(detr.transformer.decoder_layers)
        for i in range(layers):
            self.weights.pop(f"loss_region{layer_suffix(i, layers)}")
        self.weights["loss_embed"] = lambda_embed

    def forward(self, view: View) -> dict[str, Tensor]:
        counts = [len(b) for b in view.boxes]
        embeddings = patch_features(self.detr.backbone, view.patches, self.level).split(counts)
        memory = self.encode(self.backbone_levels(view), view.mask)
        losses, hs, indices, _ = self.detect(memory, None, normalised_cxcywh(view.boxes, view.sizes))
        losses["loss_embed"] = embedding_l1_loss(self.sem_head(hs[-1]), list(embeddings), indices[-1])
        return losses
