"""Vanilla DETR's encoder-decoder Transformer (Carion et al. 2020), behind the encode/decode seam.

Post-norm layers; positional embeddings are added to queries and keys at every attention, never to values.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from siamdetr.models.attention import Dropout, MultiheadAttention
from siamdetr.models.memory import Memory, flatten_levels


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def xavier_init(module: nn.Module) -> None:
    """DETR's initialisation: Xavier-uniform for every weight matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class FeedForward(nn.Module):
    """The residual FFN block shared by every layer type: x + Dropout(W2 Dropout(ReLU(W1 x))), then norm."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = Dropout(dropout)
        self.dropout_out = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout_out(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, src: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        attended = self.self_attn(q, k, src, key_padding_mask=mask)
        return self.ffn(self.norm(src + self.dropout(attended)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout)
        self.cross_attn = MultiheadAttention(d_model, nhead, dropout)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Memory) -> Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt)))
        attended = self.cross_attn(
            tgt + query_pos, memory.tokens + memory.pos, memory.tokens, key_padding_mask=memory.mask
        )
        return self.ffn(self.norm2(tgt + self.dropout2(attended)))


class Transformer(nn.Module):
    """DETR's Transformer: `encode` one feature level into Memory; `decode` queries against it."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder_layers = clones(EncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        self.decoder_layers = clones(DecoderLayer(d_model, nhead, dim_feedforward, dropout), num_decoder_layers)
        self.decoder_norm = nn.LayerNorm(d_model)
        xavier_init(self)

    def encode(self, srcs: list[Tensor], masks: list[Tensor], pos: list[Tensor]) -> Memory:
        tokens, mask, flat_pos, shapes, starts, ratios = flatten_levels(srcs, masks, pos)
        for layer in self.encoder_layers:
            tokens = layer(tokens, mask, flat_pos)
        return Memory(tokens, mask, flat_pos, shapes, starts, ratios)

    def decode(self, memory: Memory, query_content: Tensor, query_pos: Tensor) -> tuple[Tensor, None]:
        """hs: [layers, B, Q, d], each layer's output through the shared final norm; no reference points."""
        tgt, outputs = query_content, []
        for layer in self.decoder_layers:
            tgt = layer(tgt, query_pos, memory)
            outputs.append(self.decoder_norm(tgt))
        return torch.stack(outputs), None
