"""Conditional DETR's Transformer (Meng et al. 2021), behind the encode/decode seam.

The decoder learns a 2-d reference point per query; its cross-attention concatenates a content part and a
spatial part (sine embedding of the reference point, scaled by a learned function of the decoder state)
per head, so a query attends to the extremities of its object and training converges faster.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from siamdetr.models.attention import Dropout, attend, split_heads
from siamdetr.models.heads import MLP
from siamdetr.models.memory import Memory
from siamdetr.models.position import box_sine
from siamdetr.models.transformer import FeedForward, Transformer, xavier_init


class ConditionalDecoderLayer(nn.Module):
    """Self-attention with separate content/position projections, then conditional cross-attention."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, first: bool) -> None:
        super().__init__()
        self.nhead = nhead
        self.first = first
        self.sa_q_content, self.sa_q_pos = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.sa_k_content, self.sa_k_pos = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.sa_v = nn.Linear(d_model, d_model)
        self.sa_out = nn.Linear(d_model, d_model)
        self.ca_q_content, self.ca_k_content = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.ca_k_pos, self.ca_v = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.ca_q_pos = nn.Linear(d_model, d_model) if first else None  # only the first layer adds query_pos
        self.ca_q_sine = nn.Linear(d_model, d_model)
        self.ca_out = nn.Linear(d_model, d_model)
        self.dropout_p = dropout
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None) -> Tensor:
        return attend(q, k, v, key_padding, self.dropout_p if self.training else 0.0)

    def forward(self, tgt: Tensor, query_pos: Tensor, query_sine: Tensor, memory: Memory) -> Tensor:
        h = self.nhead
        q = split_heads(self.sa_q_content(tgt) + self.sa_q_pos(query_pos), h)
        k = split_heads(self.sa_k_content(tgt) + self.sa_k_pos(query_pos), h)
        v = split_heads(self.sa_v(tgt), h)
        tgt = self.norm1(tgt + self.dropout1(self.sa_out(self._attend(q, k, v, None))))

        q_content = self.ca_q_content(tgt)
        k_content = self.ca_k_content(memory.tokens)
        k_pos = self.ca_k_pos(memory.pos)
        if self.ca_q_pos is not None:
            q_content = q_content + self.ca_q_pos(query_pos)
            k_content = k_content + k_pos
        q = torch.cat([split_heads(q_content, h), split_heads(self.ca_q_sine(query_sine), h)], dim=-1)
        k = torch.cat([split_heads(k_content, h), split_heads(k_pos, h)], dim=-1)
        v = split_heads(self.ca_v(memory.tokens), h)
        tgt = self.norm2(tgt + self.dropout2(self.ca_out(self._attend(q, k, v, memory.mask))))
        return self.ffn(tgt)


class ConditionalTransformer(Transformer):
    """DETR's encoder with Conditional DETR's decoder; `decode` also returns the reference points."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout)
        self.decoder_layers = nn.ModuleList(
            ConditionalDecoderLayer(d_model, nhead, dim_feedforward, dropout, first=i == 0)
            for i in range(num_decoder_layers)
        )
        # Scales the spatial query from the 2nd layer on; absent with one layer (DDP rejects unused parameters).
        self.query_scale = MLP(d_model, d_model, d_model, 2) if num_decoder_layers > 1 else None
        self.ref_point_head = MLP(d_model, d_model, 2, 2)
        xavier_init(self)

    def decode(self, memory: Memory, query_content: Tensor, query_pos: Tensor) -> tuple[Tensor, Tensor]:
        """hs: [layers, B, Q, d]; refs: [layers, B, Q, 2] normalised (x, y), the same for every layer."""
        reference = self.ref_point_head(query_pos).sigmoid()
        sine = box_sine(reference, self.d_model // 2)
        tgt, outputs = query_content, []
        for i, layer in enumerate(self.decoder_layers):
            scale = 1.0 if self.query_scale is None or i == 0 else self.query_scale(tgt)
            tgt = layer(tgt, query_pos, sine * scale, memory)
            outputs.append(self.decoder_norm(tgt))
        hs = torch.stack(outputs)
        return hs, reference.unsqueeze(0).expand(len(outputs), -1, -1, -1)
