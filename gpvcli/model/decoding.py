"""Answer generation for a `TextHead`: greedy and batched beam search, both incremental.

Both encode the memory once and cache each decoder layer's self-attention keys
and values, so a step costs one token per sequence.

Lengths: `max_len` (B,) long is the largest number of words of each sample's
answer. A sequence ends at its first STOP; at step `max_len` (0-based) STOP is
forced. Tokens come back as (B,S) long: the words, STOP, then PAD; S <= max(max_len) + 1.

Allowed words: PAD and START are never generated; `allowed_words` (V,) bool
restricts the rest (e.g. classification: category-name words); STOP is always
allowed. Log-probabilities are normalized over the allowed words.

Scores: the sequence log-probability, the sum of the log-probabilities of its
tokens up to and including STOP (a forced STOP counts with its own
log-probability).
"""

from __future__ import annotations

import torch

from gpvcli.data.vocab import PAD, START, STOP
from gpvcli.model.heads import TextHead


def allowed_mask(vocab_size: int, allowed_words: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(V,) bool: the words a decoder may emit (see the module docstring)."""
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
    if allowed_words is not None:
        allowed &= allowed_words.to(device)
    allowed[PAD] = allowed[START] = False
    allowed[STOP] = True
    return allowed


def next_log_probs(logits: torch.Tensor, allowed: torch.Tensor, force_stop: torch.Tensor) -> torch.Tensor:
    """logits (N,V), allowed (V,), force_stop (N,) bool -> log-probs (N,V) normalized over the allowed words.

    Sequences in `force_stop` may only choose STOP: their other words get -inf
    (STOP keeps its own log-probability).
    """
    log_probs = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    not_stop = torch.ones_like(allowed)
    not_stop[STOP] = False
    return log_probs.masked_fill(force_stop[:, None] & not_stop, float("-inf"))


@torch.no_grad()
def greedy(head: TextHead, memory: torch.Tensor, memory_mask: torch.Tensor | None, *,
           max_len: torch.Tensor, allowed_words: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """memory (B,M,D), memory_mask (B,M) bool, max_len (B,) long -> tokens (B,S) long, scores (B,).

    Stops as soon as every sequence has emitted STOP.
    """
    B, device = memory.shape[0], memory.device
    allowed = allowed_mask(head.input_words.shape[0], allowed_words, device)
    state = head.start(memory, memory_mask)
    last = torch.full((B,), START, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    scores = torch.zeros(B, device=device)
    out = []
    for t in range(int(max_len.max()) + 1):
        log_probs = next_log_probs(head.step(last, state), allowed, t >= max_len)
        word = log_probs.argmax(-1)
        scores += torch.where(done, 0.0, log_probs.gather(1, word[:, None])[:, 0])
        word = torch.where(done, PAD, word)
        out.append(word)
        done |= word == STOP
        if done.all():
            break
        last = word
    return torch.stack(out, dim=1), scores


@torch.no_grad()
def beam_search(head: TextHead, memory: torch.Tensor, memory_mask: torch.Tensor | None, *,
                max_len: torch.Tensor, beam_size: int, allowed_words: torch.Tensor | None = None,
                length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched beam search; same inputs and outputs as `greedy`, plus `beam_size` K.

    All beams of all samples run as one batch of B*K sequences. Beams are ranked
    by raw sequence log-probability while searching; a finished beam keeps its
    score (it continues with PAD at log-probability 0) and competes with the
    open ones. The final choice among a sample's K beams ranks score /
    length ** length_penalty (length counts STOP; 0 = raw log-probability);
    the returned score is the raw log-probability. Beam search usually, but not
    provably, finds sequences at least as likely as greedy's.
    """
    B, K, device = memory.shape[0], beam_size, memory.device
    V = head.input_words.shape[0]
    allowed = allowed_mask(V, allowed_words, device)
    state = head.start(memory.repeat_interleave(K, 0),  # (B,M,D) -> (B*K,M,D)
                       None if memory_mask is None else memory_mask.repeat_interleave(K, 0))
    max_len = max_len.repeat_interleave(K)  # (B,) -> (B*K,)
    pad_only = torch.full((V,), float("-inf"), device=device)
    pad_only[PAD] = 0.0
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    last = torch.full((B * K,), START, dtype=torch.long, device=device)
    done = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    offsets = torch.arange(B, device=device)[:, None] * K  # (B,1)
    for t in range(int(max_len.max()) + 1):
        log_probs = next_log_probs(head.step(last, state), allowed, t >= max_len)
        log_probs = torch.where(done[:, None], pad_only, log_probs)
        candidates = scores.view(B * K, 1) + log_probs  # (B*K,V)
        scores, index = candidates.view(B, K * V).topk(K, dim=1)  # (B,K*V) -> (B,K)
        source = (offsets + index // V).view(-1)  # (B,K) -> (B*K,) rows of the previous beams
        word = (index % V).view(-1)
        history = torch.cat([history[source], word[:, None]], dim=1)
        lengths = lengths[source] + (~done[source]).float()
        done = done[source] | (word == STOP)
        state.reorder(source)
        if done.all():
            break
        last = word
    ranking = scores / lengths.view(B, K).clamp(min=1) ** length_penalty
    best = offsets[:, 0] + ranking.argmax(dim=1)  # (B,) rows in B*K
    return history[best], scores.view(-1)[best]
