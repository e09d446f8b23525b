"""The registry of DETR variants: what differs between Vanilla, Conditional, Deform-SS and Deform-MS.

Adding a fifth variant is one entry here plus its Transformer module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from siamdetr.config import ModelConfig
from siamdetr.models.backbone import Backbone
from siamdetr.models.detr import DETR


@dataclass(frozen=True)
class Variant:
    focal: bool  # sigmoid focal classification (else softmax with a no-object class)
    levels: tuple[str, ...]  # backbone levels fed to the Transformer
    extra_levels: int  # strided convs above C5 (Deform-MS's 4th level)
    deformable: bool
    dim_feedforward: int
    loss_ce: float  # classification loss weight of the official configs
    # the box head's last layer at init, as each variant's own code has it: None keeps PyTorch's Linear init
    # (DETR's detr.py); else a zero weight and this bias over (cx, cy, w, h) (Conditional DETR: zeros, so every
    # box starts at its reference point; Deformable DETR: w, h at sigmoid(-2), small boxes)
    box_bias: tuple[float, float, float, float] | None


VARIANTS: dict[str, Variant] = {
    "vanilla": Variant(False, ("C5",), 0, False, 2048, 1.0, None),
    "conditional": Variant(True, ("C5",), 0, False, 2048, 2.0, (0.0, 0.0, 0.0, 0.0)),
    "deform_ss": Variant(True, ("C5",), 0, True, 1024, 2.0, (0.0, 0.0, -2.0, -2.0)),
    "deform_ms": Variant(True, ("C3", "C4", "C5"), 1, True, 1024, 2.0, (0.0, 0.0, -2.0, -2.0)),
}


def build_transformer(cfg: ModelConfig) -> nn.Module:
    v = VARIANTS[cfg.variant]
    ffn = cfg.dim_feedforward or v.dim_feedforward
    sizes = dict(
        d_model=cfg.d_model,
        nhead=cfg.nheads,
        num_encoder_layers=cfg.enc_layers,
        num_decoder_layers=cfg.dec_layers,
        dim_feedforward=ffn,
        dropout=cfg.dropout,
    )
    if cfg.variant == "vanilla":
        from siamdetr.models.transformer import Transformer

        return Transformer(**sizes)
    if cfg.variant == "conditional":
        from siamdetr.models.conditional import ConditionalTransformer

        return ConditionalTransformer(**sizes)
    from siamdetr.models.deformable import DeformableTransformer

    return DeformableTransformer(**sizes, n_levels=len(v.levels) + v.extra_levels, n_points=cfg.n_points)


def build_detector(cfg: ModelConfig, num_classes: int) -> DETR:
    """A detector for `num_classes` classes, with the backbone weights from cfg.backbone_checkpoint if set."""
    v = VARIANTS[cfg.variant]
    backbone = Backbone(
        cfg.backbone,
        v.levels,
        cfg.train_backbone,
        cfg.backbone_checkpoint,
        small_width=cfg.small_width,
        dilation=cfg.dilation,
    )
    return DETR(
        backbone,
        build_transformer(cfg),
        num_classes,
        cfg.num_queries,
        focal=v.focal,
        extra_levels=v.extra_levels,
        learned_content=v.deformable,
        group_norm=v.deformable,
        position_offset=-0.5 if v.deformable else 0.0,
        box_bias=v.box_bias,
        aux_loss=cfg.aux_loss,
    )
