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
def _phrase_table() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First token -> [(phrase tokens, category name)], longest phrase first."""
    table: dict[tuple[str, ...], str] = {}
    for c in cats.categories():
        for p in cats.phrases(c.name):
            key = tuple(normalize(p))
            if key in table and table[key] != c.name:
                raise ValueError(f"phrase {p!r} is ambiguous: {table[key]} and {c.name}")
            table[key] = c.name
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for key, name in sorted(table.items(), key=lambda kv: -len(kv[0])):
        by_first.setdefault(key[0], []).append((key, name))
    return by_first


def mentions(tokens: list[str]) -> list[str]:
    """Category names mentioned in normalized `tokens`, in order of first mention."""
    by_first = _phrase_table()
    found: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        step = 1
        for key, name in by_first.get(tokens[i], ()):
            if tuple(tokens[i:i + len(key)]) == key:
                if name not in found:
                    found.append(name)
                step = len(key)
                break
        i += step
    return found


def mentions_in(*texts: str) -> list[str]:
    """Mentions over several texts (e.g. query and answer), each matched on its own."""
    found: list[str] = []
    for t in texts:
        for name in mentions(normalize(t)):
            if name not in found:
                found.append(name)
    return found


OBJECT, OBJECTS = "[OBJECT]", "[OBJECTS]"


def object_template(text: str) -> str | None:
    """`text` with every mention of the one category it mentions replaced by "[OBJECT]" (singular) or
    "[OBJECTS]" (plural), e.g. "How many cups are there?" -> "How many [OBJECTS] are there?"; None when it
    mentions no category or several. `fill_template` puts any category in its place."""
    names = mentions(normalize(text))
    if len(names) != 1:
        return None
    singular = [names[0], *cats.SYNONYMS.get(names[0], ())]
    for phrase in sorted(cats.phrases(names[0]), key=len, reverse=True):      # "teddy bears" before "teddy"
        words = r"[^a-z0-9]+".join(re.escape(w) for w in normalize(phrase))
        marker = OBJECT if phrase in singular else OBJECTS
        text = re.sub(rf"(?<![a-z0-9]){words}(?![a-z0-9])", marker, text, flags=re.IGNORECASE)
    return text if OBJECT[:-1] in text and not mentions(normalize(text)) else None


def fill_template(template: str, name: str) -> str:
    """The category `name` in the place of `object_template`'s markers (plural for "[OBJECTS]")."""
    return template.replace(OBJECTS, cats.plural(name)).replace(OBJECT, name)
