"""`gpv synth`: a synthetic world written in the COCO 2014 / VQA v2 file formats.

`generate(out_dir, ...)` writes, under out_dir:

    images/{train2014,val2014}/COCO_{split}_{id:012d}.jpg     RGB JPEG, width x height
    annotations/instances_{split}.json                        COCO instances
    annotations/captions_{split}.json                         COCO captions, five per image
    annotations/v2_OpenEnded_mscoco_{split}_questions.json    VQA v2 questions
    annotations/v2_mscoco_{split}_annotations.json            VQA v2 answers, ten per question
    annotations/refexp_{split}.json                           referring expressions (format below)
    baselines.json                                            the two shortcut baselines

The world. Every image holds 5-12 objects (9 on average) of 5-10 COCO categories,
usually with 2-3 instances of one or two of them, drawn with category frequencies
that fall off like COCO's (person most common, 18 times the rarest). An object's
category decides its look (`synth_render`: silhouette x texture); its colour (a
named palette), size (long side 16-48 px at 128x96) and position do not. Objects
overlap at most slightly.
Boxes are the tight pixel boxes of the drawn shapes, [x, y, w, h] with continuous
corners (a box [0, 0, 2, 1] covers pixels (0, 0) and (1, 0)); the segmentation is
the box as a polygon. Image, annotation, caption and reference ids are unique over
both splits; question_id = image_id * 1000 + k.

Text. Captions name 1-3 categories with counts, plurals, colours, spatial relations
and synonyms (`categories.SYNONYMS`), held-out categories included. Questions are
yes/no ("Is there a dog?", absent categories half the time), number ("How many
dogs are there?") and other ("What color is the dog?", "What is the red object?",
"What is to the left of the bus?"), with VQA question_type strings. Seven to ten
of the ten answers are right; the rest are a synonym or a wrong answer.

Referring expressions (our format, RefCOCO-like; COCO has none of its own):

    {"info": {...},
     "refs": [{"ref_id": int, "image_id": int, "ann_id": int, "category_id": int,
               "sentences": ["the red dog", "dog on the left", ...]}]}

One or two refs per image, each for an object that its colour or position sets
apart from the other objects of its category; the target box is the instance
annotation `ann_id`.

Baselines (baselines.json) measure how far shortcuts go: an image-blind answer prior
and a class-blind localizer (see `baselines`). Everything is deterministic for a
seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import io as _bytes_io
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gpvcli import io
from gpvcli.data import categories as cats
from gpvcli.data.synth_render import COLOUR_NAMES, Sprite, render
from gpvcli.errors import GPVError
from gpvcli.progress import progress_bar

SPLITS = ("train2014", "val2014")
JPEG_QUALITY = 92
# COCO's categories from most to least frequent (by instance count), for uneven frequencies.
FREQUENCY_ORDER = (
    "person", "car", "chair", "book", "bottle", "cup", "dining table", "bowl", "traffic light", "handbag",
    "umbrella", "bird", "boat", "truck", "bench", "sheep", "banana", "kite", "motorcycle", "backpack",
    "potted plant", "cow", "wine glass", "carrot", "knife", "broccoli", "donut", "bicycle", "skis", "vase",
    "horse", "tie", "cell phone", "orange", "cake", "sports ball", "clock", "suitcase", "spoon", "surfboard",
    "bus", "apple", "pizza", "tv", "couch", "remote", "sink", "skateboard", "elephant", "dog",
    "fork", "zebra", "airplane", "giraffe", "laptop", "tennis racket", "teddy bear", "cat", "train",
    "sandwich",
    "bed", "toilet", "baseball glove", "oven", "baseball bat", "hot dog", "keyboard", "snowboard", "frisbee",
    "refrigerator", "mouse", "stop sign", "toothbrush", "fire hydrant", "microwave", "scissors",
    "parking meter", "bear", "toaster", "hair drier",
)
PERSON_BOOST = 2.0
MAX_OBJECTS = 12
MAX_IMAGES = 200_000
MAX_IMAGE_ID = 600_000  # COCO-like ids; question ids (image_id * 1000 + k) stay below 2**31
PARALLEL_FROM = 1000  # smaller worlds render in-process (starting workers costs about a second)
LOCALIZER_DRAWS = 3
LOCALIZER_SAMPLES = 2000
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Synonyms left out of generated text: not countable singular nouns, or implying a colour.
_AVOID = {"people", "cattle", "luggage", "grizzly", "polar bear", "brown bear"}
COLOUR_SYNONYMS = {"gray": ("grey",), "purple": ("violet",), "pink": ("light pink",)}
INFO = {"description": "gpvcli synthetic COCO-format world", "version": "1.0", "year": 2014,
        "contributor": "gpvcli", "url": "", "date_created": "2014-01-01"}
LICENSES = [{"id": 1, "name": "public domain (synthetic images)", "url": ""}]


@functools.lru_cache(maxsize=1)
def category_weights() -> np.ndarray:
    """(80,) read-only sampling probabilities in COCO order: a power law over `FREQUENCY_ORDER`,
    person boosted."""
    rank = {name: r for r, name in enumerate(FREQUENCY_ORDER)}
    w = np.array([(rank[c.name] + 1.0) ** -0.5 for c in cats.categories()])
    w[0] *= PERSON_BOOST  # person is category 0
    w /= w.sum()
    w.flags.writeable = False
    return w


@dataclass(frozen=True)
class Obj:
    """One object of a scene: category name, colour name and tight box xyxy in pixels."""

    category: str
    colour: str
    box: tuple[float, float, float, float]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


# --------------------------------------------------------------------------- layout


def layout(rng: np.random.Generator, width: int, height: int) -> list[Sprite]:
    """Sprites of one scene, largest first (drawing order), boxes inside the image.

    5-10 distinct categories (`category_weights`); none, one or two of them get 2-3
    instances; at most MAX_OBJECTS objects. Crowded scenes keep the class-blind localizer
    baseline low: with 1-4 objects, ranking all boxes at random already scores AP@0.5 0.64.
    Objects are placed at random where the overlap of their boxes with each placed box is
    at most 15% of the smaller box (shrinking after every 15 failed tries, the long side
    kept >= 16 px at 128x96); an object that does not fit after 60 tries is dropped.
    """
    scale = min(width / 128, height / 96)
    smin, smax = 16 * scale, 48 * scale
    n_cats = int(rng.integers(5, 11))
    # weighted draw without replacement: the n smallest Exp(1) / weight keys
    chosen = np.argsort(rng.exponential(size=len(FREQUENCY_ORDER)) / category_weights())[:n_cats]
    counts = np.ones(n_cats, dtype=int)
    n_multi = _weighted(rng, (0.2, 0.5, 0.3))
    counts[:n_multi] = rng.integers(2, 4, size=n_multi)
    instances = np.repeat(chosen, counts)[:MAX_OBJECTS]
    longs = np.sort(smin + (smax - smin) * rng.beta(1.2, 3.5, size=len(instances)))[::-1]
    placed: list[Sprite] = []
    for cat, long in zip(instances.tolist(), longs.tolist(), strict=True):
        short = long * rng.uniform(0.7, 1.0)
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        for attempt in range(60):
            if attempt and attempt % 15 == 0:  # hard to fit: shrink, keeping the long side >= smin
                shrink = max(0.85, smin / max(w, h))
                w, h = w * shrink, h * shrink
            wi, hi = round(w), round(h)
            x0 = int(rng.integers(0, width - wi + 1))
            y0 = int(rng.integers(0, height - hi + 1))
            if all(_overlap_ok((x0, y0, wi, hi), (p.x0, p.y0, p.w, p.h)) for p in placed):
                placed.append(Sprite(cat, _pick(rng, COLOUR_NAMES), x0, y0, wi, hi))
                break
    return placed


def _overlap_ok(a: tuple[int, int, int, int], b: tuple[int, int, int, int], limit: float = 0.15) -> bool:
    """Boxes (x0, y0, w, h): intersection at most `limit` of the smaller box's area."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return True
    return iw * ih <= limit * min(a[2] * a[3], b[2] * b[3])


