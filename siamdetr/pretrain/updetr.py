"""UP-DETR (Dai et al. 2021) as a baseline: single-view random query patch detection, as its code trains it.

Patches of one view (random boxes drawn per sample, colour-augmented on their own: `pretrain/single_view.py`)
are encoded by the frozen backbone; their pooled C5 features, projected, condition the queries, which must
find the patches in the same view (L_loc) and reconstruct the patch features (normalised L2, weight 1, every
decoder layer). A random 10 % of the queries lose their patch feature and keep only the learned query
embedding (UP-DETR's mask_ratio). The official code also masks attention between query groups; we keep the
shared decoder unmasked, as Siamese DETR's own queries are.
"""

from __future__ import annotations

from torch import Tensor

from siamdetr.models.detr import DETR
from siamdetr.pretrain.base import RegionPretrainer, normalised_cxcywh, patch_features
from siamdetr.pretrain.views import View


class UPDETR(RegionPretrainer):
    def __init__(self, detr: DETR, lambda_loc: float = 1.0, lambda_r: float = 1.0) -> None:
        super().__init__(detr, lambda_loc, lambda_r)

    def forward(self, view: View) -> dict[str, Tensor]:
        n = view.boxes[0].shape[0]
        patches = patch_features(self.detr.backbone, view.patches).view(len(view.boxes), n, -1)
        memory = self.encode(self.backbone_levels(view), view.mask)
        queries = self.region_queries(patches, self.detr.query_embed.num_embeddings)
        if view.query_keep is not None:
            queries = queries * view.query_keep[..., None]
        return self.detect_regions(memory, queries, normalised_cxcywh(view.boxes, view.sizes), patches)
