"""The word-level answer vocabulary of the text decoder.

Words are `text.normalize` tokens of the training targets. Ids 0-3 are special:
PAD, START, STOP, UNK. The vocabulary is saved as JSON: {"words": [...], "min_count": N}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from gpvcli import io
from gpvcli.data.text import normalize

PAD, START, STOP, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


class Vocab:
    def __init__(self, words: Iterable[str]):
        self.words = list(words)
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocab:
        """Words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts: Counter = Counter()
        for text, n in Counter(texts).items():
            for t in normalize(text):
                counts[t] += n
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept])

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Token ids of `text` followed by STOP (no START); truncated to max_len tokens before STOP."""
        ids = [self.index.get(t, UNK) for t in normalize(text)]
        if max_len is not None:
            ids = ids[:max_len]
        return ids + [STOP]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first STOP, skipping PAD and START."""
        out = []
        for i in ids:
            i = int(i)
            if i == STOP:
                break
            if i not in (PAD, START):
                out.append(self.words[i])
        return " ".join(out)

    def to_json(self, min_count: int) -> str:
        """vocab.json's text."""
        return io.json_text({"words": self.words, "min_count": min_count}, indent=None)

    def save(self, path: str | Path, min_count: int) -> None:
        io.write_text(path, self.to_json(min_count))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        data = io.read_json(path, "answer vocabulary")
        return cls(data["words"])
