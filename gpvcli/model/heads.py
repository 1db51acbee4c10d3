"""Output heads: relevance of each region, relevance conditioning, and the text head.

The text head is a causal transformer decoder over a word-level answer
vocabulary (`gpvcli.data.vocab`: PAD=0, START=1, STOP=2, UNK=3). Its memory is
[conditioned regions ; co-attended language tokens]. It runs either on a whole
teacher-forced answer (`forward`) or one token at a time with cached keys and
values (`start` + `step`, used by `gpvcli.model.decoding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gpvcli.model.coattention import FeedForward, MultiHeadAttention


class RelevanceHead(nn.Module):
    """regions (B,Q,D), objectness (B,Q,2), grounding (B,Q) or None -> relevance logits (B,Q,2) =
    Linear(regions) + objectness, with grounding added to the relevant logit.

    Index 0 is relevant, index 1 irrelevant (the DETR objectness convention);
    relevance = softmax(logits)[..., 0].
    """

    def __init__(self, *, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2)

    def forward(self, regions: torch.Tensor, objectness: torch.Tensor,
                grounding: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.linear(regions) + objectness
        if grounding is None:
            return logits
        return logits + torch.stack([grounding, torch.zeros_like(grounding)], dim=-1)  # (B,Q) -> (B,Q,2)


class RegionPhraseScore(nn.Module):
    """regions (B,Q,D), phrases (B,P,D) or (P,D) -> logits (B,Q,P) that region q shows phrase p:
    scale * cos(Linear(region), phrase) + bias, a learned scale and bias.

    The contrastive region-word alignment of grounded detectors (MDETR, GLIP): trained to tell which
    category phrase a region shows in the alignment stage, it scores regions against a whole query in GPV,
    where the bias (starting at the log-odds of a 1% prior: most region-query pairs do not match) sets
    how much a match adds to the relevance."""

    def __init__(self, *, dim: int, prior: float = 0.01, scale: float = 10.0):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(math.log(prior / (1 - prior))))

    def forward(self, regions: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        r = nn.functional.normalize(self.proj(regions), dim=-1)                       # (B,Q,D)
        p = nn.functional.normalize(phrases, dim=-1)                                  # (B,P,D) or (P,D)
        return self.log_scale.exp() * (r @ p.transpose(-1, -2)) + self.bias         # (B,Q,P)


class GroundedMemory(nn.Module):
    """regions (B,Q,D) before co-attention, grounding (B,Q) region-query logits, colour (B,Q,K) or None
    -> (B,Q+1,D): each region (+ Linear(its colour) when colour_dim) + sigmoid(its grounding) * t_match,
    then the focus: the softmax(grounding)-weighted mean of those regions + sigmoid(max grounding) * t_match.

    What the text decoder needs to answer about the thing a question names ("What color is the dog?",
    "Is there a dog?") is that thing's region and how well anything matches; the region-query score
    that localizes it hands both over directly instead of leaving the decoder to find them by
    cross-attention through co-attended regions (where the image is a small part of each vector).
    t_match is a learned D-vector."""

    def __init__(self, *, dim: int, colour_dim: int = 0):
        super().__init__()
        self.match = nn.Parameter(0.1 * torch.randn(dim))
        self.colour = nn.Linear(colour_dim, dim) if colour_dim else None

    def forward(self, regions: torch.Tensor, grounding: torch.Tensor,
                colour: torch.Tensor | None = None) -> torch.Tensor:
        if (self.colour is None) != (colour is None):
            raise ValueError("give the regions' colour exactly when built with colour_dim")
        if colour is not None:
            regions = regions + self.colour(colour)                                             # (B,Q,K) -> (B,Q,D)
        marked = regions + grounding.sigmoid()[..., None] * self.match                          # (B,Q,D)
        focus = (grounding.softmax(-1)[..., None] * regions).sum(1)                             # (B,D)
        focus = focus + grounding.max(-1).values.sigmoid()[:, None] * self.match
        return torch.cat([marked, focus[:, None]], dim=1)                                       # (B,Q+1,D)


def mean_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens (B,T,D), mask (B,T) (1 = real token) -> the mean real token (B,D)."""
    m = mask.to(tokens.dtype)[..., None]                                             # (B,T,1)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1)


class RelevanceConditioning(nn.Module):
    """regions (B,Q,D), relevance logits (B,Q,2) -> regions + p_rel * t_rel + p_irr * t_irr (B,Q,D).

    t_rel, t_irr are the two rows of `tokens` (learned D-vectors); p = softmax(logits),
    and gradients flow through p.
    """

    def __init__(self, *, dim: int):
        super().__init__()
        self.tokens = nn.Parameter(0.1 * torch.randn(2, dim))

    def forward(self, regions: torch.Tensor, relevance_logits: torch.Tensor) -> torch.Tensor:
        return regions + relevance_logits.softmax(-1) @ self.tokens  # (B,Q,2) @ (2,D) -> (B,Q,D)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position encoding: positions (S,) long -> (S,D) float."""
    freq = torch.exp(torch.arange(0, dim, 2, device=positions.device) * (-math.log(10000.0) / dim))
    angle = positions.float()[:, None] * freq[None, :]  # (S,1) * (1,D/2) -> (S,D/2)
    out = torch.zeros(len(positions), dim, device=positions.device)
    out[:, 0::2] = angle.sin()
    out[:, 1::2] = angle.cos()
    return out


