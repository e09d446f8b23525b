"""UP-DETR (Dai et al. 2021) as a baseline: single-view random query patch detection.

Random patches of one view are cropped and encoded by the frozen backbone; their features condition the
queries, which must find the patches in the same view (L_loc) and reconstruct the patch features (L_r).
The official code also masks attention between query groups; we keep the shared decoder unmasked, as
Siamese DETR's own queries are.
"""

from __future__ import annotations

from torch import Tensor

from siamdetr.models.detr import DETR
from siamdetr.pretrain.base import RegionPretrainer, View, normalised_cxcywh
from siamdetr.pretrain.regions import crop_features


class UPDETR(RegionPretrainer):
    def __init__(self, detr: DETR, lambda_loc: float = 1.0, lambda_r: float = 1.0, crop_size: int = 128) -> None:
        super().__init__(detr, lambda_loc, lambda_r)
        self.crop_size = crop_size

    def forward(self, view: View) -> dict[str, Tensor]:
        n = view.boxes[0].shape[0]
        patches = crop_features(self.detr.backbone, view.plain, view.boxes, self.crop_size).view(len(view.boxes), n, -1)
        memory = self.encode(self.backbone_levels(view), view.mask)
        queries = self.region_queries(patches, self.detr.query_embed.num_embeddings)
        return self.detect(memory, queries, normalised_cxcywh(view.boxes, view.sizes), patches)
