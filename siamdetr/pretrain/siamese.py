"""Siamese DETR (paper §3.3): multi-view region detection and multi-view semantic discrimination.

Branch 1→2: region features z1 of view 1's boxes condition the queries (Eq. 6–7: q1 = f_q(z1 + φ_q)) that
attend to view 2's encoder memory, locate the same regions in view 2 (L_loc, Eq. 9) and predict their
crop-level features p1 (L_r, Eq. 12); branch 2→1 is symmetric and the two are averaged. L_g (Eq. 11) pulls
the pooled memories of the two views together. Table 3's ablations are the `region_detection` and
`semantic` switches.

Every backbone level the Transformer gets is used, as the official code: on Deform-MS, z and p are C3, C4
and C5 each pooled and concatenated (ΣC channels), and L_g pools the memory of those three levels one by one
(3d into its projector). Single-level variants use C5 alone.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from siamdetr.models.detr import DETR
from siamdetr.pretrain.base import RegionPretrainer, crop_features, normalised_cxcywh, object_features_per_level
from siamdetr.pretrain.losses import SimSiamHead, global_loss, mean_of, pooled_memory
from siamdetr.pretrain.views import View

RegionDetection = Literal["multi", "single"]
Semantic = Literal["none", "G", "R-O", "R-C", "R-C+G"]


class SiameseDETR(RegionPretrainer):
    def __init__(
        self,
        detr: DETR,
        lambda_loc: float = 1.0,
        lambda_r: float = 3.0,
        lambda_g: float = 10.0,
        crop_size: int = 128,
        region_detection: RegionDetection = "multi",
        semantic: Semantic = "R-C+G",
        crop_colour: nn.Module | None = None,
    ) -> None:
        super().__init__(
            detr,
            lambda_loc,
            lambda_r if semantic != "none" and semantic != "G" else 0.0,
            region_channels=sum(detr.backbone.num_channels),
        )
        self.crop_size = crop_size
        self.region_detection = region_detection
        self.semantic = semantic
        self.crop_colour = crop_colour
        self.strides = [float(s) for s in detr.backbone.strides]
        d = detr.transformer.d_model
        self.global_head = SimSiamHead(d * detr.num_backbone_levels, d) if "G" in semantic else None
        if self.global_head is not None:
            self.weights["loss_global"] = lambda_g

    def region_targets(self, view: View, feature_maps: list[Tensor]) -> Tensor | None:
        """What f_sem must predict for each box: crop-level p (R-C), object-level z (R-O), or nothing."""
        n = view.boxes[0].shape[0]
        if self.semantic.startswith("R-C"):
            feats = crop_features(
                self.detr.backbone, view.plain, view.boxes, self.crop_size, self.crop_colour, all_levels=True
            )
        elif self.semantic == "R-O":
            feats = object_features_per_level(feature_maps, self.strides, view.boxes)
        else:
            return None
        return feats.view(len(view.boxes), n, -1)

    def forward(self, view1: View, view2: View) -> dict[str, Tensor]:
        num_queries = self.detr.query_embed.num_embeddings
        levels = [self.backbone_levels(v) for v in (view1, view2)]
        memories = [self.encode(lv, v.mask) for lv, v in zip(levels, (view1, view2), strict=True)]
        views, branches = (view1, view2), []
        for src, dst in ((0, 1), (1, 0)):
            if self.region_detection == "single":
                dst = src
            fmaps, view = [f for f, _ in levels[src]], views[src]
            n = view.boxes[0].shape[0]
            z = object_features_per_level(fmaps, self.strides, view.query_boxes).view(len(view.boxes), n, -1)
            branches.append(
                self.detect_regions(
                    memories[dst],
                    self.region_queries(z, num_queries),
                    normalised_cxcywh(views[dst].boxes, views[dst].sizes),
                    self.region_targets(view, fmaps),
                )
            )
        losses = mean_of(branches)
        if self.global_head is not None:
            p1, z1 = self.global_head(pooled_memory(memories[0], self.detr.num_backbone_levels))
            p2, z2 = self.global_head(pooled_memory(memories[1], self.detr.num_backbone_levels))
            losses["loss_global"] = global_loss(p1, z1, p2, z2)
        return losses
