"""The words of the synthetic world: captions, VQA questions with ten answers, referring expressions.
Every function draws from the numpy Generator passed in."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from gpvcli.data import categories as cats
from gpvcli.synth.render import COLOUR_NAMES
from gpvcli.synth.scene import Obj, category_weights, pick, subset, weighted

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Synonyms left out of generated text: not countable singular nouns, or implying a colour.
_AVOID = {"people", "cattle", "luggage", "grizzly", "polar bear", "brown bear"}
COLOUR_SYNONYMS = {"gray": ("grey",), "purple": ("violet",), "pink": ("light pink",)}


# --------------------------------------------------------------------------- words


def synonyms(category: str) -> list[str]:
    """The category's synonyms usable in generated text (singular)."""
    return [s for s in cats.SYNONYMS[category] if s not in _AVOID]


def noun(rng: np.random.Generator, category: str, plural: bool = False, p_synonym: float = 0.35) -> str:
    """The category name or (with probability p_synonym) one of its synonyms, singular or plural."""
    options = synonyms(category)
    word = pick(rng, options) if options and rng.random() < p_synonym else category
    return cats.plural(word) if plural else word


def indefinite(word: str, colour: str | None = None) -> str:
    """'a red dog', 'an apple', 'a pair of skis', 'some broccoli'."""
    phrase = f"{colour} {word}" if colour else word
    if word in ("skis", "scissors"):
        return f"a pair of {phrase}"
    if word == "broccoli":
        return f"some {phrase}"
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def counted(rng: np.random.Generator, category: str, n: int) -> str:
    """'a dog', 'two puppies', 'three pairs of skis'."""
    word = noun(rng, category, plural=n > 1)
    if n == 1:
        return indefinite(word)
    if word in ("skis", "scissors"):
        return f"{NUMBER_WORDS[n]} pairs of {word}"
    if word == "broccoli":
        return f"{NUMBER_WORDS[n]} pieces of broccoli"
    return f"{NUMBER_WORDS[n]} {word}"


def relation(a: Obj, b: Obj) -> str:
    """Where a is relative to b, along the axis with the larger centre offset."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def region(o: Obj, width: int, height: int) -> str:
    """'in the top left corner', 'at the bottom', 'in the middle' from the object's centre."""
    col = ("left", "", "right")[min(int(3 * o.cx / width), 2)]
    row = ("top", "", "bottom")[min(int(3 * o.cy / height), 2)]
    if row and col:
        return f"in the {row} {col} corner"
    if row or col:
        return f"on the {row or col}" if col else f"at the {row}"
    return "in the middle"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- captions


