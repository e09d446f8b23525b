"""Dropout and attention with a cheaper dropout mask on CPU.

On CPU, torch draws one double-precision Bernoulli variable per dropped-out element (24 ms for 2.56 M
elements on one thread), and `scaled_dot_product_attention` with `dropout_p > 0` takes about 7× its time
without (`benchmarks/dropout.py`): the largest cost of a tiny-profile fine-tuning step. Here one 64-bit
draw gives four 16-bit uniforms, and an element is dropped when its uniform falls below round(p · 2^16),
so p holds to 2^-16. The mask comes from torch's seeded generator, so CPU runs stay deterministic and
resumable. Elsewhere (CUDA) torch's fused kernels are used unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

UNIFORM_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool mask of `shape`, each element False with probability round(p · 2^16) / 2^16."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    uniforms = words.view(torch.int16)[:n].view(shape)  # uniform on [-2^15, 2^15)
    return uniforms >= round(p * UNIFORM_LEVELS) - UNIFORM_LEVELS // 2


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout(x, p, training), with the cheaper mask on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout with the cheaper CPU mask."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def split_heads(x: Tensor, nhead: int) -> Tensor:
    """[B, L, C] → [B, heads, L, C / heads]."""
    b, n, c = x.shape
    return x.view(b, n, nhead, c // nhead).transpose(1, 2)


def attend(q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None, p: float) -> Tensor:
    """Scaled dot-product attention of [B, heads, L, C] tensors, dropout p on the weights; → [B, Lq, heads · Cv].

    key_padding: [B, Lk] bool, True = padding. Without dropout, or off CPU, torch's fused kernel.
    """
    if p == 0.0 or q.device.type != "cpu":
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    else:
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = dropout(scores.softmax(-1), p, True) @ v
    return out.transpose(1, 2).flatten(2)


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention, batch first (same parameters, names and initialisation), returning the output only;
    when training on CPU its weights are dropped out with the cheaper mask."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        if not self.training or self.dropout == 0.0 or query.device.type != "cpu":
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)[0]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        h = self.num_heads
        q = split_heads(F.linear(query, w_q, b_q), h)
        k = split_heads(F.linear(key, w_k, b_k), h)
        v = split_heads(F.linear(value, w_v, b_v), h)
        return self.out_proj(attend(q, k, v, key_padding_mask, self.dropout))
