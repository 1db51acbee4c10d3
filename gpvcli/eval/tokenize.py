"""Caption tokenization for CIDEr-D, in pure Python.

pycocoevalcap runs Stanford's PTBTokenizer (Java, `-lowerCase`) and then drops the
punctuation tokens '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;.
`tokenize_caption` approximates that without Java:

1. lower-case; newlines become spaces;
2. clitics split off as PTB does: "don't" -> "do n't", "can't" -> "ca n't",
   "dog's" -> "dog 's", "they're" -> "they 're" ('s 're 've 'll 'd 'm n't);
3. tokens: numbers with inner , . : ("1,000", "3.5", "10:30"), dotted abbreviations
   ("u.s."), words with inner hyphens or apostrophes kept whole ("black-and-white",
   "o'clock"), "..." and "--", and any other single symbol;
4. punctuation is dropped: the tokens above plus brackets and quote characters
   (PTB turns those into the -LRB-/``/'' tokens that pycocoevalcap removes).
   Other symbols ("&", "$", "%", "#") stay, as in PTB.

Known differences from PTB: abbreviations without inner periods ("mr.") lose their
final period, and PTB's rarer splits ("cannot" -> "can not", "gonna") are not made.
"""

from __future__ import annotations

import re

_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(
    r"\d+(?:[.,:]\d+)+"  # numbers with inner separators
    r"|[a-z](?:\.[a-z])+\.?"  # dotted abbreviations
    r"|n't|'(?:s|re|ve|ll|d|m)\b"  # clitics split off above
    r"|\w+(?:['-]\w+)*"  # words, inner hyphens/apostrophes kept
    r"|\.\.\.|--|[^\s\w]"  # punctuation and other symbols, one each
)
_DROPPED = frozenset({"'", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"', "(", ")", "[", "]",
                      "{", "}", "\u2018", "\u2019", "\u201c", "\u201d"})


def tokenize_caption(text: str) -> str:
    """Lower-cased, PTB-style tokens of `text` without punctuation, joined by single spaces."""
    text = _CLITIC.sub(r"\1 \2", text.lower().replace("\n", " "))
    return " ".join(t for t in _TOKEN.findall(text) if t not in _DROPPED)
