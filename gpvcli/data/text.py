"""Text normalization and category-mention detection.

`normalize(text)` lower-cases, drops possessive 's, turns every character that is
not a letter or digit into a space and splits on whitespace. A category is
mentioned when one of its phrases (`categories.phrases`) occurs as a contiguous
run of normalized tokens. Matching is longest-first, left to right, and a token
belongs to at most one match, so "hot dog" is not a mention of "dog", "teddy bear"
not of "bear", and "wine glass" not of "cup" (whose synonyms include "glass").
"""

from __future__ import annotations

import functools
import re

from gpvcli.data import categories as cats

_POSSESSIVE = re.compile(r"'s\b")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize(text: str) -> list[str]:
    text = _POSSESSIVE.sub("", text.lower().replace("\u2019", "'"))
    return _NON_WORD.sub(" ", text).split()


@functools.lru_cache(maxsize=1)
def _phrase_table() -> tuple[dict[tuple[str, ...], str], int]:
    table: dict[tuple[str, ...], str] = {}
    for c in cats.categories():
        for p in cats.phrases(c.name):
            key = tuple(normalize(p))
            if key in table and table[key] != c.name:
                raise ValueError(f"phrase {p!r} is ambiguous: {table[key]} and {c.name}")
            table[key] = c.name
    return table, max(len(k) for k in table)


def mentions(tokens: list[str]) -> list[str]:
    """Category names mentioned in normalized `tokens`, in order of first mention."""
    table, longest = _phrase_table()
    found: list[str] = []
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            name = table.get(tuple(tokens[i:i + n]))
            if name is not None:
                if name not in found:
                    found.append(name)
                i += n
                break
        else:
            i += 1
    return found


def mentions_in(*texts: str) -> list[str]:
    """Mentions over several texts (e.g. query and answer), each matched on its own."""
    found: list[str] = []
    for t in texts:
        for name in mentions(normalize(t)):
            if name not in found:
                found.append(name)
    return found
