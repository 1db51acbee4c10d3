import pytest
import torch

from gpvcli.data.vocab import PAD, START, STOP
from gpvcli.model.decoding import beam_search, greedy, next_log_probs
from gpvcli.model.heads import TextHead

V, D, B, M = 30, 32, 6, 7


def make_head(answer_vectors="learned", positions=True, seed=0):
    torch.manual_seed(seed)
    table = torch.randn(V, 16) if answer_vectors == "frozen_text" else None
    head = TextHead(vocab_size=V, dim=D, layers=2, heads=4, ffn=64, dropout=0.1,
                    answer_vectors=answer_vectors, positions=positions, word_table=table)
    return head.eval()


def make_memory(seed=1):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, M, D, generator=g)
    mask = torch.ones(B, M, dtype=torch.bool)
    mask[0, 5:] = False
    mask[3, 4:] = False
    return memory, mask


# per-sample largest number of words: vqa/cls 5, cap 20, and a few others
MAX_LEN = torch.tensor([5, 20, 5, 1, 20, 3])


@torch.no_grad()
def naive_greedy(head, memory, mask, max_len, allowed=None):
    """Re-decode the whole prefix at every step (no cache), one sample at a time."""
    allowed_all = torch.ones(V, dtype=torch.bool) if allowed is None else allowed.clone()
    allowed_all[PAD] = allowed_all[START] = False
    allowed_all[STOP] = True
    out, scores = [], []
    for b in range(memory.shape[0]):
        seq, score = [START], 0.0
        for t in range(int(max_len[b]) + 1):
            logits = head(torch.tensor([seq]), memory[b:b + 1], mask[b:b + 1])[:, -1]
            log_probs = next_log_probs(logits, allowed_all, torch.tensor([t >= max_len[b]]))
            word = int(log_probs.argmax(-1))
            score += float(log_probs[0, word])
            seq.append(word)
            if word == STOP:
                break
        out.append(seq[1:])
        scores.append(score)
    return out, torch.tensor(scores)


@torch.no_grad()
def sequence_log_prob(head, memory, mask, tokens):
    """Teacher-forced log-probability of each row of tokens (up to and including STOP), PAD and START
    excluded from the normalization as in decoding."""
    inputs = torch.cat([torch.full((tokens.shape[0], 1), START), tokens[:, :-1]], dim=1)
    logits = head(inputs, memory, mask)
    logits[..., [PAD, START]] = float("-inf")
    log_probs = logits.log_softmax(-1)
    picked = log_probs.gather(2, tokens[..., None])[..., 0]
    return picked.masked_fill(tokens == PAD, 0.0).sum(1)


def rows(tokens):
    """Rows of a (B,S) token tensor up to and including the first STOP."""
    out = []
    for row in tokens.tolist():
        out.append(row[:row.index(STOP) + 1])
    return out


@pytest.mark.parametrize("answer_vectors,positions", [("learned", True), ("frozen_text", False)])
def test_incremental_greedy_equals_naive_redecoding(answer_vectors, positions):
    head = make_head(answer_vectors, positions)
    memory, mask = make_memory()
    tokens, scores = greedy(head, memory, mask, max_len=MAX_LEN)
    expected, expected_scores = naive_greedy(head, memory, mask, MAX_LEN)
    assert rows(tokens) == expected
    assert torch.allclose(scores, expected_scores, atol=1e-4)
    # the model is random, so some answers run to the limit: lengths differ across samples
    assert len({len(r) for r in expected}) > 1


def test_greedy_output_format_and_lengths():
    head = make_head()
    memory, mask = make_memory()
    tokens, scores = greedy(head, memory, mask, max_len=MAX_LEN)
    assert tokens.dtype == torch.long and scores.shape == (B,)
    assert tokens.shape[1] <= int(MAX_LEN.max()) + 1
    for b, row in enumerate(tokens.tolist()):
        stop = row.index(STOP)
        assert stop <= MAX_LEN[b]  # at most max_len words, then STOP
        assert all(t == PAD for t in row[stop + 1:])
        assert PAD not in row[:stop] and START not in row[:stop]
    assert torch.allclose(scores, sequence_log_prob(head, memory, mask, tokens), atol=1e-4)


def test_greedy_stops_when_every_sequence_has_stopped():
    head = make_head()
    memory, mask = make_memory()
    only_stop = torch.zeros(V, dtype=torch.bool)
    tokens, scores = greedy(head, memory, mask, max_len=MAX_LEN, allowed_words=only_stop)
    assert tokens.tolist() == [[STOP]] * B
    assert torch.allclose(scores, torch.zeros(B), atol=1e-6)  # STOP is the only allowed word


def test_allowed_words_are_respected():
    head = make_head()
    memory, mask = make_memory()
    allowed = torch.zeros(V, dtype=torch.bool)
    allowed[[5, 9, 17]] = True
    for tokens, _ in (greedy(head, memory, mask, max_len=MAX_LEN, allowed_words=allowed),
                      beam_search(head, memory, mask, max_len=MAX_LEN, beam_size=3, allowed_words=allowed)):
        assert set(tokens.unique().tolist()) <= {5, 9, 17, STOP, PAD}
        assert (tokens == STOP).sum(1).eq(1).all()
    expected, _ = naive_greedy(head, memory, mask, MAX_LEN, allowed)
    assert rows(greedy(head, memory, mask, max_len=MAX_LEN, allowed_words=allowed)[0]) == expected


def test_beam_size_one_equals_greedy():
    head = make_head()
    memory, mask = make_memory()
    g_tokens, g_scores = greedy(head, memory, mask, max_len=MAX_LEN)
    b_tokens, b_scores = beam_search(head, memory, mask, max_len=MAX_LEN, beam_size=1)
    assert rows(b_tokens) == rows(g_tokens)
    assert torch.allclose(b_scores, g_scores, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_scores_at_least_greedy(seed):
    head = make_head(seed=seed)
    memory, mask = make_memory(seed + 10)
    _, g_scores = greedy(head, memory, mask, max_len=MAX_LEN)
    tokens, scores = beam_search(head, memory, mask, max_len=MAX_LEN, beam_size=4)
    assert (scores >= g_scores - 1e-5).all()
    assert (scores > g_scores + 1e-3).any()  # the search finds something better somewhere
    # the returned scores are the sequences' log-probabilities under the model
    assert torch.allclose(scores, sequence_log_prob(head, memory, mask, tokens), atol=1e-4)
    for b, row in enumerate(rows(tokens)):
        assert len(row) - 1 <= MAX_LEN[b]


def test_beam_search_length_penalty_prefers_longer_answers():
    head = make_head()
    memory, mask = make_memory()
    short, _ = beam_search(head, memory, mask, max_len=MAX_LEN, beam_size=5, length_penalty=0.0)
    long, _ = beam_search(head, memory, mask, max_len=MAX_LEN, beam_size=5, length_penalty=2.0)
    n_short = sum(len(r) for r in rows(short))
    n_long = sum(len(r) for r in rows(long))
    assert n_long >= n_short
