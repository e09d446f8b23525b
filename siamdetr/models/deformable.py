"""Deformable DETR's Transformer (Zhu et al. 2021), behind the encode/decode seam, in plain PyTorch.

Each query attends to a few sampled points per head and feature level around a reference point instead of to
every token, so the encoder can afford several levels and training converges faster. The official CUDA kernel
is replaced by `grid_sample`. No iterative box refinement and no two-stage proposals: a decoder query keeps
the reference point predicted from its query_pos in every layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from siamdetr.models.attention import Dropout, MultiheadAttention
from siamdetr.models.memory import Memory, flatten_levels
from siamdetr.models.transformer import FeedForward, clones, xavier_init


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinearly sampled values: [B, Lq, heads, levels, points] samples → [B, Lq, heads * d_head].

    value: [B, S, heads, d_head]; sampling_locations: [B, Lq, heads, levels, points, 2] normalised (x, y), where 0
    and 1 are the map's outer pixel edges; samples outside the map read zeros. One grid_sample per level, batched
    over batch × heads, stands in for the official CUDA kernel.
    """
    b, _, heads, d_head = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] coordinates
    sampled = []
    for level, ((h, w), start) in enumerate(zip(spatial_shapes.tolist(), level_start_index.tolist(), strict=True)):
        level_value = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(b * heads, d_head, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B * heads, Lq, points, 2]
        sampled.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    samples = torch.cat(sampled, dim=-1)  # [B * heads, d_head, Lq, levels * points]
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, lq, levels * points)
    return (samples * weights).sum(-1).view(b, heads * d_head, lq).transpose(1, 2)


def initial_sampling_offsets(n_heads: int, n_levels: int, n_points: int) -> Tensor:
    """Bias of `sampling_offsets` at init, flattened as (heads, levels, points, xy).

    Head h looks along angle 2πh / heads, projected onto the unit square, and its k-th point sits k + 1 pixels
    out, so before any training the heads already cover a ring of growing neighbourhoods in every level.
    """
    angles = torch.arange(n_heads, dtype=torch.float32) * (2 * math.pi / n_heads)
    directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
    directions = directions / directions.abs().max(dim=-1, keepdim=True).values
    distances = torch.arange(1, n_points + 1, dtype=torch.float32)
    offsets = directions[:, None, None, :] * distances[None, None, :, None]
    return offsets.expand(n_heads, n_levels, n_points, 2).flatten()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: sampling offsets and weights are predicted from the query alone."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start from fixed offsets and uniform weights, so early training is a stable local average."""
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(initial_sampling_offsets(self.n_heads, self.n_levels, self.n_points))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """query [B, Lq, d], reference_points [B, Lq, levels, 2] normalised (x, y), input [B, S, d] → [B, Lq, d]."""
        b, lq, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)  # padding must never be read
        value = value.view(b, input_flatten.shape[1], heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(b, lq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, lq, heads, levels * points).softmax(-1)
        level_wh = spatial_shapes.flip(-1).to(offsets.dtype)  # offsets are in pixels of their own level
        locations = reference_points[:, :, None, :, None, :] + offsets / level_wh[None, None, None, :, None, :]
        out = ms_deform_attn_core(
            value, spatial_shapes, level_start_index, locations, weights.view(b, lq, heads, levels, points)
        )
        return self.output_proj(out)


def encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor) -> Tensor:
    """[B, S, 2] normalised (x, y) pixel centre of every token, measured within its image's unpadded extent.

    Measuring against the image rather than the padded map lets `at_levels` place the point on the same image
    content in every level.
    """
    points = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
            torch.arange(w, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
            indexing="ij",
        )
        x = xs.reshape(1, -1) / (valid_ratios[:, level, 0:1] * w)
        y = ys.reshape(1, -1) / (valid_ratios[:, level, 1:2] * h)
        points.append(torch.stack([x, y], dim=-1))
    return torch.cat(points, dim=1)


def at_levels(points: Tensor, valid_ratios: Tensor) -> Tensor:
    """Image-normalised points [B, N, 2] → [B, N, levels, 2] normalised to each level's padded map."""
    return points[:, :, None] * valid_ratios[:, None]


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over the tokens of all levels, then the FFN; post-norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, n_levels: int, n_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, shapes: Tensor, starts: Tensor, mask: Tensor
    ) -> Tensor:
        attended = self.self_attn(src + pos, reference_points, src, shapes, starts, mask)
        return self.ffn(self.norm(src + self.dropout(attended)))


class DeformableDecoderLayer(nn.Module):
    """Full self-attention among the queries, deformable cross-attention into the memory, FFN; post-norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, n_levels: int, n_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout)
        self.cross_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Memory) -> Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt)))
        attended = self.cross_attn(
            tgt + query_pos,
            reference_points,
            memory.tokens,
            memory.spatial_shapes,
            memory.level_start_index,
            memory.mask,
        )
        return self.ffn(self.norm2(tgt + self.dropout2(attended)))


class DeformableTransformer(nn.Module):
    """Deformable DETR's Transformer: n_levels=1 is Deform-SS, 4 is Deform-MS.

    `decode` returns refs [layers, B, Q, 2]: the reference point predicted from query_pos, the same in every
    layer (no iterative refinement), so the box head predicts offsets from it.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_points: int = 4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_levels = n_levels
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        sizes = (d_model, nhead, dim_feedforward, dropout, n_levels, n_points)
        self.encoder_layers = clones(DeformableEncoderLayer(*sizes), num_encoder_layers)
        self.decoder_layers = clones(DeformableDecoderLayer(*sizes), num_decoder_layers)
        self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        xavier_init(self)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def encode(self, srcs: list[Tensor], masks: list[Tensor], pos: list[Tensor]) -> Memory:
        if not len(srcs) == len(masks) == len(pos) == self.n_levels:
            raise ValueError(
                f"DeformableTransformer was built for {self.n_levels} feature levels but encode got "
                f"{len(srcs)} srcs, {len(masks)} masks and {len(pos)} pos"
            )
        pos = [p + embed.view(1, -1, 1, 1) for p, embed in zip(pos, self.level_embed, strict=True)]
        tokens, mask, flat_pos, shapes, starts, ratios = flatten_levels(srcs, masks, pos)
        ratios = ratios.to(tokens.dtype)
        reference_points = at_levels(encoder_reference_points(shapes, ratios), ratios)
        for layer in self.encoder_layers:
            tokens = layer(tokens, flat_pos, reference_points, shapes, starts, mask)
        return Memory(tokens, mask, flat_pos, shapes, starts, ratios)

    def decode(self, memory: Memory, query_content: Tensor, query_pos: Tensor) -> tuple[Tensor, Tensor]:
        """hs: [layers, B, Q, d], each layer's own output; refs: [layers, B, Q, 2] normalised (x, y)."""
        reference = self.reference_points(query_pos).sigmoid()
        reference_points = at_levels(reference, memory.valid_ratios.to(reference.dtype))
        tgt, outputs = query_content, []
        for layer in self.decoder_layers:
            tgt = layer(tgt, query_pos, reference_points, memory)
            outputs.append(tgt)
        return torch.stack(outputs), reference.unsqueeze(0).expand(len(outputs), -1, -1, -1)