def captions(rng: np.random.Generator, objs: list[Obj], width: int, height: int) -> list[str]:
    """Five captions in different phrasings, each naming 1-3 of the scene's categories."""
    count = Counter(o.category for o in objs)
    names = sorted(count, key=lambda c: (-count[c], c))

    def two_apart():
        pairs = [(a, b) for a in objs for b in objs if a.category != b.category]
        return pick(rng, pairs) if pairs else None

    def relation_pair():
        pair = two_apart()
        if pair is None:
            return None
        a, b = pair
        colour = a.colour if rng.random() < 0.6 else None
        first, second = indefinite(noun(rng, a.category), colour), indefinite(noun(rng, b.category))
        return f"{first} {relation(a, b)} {second}"

    def the_relation():
        pair = two_apart()
        if pair is None:
            return None
        a, b = pair
        word = noun(rng, a.category)
        verb = "are" if word in ("skis", "scissors") else "is"
        return f"the {a.colour} {word} {verb} {relation(a, b)} the {noun(rng, b.category)}"

    def there_are():
        c = names[0] if count[names[0]] > 1 and rng.random() < 0.7 else pick(rng, names)
        return (f"there {'are' if count[c] > 1 else 'is'} {counted(rng, c, count[c])} "
                f"{pick(rng, ['in this picture', 'in the image', 'in this photo', 'here'])}")

    def listing():
        chosen = subset(rng, len(names), min(len(names), int(rng.integers(2, 4))))
        parts = [counted(rng, names[i], count[names[i]]) for i in chosen]
        joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{pick(rng, ['a picture of', 'an image of', 'a photo of', 'a view of'])} {joined}"

    def biggest():
        o = max(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
        rest = pick(rng, ["with some smaller things around it", "and a few other objects",
                           "among other things", "on a plain background"])
        return f"a large {o.colour} {noun(rng, o.category)} {rest}"

    def placed():
        o = pick(rng, objs)
        return f"{indefinite(noun(rng, o.category), o.colour)} {region(o, width, height)}"

    def next_to():
        if len(names) < 2:
            return None
        a, b = rng.permutation(len(names))[:2].tolist()
        prep = pick(rng, ["next to", "near", "beside", "close to", "and"])
        return f"{counted(rng, names[a], count[names[a]])} {prep} {counted(rng, names[b], count[names[b]])}"

    def several():
        c = pick(rng, names)
        other = pick(rng, [o for o in objs if o.category != c] or objs)
        many = "several" if count[c] > 2 else NUMBER_WORDS[count[c]] if count[c] > 1 else "a single"
        word = noun(rng, c, plural=count[c] > 1)
        return f"{many} {word} and {indefinite(noun(rng, other.category), other.colour)}"

    templates = [relation_pair, the_relation, there_are, listing, biggest, placed, next_to, several]
    out: list[str] = []
    for i in rng.permutation(len(templates)).tolist():
        text = templates[i]()
        if text is not None and _sentence(text) not in out:
            out.append(_sentence(text))
        if len(out) == 5:
            return out
    while len(out) < 5:  # tiny scenes: fall back to the always-applicable templates
        out.append(_sentence(pick(rng, [there_are, listing, biggest, placed])()))
    return out


# --------------------------------------------------------------------------- questions


def _absent(rng: np.random.Generator, present: set[str]) -> str:
    """A category not in `present`, drawn with the scene frequencies."""
    names = [c.name for c in cats.categories()]
    return names[weighted(rng, category_weights() * np.array([n not in present for n in names]))]


def _nearest(objs: list[Obj], ref: Obj, direction: str) -> Obj | None:
    """The object closest to `ref` in `direction`, if clearly closer than the next one."""
    cands = sorted((np.hypot(o.cx - ref.cx, o.cy - ref.cy), i) for i, o in enumerate(objs)
                   if o is not ref and relation(o, ref) == direction)
    if not cands or (len(cands) > 1 and cands[1][0] < 1.3 * cands[0][0]):
        return None
    return objs[cands[0][1]]


# Each question template: (rng, objects) -> (question, right answer, synonyms of the answer, topic), or None
# when the scene has none. Questions with the same topic give each other away; an image asks one per topic.
Question = tuple[str, str, list[str], str]


def _present(rng: np.random.Generator, objs: list[Obj], *, plural: bool) -> Question:
    """'Is there a dog?' / 'Are there any dogs in the image?', about a present or (half the time) absent category."""
    count = Counter(o.category for o in objs)
    c = pick(rng, sorted(count)) if rng.random() < 0.5 else _absent(rng, set(count))
    where = pick(rng, ["", " in the picture", " in the image", " in this photo"])
    answer = "yes" if c in count else "no"
    if plural:
        return f"Are there any {noun(rng, c, plural=True)}{where}?", answer, [], f"present {c}"
    return f"Is there {indefinite(noun(rng, c))}{where}?", answer, [], f"present {c}"


def _one_of_a_kind(rng: np.random.Generator, objs: list[Obj]) -> Obj | None:
    """An object that is the only one of its category, drawn uniformly (None when there is none)."""
    count = Counter(o.category for o in objs)
    unique = [o for o in objs if count[o.category] == 1]
    return pick(rng, unique) if unique else None


def _is_colour(rng: np.random.Generator, objs: list[Obj]) -> Question | None:
    """'Is the dog red?', right half the time."""
    o = _one_of_a_kind(rng, objs)
    if o is None:
        return None
    asked = o.colour if rng.random() < 0.5 else pick(rng, [c for c in COLOUR_NAMES if c != o.colour])
    return (f"Is the {noun(rng, o.category)} {asked}?", "yes" if asked == o.colour else "no", [],
            f"colour {o.category}")


def _how_many(rng: np.random.Generator, objs: list[Obj]) -> Question:
    """'How many dogs are there?', mostly of a category with several instances, sometimes of an absent one."""
    count = Counter(o.category for o in objs)
    multi = sorted(c for c in count if count[c] > 1)
    r = rng.random()
    if r < 0.15:
        c = _absent(rng, set(count))
    else:
        c = pick(rng, multi) if multi and r < 0.8 else pick(rng, sorted(count))
    n = count.get(c, 0)
    tail = pick(rng, ["are there", "are in the picture", "can you see", "are in the image"])
    return f"How many {noun(rng, c, plural=True)} {tail}?", str(n), [NUMBER_WORDS[n]], f"count {c}"


def _what_colour(rng: np.random.Generator, objs: list[Obj]) -> Question | None:
    """'What color is the dog?'"""
    o = _one_of_a_kind(rng, objs)
    if o is None:
        return None
    return (f"What color is the {noun(rng, o.category)}?", o.colour,
            list(COLOUR_SYNONYMS.get(o.colour, ())), f"colour {o.category}")


def _which_by_colour(rng: np.random.Generator, objs: list[Obj]) -> Question | None:
    """'What is the red object?', about the only object of its colour."""
    colours = Counter(o.colour for o in objs)
    single = [o for o in objs if colours[o.colour] == 1]
    if not single:
        return None
    o = pick(rng, single)
    thing = pick(rng, ["object", "thing", "item"])
    return f"What is the {o.colour} {thing}?", o.category, synonyms(o.category)[:3], f"which {o.colour}"


def _which_by_place(rng: np.random.Generator, objs: list[Obj]) -> Question | None:
    """'What is to the left of the bus?', when one object is clearly the nearest that way."""
    ref = _one_of_a_kind(rng, objs)
    if ref is None:
        return None
    direction = pick(rng, ["to the left of", "to the right of", "above", "below"])
    o = _nearest(objs, ref, direction)
    if o is None or o.category == ref.category:
        return None
    return (f"What is {direction} the {noun(rng, ref.category)}?", o.category, synonyms(o.category)[:3],
            f"{direction} {ref.category}")


QUESTION_TYPES = {  # question_type -> (answer_type, probability, template)
    "is there a": ("yes/no", 0.14, functools.partial(_present, plural=False)),
    "are there": ("yes/no", 0.06, functools.partial(_present, plural=True)),
    "is the": ("yes/no", 0.10, _is_colour),
    "how many": ("number", 0.20, _how_many),
    "what color is the": ("other", 0.18, _what_colour),
    "what is the": ("other", 0.16, _which_by_colour),
    "what is": ("other", 0.16, _which_by_place),
}


def answers(rng: np.random.Generator, answer_type: str, right: str, alternatives: list[str],
            objs: list[Obj]) -> list[dict]:
    """Ten VQA answer dicts (answer, answer_confidence, answer_id 1-10): 7-10 right, the rest
    an alternative wording of the right answer (a synonym) or a wrong answer, shuffled."""
    n_noise = weighted(rng, (0.45, 0.3, 0.17, 0.08))
    given = [(right, "yes" if rng.random() < 0.85 else "maybe") for _ in range(10 - n_noise)]
    for _ in range(n_noise):
        if alternatives and rng.random() < 0.5:
            given.append((pick(rng, alternatives), "maybe"))
            continue
        if answer_type == "yes/no":
            wrong = "no" if right == "yes" else "yes"
        elif answer_type == "number":
            wrong = str(max(int(right) + pick(rng, [-1, 1]), 0) if right != "0" else 1)
        elif right in COLOUR_NAMES:
            wrong = pick(rng, [c for c in COLOUR_NAMES if c != right])
        else:
            others = sorted({o.category for o in objs} - {right})
            wrong = pick(rng, others) if others else _absent(rng, {right})
        given.append((wrong, pick(rng, ["maybe", "no"])))
    order = rng.permutation(10).tolist()
    return [{"answer": given[i][0], "answer_confidence": given[i][1], "answer_id": k + 1}
            for k, i in enumerate(order)]


def questions(rng: np.random.Generator, objs: list[Obj]) -> list[dict]:
    """3-5 questions (fewer only when the scene offers no more topics): dicts with question,
    question_type, answer_type, answers, multiple_choice_answer (the most frequent answer)."""
    types = list(QUESTION_TYPES)
    p = [QUESTION_TYPES[t][1] for t in types]
    out: list[dict] = []
    topics: set[str] = set()
    wanted = int(rng.integers(3, 6))
    for _ in range(4 * wanted):
        qtype = types[weighted(rng, p)]
        made = QUESTION_TYPES[qtype][2](rng, objs)
        if made is None or made[3] in topics:
            continue
        text, right, alternatives, topic = made
        topics.add(topic)
        answer_type = QUESTION_TYPES[qtype][0]
        given = answers(rng, answer_type, right, alternatives, objs)
        votes = Counter(a["answer"] for a in given)
        out.append({"question": text, "question_type": qtype, "answer_type": answer_type, "answers": given,
                    "multiple_choice_answer": max(votes, key=lambda a: (votes[a], a == right))})
        if len(out) == wanted:
            break
    return out


# --------------------------------------------------------------------------- referring expressions


def referring(rng: np.random.Generator, objs: list[Obj]) -> list[tuple[int, list[str]]]:
    """1-2 (object index, sentences) pairs for objects set apart by colour or position
    from the other objects of their category; categories with several instances first."""
    count = Counter(o.category for o in objs)
    wanted = int(rng.integers(1, 3))
    found: list[tuple[int, list[str]]] = []
    for i in sorted(range(len(objs)), key=lambda i: (-count[objs[i].category], rng.random())):
        o = objs[i]
        same = [s for s in objs if s.category == o.category and s is not o]
        word = noun(rng, o.category)
        sentences = []
        if all(s.colour != o.colour for s in same):
            sentences += [f"the {o.colour} {word}", f"{o.colour} {word}"]
        if same:
            gap = min(abs(s.cx - o.cx) for s in same)
            if gap > 8 and all(s.cx > o.cx for s in same):
                sentences += [f"{word} on the left", f"leftmost {word}"]
            if gap > 8 and all(s.cx < o.cx for s in same):
                sentences += [f"{word} on the right", f"the rightmost {word}"]
        else:
            sentences.append(f"the {word}")
        if not sentences:
            continue
        keep = subset(rng, len(sentences), min(len(sentences), int(rng.integers(1, 4))))
        found.append((i, [sentences[k] for k in keep]))
        if len(found) == wanted:
            break
    return found