class DecoderLayer(nn.Module):
    """Post-norm transformer decoder layer: causal self-attention, cross-attention to memory, ReLU FFN."""

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attention = MultiHeadAttention(dim=dim, heads=heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attention = MultiHeadAttention(dim=dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim=dim, hidden=ffn, dropout=dropout, activation="relu")
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor],
                memory_mask: torch.Tensor | None, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x (B,S,D); memory_kv: the memory's projected keys/values (B,H,M,D/H); memory_mask (B,M) bool.

        cache None: x is the whole sequence, causal self-attention. cache a list
        (empty at the first step): x (B,1,D) is the next token; its keys/values
        are appended to the cache and it attends to all cached positions.
        """
        keys, values = self.self_attention.project_kv(x)
        if cache is None:
            h = self.self_attention.attend(x, keys, values, causal=True)
        else:
            if cache:
                keys = torch.cat([cache[0], keys], dim=2)  # (B,H,t,D/H) + (B,H,1,D/H)
                values = torch.cat([cache[1], values], dim=2)
            cache[:] = [keys, values]
            h = self.self_attention.attend(x, keys, values)
        x = self.norm1(x + self.dropout(h))
        x = self.norm2(x + self.dropout(self.cross_attention.attend(x, *memory_kv, mask=memory_mask)))
        return self.norm3(x + self.dropout(self.ffn(x)))


@dataclass
class DecoderState:
    """What incremental decoding carries between steps (memory and caches: first dim N sequences)."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor | None
    caches: list[list[torch.Tensor]]
    output_vectors: torch.Tensor  # (V,D), shared by all sequences
    position: int = 0
    focus: torch.Tensor | None = None  # (N,1,D) added to every input vector (TextHead's focus_input)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep sequences `index` (N,) long of the self-attention caches.

        Beam search only reorders within one sample's beams, whose memory is
        identical, so the memory keys/values (and focus) are left as they are.
        """
        for cache in self.caches:
            cache[:] = [t.index_select(0, index) for t in cache]


class TextHead(nn.Module):
    """Word vectors + causal transformer decoder + output word vectors.

    answer_vectors "frozen_text": `input_words` and `output_words` (V,E) are frozen
    tables (each word's text-encoder vector, see `gpvcli.model.text.word_vectors`),
    passed through the learned Linears `input_transform` / `output_transform` (E->D).
    "learned": both tables are learned (V,D), with no transforms.
    Logits are dot products of decoder states with the output word vectors.
    positions: add sinusoidal position encodings to the input word vectors.
    focus_input: add Linear(the memory's last vector), the grounded memory's focus, to every input vector
    (the thing the query names and how well it matches, read without a search by cross-attention).
    """

    def __init__(self, *, vocab_size: int, dim: int, layers: int, heads: int, ffn: int, dropout: float,
                 answer_vectors: str, positions: bool, word_table: torch.Tensor | None = None,
                 focus_input: bool = False):
        super().__init__()
        self.focus = nn.Linear(dim, dim) if focus_input else None
        if answer_vectors == "frozen_text":
            if word_table is None or word_table.shape[0] != vocab_size:
                raise ValueError("frozen_text answer vectors need a (V,E) word table")
            self.input_words = nn.Parameter(word_table.clone(), requires_grad=False)
            self.output_words = nn.Parameter(word_table.clone(), requires_grad=False)
            self.input_transform = nn.Linear(word_table.shape[1], dim)
            self.output_transform = nn.Linear(word_table.shape[1], dim)
        else:
            self.input_words = nn.Parameter(torch.randn(vocab_size, dim))
            self.output_words = nn.Parameter(torch.randn(vocab_size, dim) * dim ** -0.5)
            self.input_transform = nn.Identity()
            self.output_transform = nn.Identity()
        self.positions = positions
        self.dim = dim
        self.layers = nn.ModuleList(
            DecoderLayer(dim=dim, heads=heads, ffn=ffn, dropout=dropout) for _ in range(layers))

    def embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens (B,S) long -> input vectors (B,S,D); positions start at `offset`."""
        x = self.input_transform(self.input_words[tokens])
        if self.positions:
            x = x + sinusoid(torch.arange(offset, offset + tokens.shape[1], device=tokens.device), self.dim)
        return x

    def output_vectors(self) -> torch.Tensor:
        """The transformed output word vectors (V,D); logits = states @ output_vectors.T."""
        return self.output_transform(self.output_words)

    def _memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attention.project_kv(memory) for layer in self.layers]

    def forward(self, answer_inputs: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """answer_inputs (B,S) long (START + target[:-1]), memory (B,M,D), memory_mask (B,M) bool
        (True = attend) -> logits (B,S,V)."""
        x = self.embed(answer_inputs)
        if self.focus is not None:
            x = x + self.focus(memory[:, -1:])
        for layer, kv in zip(self.layers, self._memory_kv(memory)):
            x = layer(x, kv, memory_mask)
        return x @ self.output_vectors().T  # (B,S,D) @ (D,V) -> (B,S,V)

    def start(self, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> DecoderState:
        """Project the memory (N,M,D) and transform the output word vectors once for incremental decoding."""
        focus = None if self.focus is None else self.focus(memory[:, -1:])
        return DecoderState(self._memory_kv(memory), memory_mask, [[] for _ in self.layers], self.output_vectors(),
                            focus=focus)

    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The next input token of each sequence, tokens (N,) long -> logits of the following token (N,V)."""
        x = self.embed(tokens[:, None], offset=state.position)  # (N,) -> (N,1,D)
        if state.focus is not None:
            x = x + state.focus
        for layer, kv, cache in zip(self.layers, state.memory_kv, state.caches):
            x = layer(x, kv, state.memory_mask, cache)
        state.position += 1
        return x[:, 0] @ state.output_vectors.T  # (N,1,D) -> (N,D) @ (D,V) -> (N,V)
