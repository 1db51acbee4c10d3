"""Multi-head attention and the ViLBERT-style co-attention layers.

A co-attention layer has two streams, language (B,T,D) and regions (B,Q,D).
Language tokens attend to regions and regions attend to language tokens, both
reading the layer's inputs (in parallel). Each stream then has residual +
LayerNorm, an FFN with GELU, residual + LayerNorm. There is no self-attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query/key/value/output projections.

    Masks are boolean "keep" masks: True where a key takes part. The keys and
    values of a context can be projected once (`project_kv`) and reused, which is
    what incremental decoding does.
    """

    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.heads, D // self.heads).transpose(1, 2)  # (B,L,D) -> (B,H,L,D/H)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B,L,D) -> keys, values, each (B,H,L,D/H)."""
        return self._split(self.key(context)), self._split(self.value(context))

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *,
               mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x (B,M,D) attends to projected keys/values (B,H,L,D/H) -> (B,M,D).

        mask: (B,L) bool, True = attend; causal: position i sees keys 0..i (needs M == L).
        """
        B, M, D = x.shape
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B,L) -> (B,1,1,L)
        out = F.scaled_dot_product_attention(
            self._split(self.query(x)), keys, values, attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0, is_causal=causal)
        return self.out(out.transpose(1, 2).reshape(B, M, D))  # (B,H,M,D/H) -> (B,M,D)

    def forward(self, x: torch.Tensor, context: torch.Tensor, *,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x (B,M,D) attends to context (B,L,D) -> (B,M,D); see `attend` for mask and causal."""
        return self.attend(x, *self.project_kv(context), mask=mask, causal=causal)


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear, (..., D) -> (..., D)."""

    def __init__(self, *, dim: int, hidden: int, dropout: float, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class _Stream(nn.Module):
    """One stream's half of a co-attention layer: cross-attention, add & norm, FFN, add & norm."""

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(dim=dim, heads=heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim=dim, hidden=ffn, dropout=dropout, activation="gelu")
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, context, mask=mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class CoAttentionLayer(nn.Module):
    """language (B,T,D), regions (B,Q,D) -> co-attended (language (B,T,D), regions (B,Q,D)).

    query_mask (B,T) bool, True = real token: regions do not attend to padding
    tokens where it is given. Language tokens attend to all regions.
    """

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.language = _Stream(dim=dim, heads=heads, ffn=ffn, dropout=dropout)
        self.regions = _Stream(dim=dim, heads=heads, ffn=ffn, dropout=dropout)

    def forward(self, language: torch.Tensor, regions: torch.Tensor,
                query_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.language(language, regions, None), self.regions(regions, language, query_mask)


class CoAttention(nn.Module):
    """A stack of `layers` CoAttentionLayers; same inputs and outputs as one layer."""

    def __init__(self, *, layers: int, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            CoAttentionLayer(dim=dim, heads=heads, ffn=ffn, dropout=dropout) for _ in range(layers))

    def forward(self, language: torch.Tensor, regions: torch.Tensor,
                query_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            language, regions = layer(language, regions, query_mask)
        return language, regions
