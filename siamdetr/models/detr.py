"""The detector: backbone → input projection → Transformer (any variant) → class and box heads.

Every variant plugs in through the same `encode` / `decode` seam, so this module, the pretraining methods
and the fine-tuning loop are written once. Parameter names (`transformer.*`, `input_proj.*`,
`query_embed.*`) are the same in pretraining and fine-tuning, so `--init` needs no key surgery.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_convert

from siamdetr.models.backbone import Backbone
from siamdetr.models.heads import MLP, inverse_sigmoid
from siamdetr.models.memory import Memory
from siamdetr.models.position import PositionEmbeddingSine


def pad_images(images: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Images of different sizes → one zero-padded batch [B, 3, H, W] and its mask [B, H, W] (True = pad)."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    mask = torch.ones((len(images), h, w), dtype=torch.bool, device=images[0].device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
        mask[i, : im.shape[-2], : im.shape[-1]] = False
    return batch, mask


class DETR(nn.Module):
    """A DETR-family detector. `focal` picks sigmoid classification (Conditional, Deformable) over softmax
    with a no-object class (Vanilla); `extra_levels` adds strided convs above C5 (Deformable-MS's 4th level);
    `box_bias` is the box head's initial last layer (variants.Variant.box_bias; None: PyTorch's init)."""

    def __init__(
        self,
        backbone: Backbone,
        transformer: nn.Module,
        num_classes: int,
        num_queries: int,
        focal: bool,
        extra_levels: int = 0,
        learned_content: bool = False,
        group_norm: bool = False,
        position_offset: float = 0.0,
        box_bias: tuple[float, float, float, float] | None = None,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        d = transformer.d_model
        self.box_bias = box_bias
        self.backbone = backbone
        self.transformer = transformer
        self.num_classes = num_classes
        self.focal = focal
        self.aux_loss = aux_loss
        self.position = PositionEmbeddingSine(d // 2, offset=position_offset)
        groups = math.gcd(32, d)
        projections = []
        for i in range(len(backbone.num_channels) + extra_levels):
            if i < len(backbone.num_channels):
                conv = nn.Conv2d(backbone.num_channels[i], d, kernel_size=1)
            else:
                cin = backbone.num_channels[-1] if i == len(backbone.num_channels) else d
                conv = nn.Conv2d(cin, d, kernel_size=3, stride=2, padding=1)
            projections.append(nn.Sequential(conv, nn.GroupNorm(groups, d)) if group_norm else nn.Sequential(conv))
        self.input_proj = nn.ModuleList(projections)
        self.num_backbone_levels = len(backbone.num_channels)
        self.query_embed = nn.Embedding(num_queries, d)
        self.query_content = nn.Embedding(num_queries, d) if learned_content else None
        self.class_embed = nn.Linear(d, num_classes if focal else num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.reset_heads()

    def reset_heads(self) -> None:
        """Fresh class and box heads, initialised as the variant's own code does."""
        self.class_embed.reset_parameters()
        if self.focal:
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior p = 0.01
        for layer in self.bbox_embed.layers:
            layer.reset_parameters()
        if self.box_bias is not None:
            last = self.bbox_embed.layers[-1]
            nn.init.zeros_(last.weight)
            with torch.no_grad():
                last.bias.copy_(torch.tensor(self.box_bias))

    def features(self, images: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Projected feature maps, masks and positional embeddings for every level the Transformer uses."""
        return self.project(self.backbone(images, mask), mask)

    def project(
        self, levels: list[tuple[Tensor, Tensor]], mask: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Backbone levels → Transformer inputs (pretraining reuses the frozen levels for region features)."""
        srcs, masks = [], []
        for i, (feat, m) in enumerate(levels):
            srcs.append(self.input_proj[i](feat))
            masks.append(m)
        last = levels[-1][0]
        for proj in self.input_proj[self.num_backbone_levels :]:
            src = proj(last)
            masks.append(F.interpolate(mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0])
            srcs.append(src)
            last = src
        return srcs, masks, [self.position(m).to(s.dtype) for s, m in zip(srcs, masks, strict=True)]

    def encode(self, images: Tensor, mask: Tensor) -> Memory:
        return self.transformer.encode(*self.features(images, mask))

    def queries(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(content, position) of the learned object queries, expanded over the batch."""
        pos = self.query_embed.weight.unsqueeze(0).expand(batch_size, -1, -1)
        content = (
            torch.zeros_like(pos)
            if self.query_content is None
            else self.query_content.weight.unsqueeze(0).expand(batch_size, -1, -1)
        )
        return content, pos

    def predict_boxes(self, hs: Tensor, refs: Tensor | None) -> Tensor:
        """Box head on decoder states; with reference points it predicts offsets from them."""
        raw = self.bbox_embed(hs)
        if refs is not None:
            raw = torch.cat([raw[..., :2] + inverse_sigmoid(refs), raw[..., 2:]], dim=-1)
        return raw.sigmoid()

    def forward(self, images: Tensor, mask: Tensor) -> dict[str, Any]:
        memory = self.encode(images, mask)
        content, pos = self.queries(images.shape[0])
        hs, refs = self.transformer.decode(memory, content, pos)
        logits = self.class_embed(hs)
        boxes = self.predict_boxes(hs, refs)
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1], strict=True)
            ]
        return out


@torch.no_grad()
def postprocess(
    outputs: dict[str, Tensor], orig_sizes: Tensor, focal: bool, top_k: int = 100
) -> list[dict[str, Tensor]]:
    """Raw outputs → per image scores, labels and xyxy boxes in original pixels, clipped to the image.

    Softmax models take each query's best real class; sigmoid models take the top-k (query, class) pairs,
    as Conditional and Deformable DETR evaluate.
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    h, w = orig_sizes.unbind(1)
    scale = torch.stack([w, h, w, h], dim=1).to(boxes.dtype)[:, None, :]
    xyxy = torch.minimum((box_convert(boxes, "cxcywh", "xyxy") * scale).clamp(min=0), scale)  # inside the image
    if focal:
        prob = logits.sigmoid()
        k = min(top_k, prob.shape[1] * prob.shape[2])
        scores, flat = prob.flatten(1).topk(k, dim=1)
        query = flat // prob.shape[2]
        labels = flat % prob.shape[2]
        xyxy = torch.gather(xyxy, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    else:
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy, strict=True)]