# --------------------------------------------------------------------------- words


def synonyms(category: str) -> list[str]:
    """The category's synonyms usable in generated text (singular)."""
    return [s for s in cats.SYNONYMS[category] if s not in _AVOID]


def noun(rng: np.random.Generator, category: str, plural: bool = False, p_synonym: float = 0.35) -> str:
    """The category name or (with probability p_synonym) one of its synonyms, singular or plural."""
    options = synonyms(category)
    word = _pick(rng, options) if options and rng.random() < p_synonym else category
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


def _pick(rng: np.random.Generator, items):
    """One item of a non-empty sequence, uniformly."""
    return items[int(rng.random() * len(items))]


def _weighted(rng: np.random.Generator, weights) -> int:
    """An index drawn with probability proportional to `weights`."""
    cum = np.cumsum(weights)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def _subset(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """k distinct indices of range(n) (k <= n), in increasing order."""
    return sorted(rng.permutation(n)[:k].tolist())


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- captions


def captions(rng: np.random.Generator, objs: list[Obj], width: int, height: int) -> list[str]:
    """Five captions in different phrasings, each naming 1-3 of the scene's categories."""
    count = Counter(o.category for o in objs)
    names = sorted(count, key=lambda c: (-count[c], c))

    def two_apart():
        pairs = [(a, b) for a in objs for b in objs if a.category != b.category]
        return _pick(rng, pairs) if pairs else None

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
        c = names[0] if count[names[0]] > 1 and rng.random() < 0.7 else _pick(rng, names)
        return (f"there {'are' if count[c] > 1 else 'is'} {counted(rng, c, count[c])} "
                f"{_pick(rng, ['in this picture', 'in the image', 'in this photo', 'here'])}")

    def listing():
        chosen = _subset(rng, len(names), min(len(names), int(rng.integers(2, 4))))
        parts = [counted(rng, names[i], count[names[i]]) for i in chosen]
        joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{_pick(rng, ['a picture of', 'an image of', 'a photo of', 'a view of'])} {joined}"

    def biggest():
        o = max(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
        rest = _pick(rng, ["with some smaller things around it", "and a few other objects",
                           "among other things", "on a plain background"])
        return f"a large {o.colour} {noun(rng, o.category)} {rest}"

    def placed():
        o = _pick(rng, objs)
        return f"{indefinite(noun(rng, o.category), o.colour)} {region(o, width, height)}"

    def next_to():
        if len(names) < 2:
            return None
        a, b = rng.permutation(len(names))[:2].tolist()
        prep = _pick(rng, ["next to", "near", "beside", "close to", "and"])
        return f"{counted(rng, names[a], count[names[a]])} {prep} {counted(rng, names[b], count[names[b]])}"

    def several():
        c = _pick(rng, names)
        other = _pick(rng, [o for o in objs if o.category != c] or objs)
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
        out.append(_sentence(_pick(rng, [there_are, listing, biggest, placed])()))
    return out


# --------------------------------------------------------------------------- questions


QUESTION_TYPES = {  # question_type -> (answer_type, probability)
    "is there a": ("yes/no", 0.14),
    "are there": ("yes/no", 0.06),
    "is the": ("yes/no", 0.10),
    "how many": ("number", 0.20),
    "what color is the": ("other", 0.18),
    "what is the": ("other", 0.16),
    "what is": ("other", 0.16),
}


def _absent(rng: np.random.Generator, present: set[str]) -> str:
    """A category not in `present`, drawn with the scene frequencies."""
    names = [c.name for c in cats.categories()]
    return names[_weighted(rng, category_weights() * np.array([n not in present for n in names]))]


def _nearest(objs: list[Obj], ref: Obj, direction: str) -> Obj | None:
    """The object closest to `ref` in `direction`, if clearly closer than the next one."""
    cands = sorted((np.hypot(o.cx - ref.cx, o.cy - ref.cy), i) for i, o in enumerate(objs)
                   if o is not ref and relation(o, ref) == direction)
    if not cands or (len(cands) > 1 and cands[1][0] < 1.3 * cands[0][0]):
        return None
    return objs[cands[0][1]]


def question(rng: np.random.Generator, qtype: str, objs: list[Obj]) -> tuple[str, str, list[str], str] | None:
    """(question, right answer, synonyms of the answer, topic) of type `qtype`, or None when the
    scene has none. Questions with the same topic give each other away; an image asks one per topic."""
    count = Counter(o.category for o in objs)
    unique = [o for o in objs if count[o.category] == 1]
    if qtype in ("is there a", "are there"):
        c = _pick(rng, sorted(count)) if rng.random() < 0.5 else _absent(rng, set(count))
        where = _pick(rng, ["", " in the picture", " in the image", " in this photo"])
        answer = "yes" if c in count else "no"
        if qtype == "is there a":
            return f"Is there {indefinite(noun(rng, c))}{where}?", answer, [], f"present {c}"
        return f"Are there any {noun(rng, c, plural=True)}{where}?", answer, [], f"present {c}"
    if qtype == "is the":
        if not unique:
            return None
        o = _pick(rng, unique)
        asked = o.colour if rng.random() < 0.5 else _pick(rng, [c for c in COLOUR_NAMES if c != o.colour])
        return (f"Is the {noun(rng, o.category)} {asked}?", "yes" if asked == o.colour else "no", [],
                f"colour {o.category}")
    if qtype == "how many":
        multi = sorted(c for c in count if count[c] > 1)
        r = rng.random()
        if r < 0.15:
            c = _absent(rng, set(count))
        else:
            c = _pick(rng, multi) if multi and r < 0.8 else _pick(rng, sorted(count))
        n = count.get(c, 0)
        tail = _pick(rng, ["are there", "are in the picture", "can you see", "are in the image"])
        return f"How many {noun(rng, c, plural=True)} {tail}?", str(n), [NUMBER_WORDS[n]], f"count {c}"
    if qtype == "what color is the":
        if not unique:
            return None
        o = _pick(rng, unique)
        return (f"What color is the {noun(rng, o.category)}?", o.colour,
                list(COLOUR_SYNONYMS.get(o.colour, ())), f"colour {o.category}")
    if qtype == "what is the":
        colours = Counter(o.colour for o in objs)
        single = [o for o in objs if colours[o.colour] == 1]
        if not single:
            return None
        o = _pick(rng, single)
        thing = _pick(rng, ["object", "thing", "item"])
        return f"What is the {o.colour} {thing}?", o.category, synonyms(o.category)[:3], f"which {o.colour}"
    if qtype == "what is":
        if not unique:
            return None
        ref = _pick(rng, unique)
        direction = _pick(rng, ["to the left of", "to the right of", "above", "below"])
        o = _nearest(objs, ref, direction)
        if o is None or o.category == ref.category:
            return None
        return (f"What is {direction} the {noun(rng, ref.category)}?", o.category, synonyms(o.category)[:3],
                f"{direction} {ref.category}")
    raise ValueError(f"unknown question type {qtype!r}")


def answers(rng: np.random.Generator, answer_type: str, right: str, alternatives: list[str],
            objs: list[Obj]) -> list[dict]:
    """Ten VQA answer dicts (answer, answer_confidence, answer_id 1-10): 7-10 right, the rest
    an alternative wording of the right answer (a synonym) or a wrong answer, shuffled."""
    n_noise = _weighted(rng, (0.45, 0.3, 0.17, 0.08))
    given = [(right, "yes" if rng.random() < 0.85 else "maybe") for _ in range(10 - n_noise)]
    for _ in range(n_noise):
        if alternatives and rng.random() < 0.5:
            given.append((_pick(rng, alternatives), "maybe"))
            continue
        if answer_type == "yes/no":
            wrong = "no" if right == "yes" else "yes"
        elif answer_type == "number":
            wrong = str(max(int(right) + _pick(rng, [-1, 1]), 0) if right != "0" else 1)
        elif right in COLOUR_NAMES:
            wrong = _pick(rng, [c for c in COLOUR_NAMES if c != right])
        else:
            others = sorted({o.category for o in objs} - {right})
            wrong = _pick(rng, others) if others else _absent(rng, {right})
        given.append((wrong, _pick(rng, ["maybe", "no"])))
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
        qtype = types[_weighted(rng, p)]
        made = question(rng, qtype, objs)
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
        keep = _subset(rng, len(sentences), min(len(sentences), int(rng.integers(1, 4))))
        found.append((i, [sentences[k] for k in keep]))
        if len(found) == wanted:
            break
    return found


# --------------------------------------------------------------------------- one image


def make_image(*, seed: int, split: str, index: int, width: int, height: int) -> tuple[bytes, dict]:
    """JPEG bytes and annotations (objects, captions, questions, refs) of one image.

    Depends only on (seed, split, index, width, height).
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    sprites = layout(rng, width, height)
    pixels, boxes = render(sprites, rng, width, height)
    buf = _bytes_io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    names = [c.name for c in cats.categories()]
    objs = [Obj(names[s.category_index], s.colour, tuple(float(v) for v in b))
            for s, b in zip(sprites, boxes, strict=True)]
    return buf.getvalue(), {
        "objects": objs,
        "captions": captions(rng, objs, width, height),
        "questions": questions(rng, objs),
        "refs": referring(rng, objs),
    }


# --------------------------------------------------------------------------- files


def _split_files(split: str, records: list[tuple[int, dict]], width: int, height: int,
                 ids: dict[str, int]) -> dict[str, dict]:
    """The five annotation files of one split from (image_id, make_image annotations) pairs.
    `ids` holds the next free annotation/caption/ref id and is advanced."""
    images, instances, caps, qs, vqa, refs = [], [], [], [], [], []
    for image_id, rec in records:
        images.append({"id": image_id, "file_name": f"COCO_{split}_{image_id:012d}.jpg",
                       "width": width, "height": height})
        ann_ids = []
        for o in rec["objects"]:
            x0, y0, x1, y1 = o.box
            w, h = x1 - x0, y1 - y0
            ann_ids.append(ids["ann"])
            category_id = cats.by_name()[o.category].id
            instances.append({"id": ids["ann"], "image_id": image_id, "category_id": category_id,
                              "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0,
                              "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
            ids["ann"] += 1
        for text in rec["captions"]:
            caps.append({"id": ids["caption"], "image_id": image_id, "caption": text})
            ids["caption"] += 1
        for k, q in enumerate(rec["questions"]):
            qid = image_id * 1000 + k
            qs.append({"image_id": image_id, "question": q["question"], "question_id": qid})
            vqa.append({"question_type": q["question_type"],
                        "multiple_choice_answer": q["multiple_choice_answer"], "answers": q["answers"],
                        "image_id": image_id, "answer_type": q["answer_type"], "question_id": qid})
        for i, sentences in rec["refs"]:
            o = rec["objects"][i]
            refs.append({"ref_id": ids["ref"], "image_id": image_id, "ann_id": ann_ids[i],
                         "category_id": cats.by_name()[o.category].id, "sentences": sentences})
            ids["ref"] += 1
    vqa_info = {**INFO, "description": "gpvcli synthetic VQA v2-format questions"}
    return {
        f"instances_{split}.json": {"info": INFO, "licenses": LICENSES, "images": images,
                                    "annotations": instances, "categories": cats.coco_category_dicts()},
        f"captions_{split}.json": {"info": INFO, "licenses": LICENSES, "images": images, "annotations": caps},
        f"v2_OpenEnded_mscoco_{split}_questions.json": {
            "info": vqa_info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split,
            "license": LICENSES[0], "questions": qs},
        f"v2_mscoco_{split}_annotations.json": {
            "info": vqa_info, "license": LICENSES[0], "data_type": "mscoco", "data_subtype": split,
            "annotations": vqa},
        f"refexp_{split}.json": {"info": {**INFO, "description": "gpvcli synthetic referring expressions"},
                                 "refs": refs},
    }


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / "baselines.json").is_file())):
        raise GPVError(f"{out_dir} exists and is not a synthetic world",
                       hint="give an empty or new folder (an earlier `gpv synth` output is replaced)")


def _write_image(job: tuple) -> dict:
    """Render one image (job = seed, split, index, width, height, path), write its JPEG, return
    its annotations. A module-level function so that worker processes can run it."""
    seed, split, index, width, height, path = job
    jpeg, rec = make_image(seed=seed, split=split, index=index, width=width, height=height)
    Path(path).write_bytes(jpeg)
    return rec


def _records(jobs: list[tuple], workers: int, advance) -> list[dict]:
    """`_write_image` over `jobs`, in order; in `workers` forked processes for large worlds
    (fork needs no `if __name__ == "__main__"` guard in the caller's script)."""
    if workers <= 1 or len(jobs) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        out = []
        for job in jobs:
            out.append(_write_image(job))
            advance()
        return out
    out = []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for rec in pool.imap(_write_image, jobs, chunksize=32):
            out.append(rec)
            advance()
    return out


def generate(out_dir: str | Path, *, train_images: int = 2000, val_images: int = 500, seed: int = 0,
             width: int = 128, height: int = 96, show_progress: bool = False,
             workers: int | None = None) -> dict:
    """Write the synthetic world under `out_dir` (replacing an earlier `gpv synth` output atomically).

    workers: processes that render images (default: up to 2 CPU cores; worlds under
    PARALLEL_FROM images are rendered in-process). The output does not depend on it.
    Returns {"out_dir": str, "counts": {"images/<split>" or file name: number of records},
    "baselines": {name: value}, "seconds": float}. The files are identical for identical arguments.
    """
    if train_images < 1 or val_images < 1 or train_images + val_images > MAX_IMAGES:
        raise GPVError(f"the synthetic world needs 1 to {MAX_IMAGES} train + val images, "
                       f"not {train_images} + {val_images}")
    if width < 64 or height < 48:
        raise GPVError(f"image size {width}x{height} is too small", hint="use at least 64x48")
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    out_dir = Path(out_dir)
    _check_target(out_dir)
    start = time.perf_counter()
    all_ids = np.random.default_rng([seed, 1000]).choice(np.arange(1, MAX_IMAGE_ID + 1),
                                                          size=train_images + val_images, replace=False)
    split_ids = {"train2014": np.sort(all_ids[:train_images]).tolist(),
                 "val2014": np.sort(all_ids[train_images:]).tolist()}
    counts: dict[str, int] = {}
    files: dict[str, dict] = {}
    next_ids = {"ann": 1, "caption": 1, "ref": 1}
    with io.atomic_dir(out_dir) as tmp, _progress(show_progress, train_images + val_images) as advance:
        for split in SPLITS:
            folder = tmp / "images" / split
            folder.mkdir(parents=True)
            jobs = [(seed, split, index, width, height, str(folder / f"COCO_{split}_{image_id:012d}.jpg"))
                    for index, image_id in enumerate(split_ids[split])]
            records = list(zip(split_ids[split], _records(jobs, workers, advance), strict=True))
            for name, content in _split_files(split, records, width, height, next_ids).items():
                io.write_json(tmp / "annotations" / name, content, indent=None)
                files[name] = content
            counts[f"images/{split}"] = len(records)
        counts.update(_record_counts(files))
        values = baselines(files, seed=seed)
        io.write_json(tmp / "baselines.json", values)
    return {"out_dir": str(out_dir), "counts": counts,
            "baselines": {k: v["value"] for k, v in values.items()},
            "seconds": round(time.perf_counter() - start, 2)}


def _record_counts(files: dict[str, dict]) -> dict[str, int]:
    keys = {"instances": "annotations", "captions": "annotations", "v2_OpenEnded": "questions",
            "v2_mscoco": "annotations", "refexp": "refs"}
    return {name: len(content[key]) for name, content in files.items()
            for prefix, key in keys.items() if name.startswith(prefix)}


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """Yield an `advance()` callable that moves a rich progress bar (a no-op when disabled)."""
    with progress_bar(enabled) as bar:
        task = bar.add_task("rendering images", total=total, info="")
        yield lambda: bar.advance(task)


# --------------------------------------------------------------------------- baselines


def baselines(files: dict[str, dict], *, seed: int) -> dict[str, dict]:
    """The two shortcut baselines on val2014 from the annotation files (name -> content), each
    {"value": float, "definition": str, ...}.

    answer_prior_vqa_accuracy: per question_type, the most frequent multiple_choice_answer on
    train, predicted for every val question of that type (the overall most frequent answer for
    a type unseen on train), scored with the official VQA accuracy; mean over questions.
    class_blind_localizer_ap50: for a val localization sample (image, category present), all
    boxes of the image in random order, scored with AP@0.5 against that category's boxes; mean
    over LOCALIZER_DRAWS seeded orders and over the samples (a seeded subset of
    LOCALIZER_SAMPLES when there are more: the metric costs a fraction of a millisecond a call).
    """
    import torch

    from gpvcli.eval.metrics import localization_ap, vqa_accuracy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the metric runs on tiny tensors: thread hand-offs would dominate
    try:
        return {"answer_prior_vqa_accuracy": _answer_prior(files, vqa_accuracy),
                "class_blind_localizer_ap50": _class_blind_localizer(files, seed, localization_ap)}
    finally:
        torch.set_num_threads(threads)


def _answer_prior(files: dict[str, dict], vqa_accuracy) -> dict:
    by_type: dict[str, Counter] = {}
    for a in files["v2_mscoco_train2014_annotations.json"]["annotations"]:
        by_type.setdefault(a["question_type"], Counter())[a["multiple_choice_answer"]] += 1
    overall = sum(by_type.values(), Counter()).most_common(1)[0][0]
    prior = {t: c.most_common(1)[0][0] for t, c in sorted(by_type.items())}
    scores = [vqa_accuracy(prior.get(a["question_type"], overall), [x["answer"] for x in a["answers"]])
              for a in files["v2_mscoco_val2014_annotations.json"]["annotations"]]
    return {"value": round(float(np.mean(scores)), 4), "prior": prior, "questions": len(scores),
            "definition": "per question_type, the most frequent multiple_choice_answer on train2014, "
                          "predicted for every val2014 question, scored with the official VQA accuracy"}


def _class_blind_localizer(files: dict[str, dict], seed: int, localization_ap) -> dict:
    by_image: dict[int, list[tuple[int, list[float]]]] = {}
    for a in files["instances_val2014.json"]["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append((a["category_id"], [x, y, x + w, y + h]))
    samples = [(image_id, cat) for image_id in sorted(by_image)
               for cat in sorted({c for c, _ in by_image[image_id]})]
    rng = np.random.default_rng([seed, 2000])
    if len(samples) > LOCALIZER_SAMPLES:
        samples = [samples[i] for i in _subset(rng, len(samples), LOCALIZER_SAMPLES)]
    aps = []
    for image_id, cat in samples:
        entries = by_image[image_id]
        boxes = np.array([b for _, b in entries])  # (N, 4) xyxy pixels
        gt = np.array([b for c, b in entries if c == cat])  # (M, 4)
        ranks = np.arange(len(entries), 0, -1, dtype=float)  # (N,) descending scores
        aps.extend(localization_ap(boxes[rng.permutation(len(entries))], ranks, gt, iou=0.5)
                   for _ in range(LOCALIZER_DRAWS))
    return {"value": round(float(np.mean(aps)), 4), "samples": len(samples), "draws": LOCALIZER_DRAWS,
            "definition": "per val2014 (image, category present) sample, all boxes of the image in random "
                          "order, AP@0.5 against that category's boxes; mean over samples and draws"}
