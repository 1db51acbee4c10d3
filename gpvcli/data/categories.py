"""The 80 COCO categories, the COCO-SCE category sets (seed Table 6) and synonyms.

Ids, names and supercategories come from `resources/coco_categories.json`, a copy
of COCO's own annotation files. Synonyms are the phrases (singular) that count as
a mention of a category in text; plural forms are derived by `plural()`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

# Group names used everywhere (metrics, HDF5, tables).
SEEN = "S"
HELD_VQA_CAP = "H_vqa,cap"
HELD_CLS_LOC = "H_cls,loc"
GROUPS = (SEEN, HELD_VQA_CAP, HELD_CLS_LOC)

# Singular phrases that mention each category besides its own name.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("man", "woman", "boy", "girl", "child", "kid", "guy", "lady", "people", "player",
               "skier", "surfer", "baby"),
    "bicycle": ("bike", "cycle"),
    "car": ("automobile", "sedan"),
    "motorcycle": ("motorbike", "motor bike", "scooter"),
    "airplane": ("plane", "aeroplane", "jet", "aircraft", "airliner"),
    "bus": ("coach bus",),
    "train": ("locomotive",),
    "truck": ("lorry", "pickup truck"),
    "boat": ("ship", "sailboat", "canoe", "kayak"),
    "traffic light": ("traffic signal", "stoplight", "stop light"),
    "fire hydrant": ("hydrant",),
    "stop sign": (),
    "parking meter": ("meter",),
    "bench": ("park bench",),
    "bird": ("pigeon", "seagull", "duck"),
    "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup", "doggy"),
    "horse": ("pony", "foal"),
    "sheep": ("lamb", "ram"),
    "cow": ("cattle", "calf", "bull"),
    "elephant": (),
    "bear": ("grizzly", "polar bear", "brown bear"),
    "zebra": (),
    "giraffe": (),
    "backpack": ("back pack", "rucksack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "hand bag"),
    "tie": ("necktie", "neck tie"),
    "suitcase": ("luggage", "suit case"),
    "frisbee": ("flying disc",),
    "skis": ("ski",),
    "snowboard": ("snow board",),
    "sports ball": ("ball", "soccer ball", "tennis ball", "football"),
    "kite": (),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board",),
    "tennis racket": ("racket", "racquet", "tennis racquet"),
    "bottle": (),
    "wine glass": ("wineglass",),
    "cup": ("mug", "glass", "coffee cup"),
    "fork": (),
    "knife": (),
    "spoon": (),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": ("sub", "burger"),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog", "hot-dog"),
    "pizza": (),
    "donut": ("doughnut",),
    "cake": ("cupcake",),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("plant", "houseplant", "house plant"),
    "bed": (),
    "dining table": ("table", "dinner table", "kitchen table"),
    "toilet": (),
    "tv": ("television", "tv set", "television set"),
    "laptop": ("laptop computer", "notebook computer"),
    "mouse": ("computer mouse",),
    "remote": ("remote control", "controller"),
    "keyboard": (),
    "cell phone": ("phone", "cellphone", "mobile phone", "smartphone", "smart phone"),
    "microwave": (),
    "oven": ("stove",),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge",),
    "book": ("novel",),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("teddy", "stuffed animal", "stuffed bear"),
    "hair drier": ("hair dryer", "blow dryer", "hairdryer"),
    "toothbrush": ("tooth brush",),
}

_IRREGULAR = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "people": "people",
    "cattle": "cattle", "luggage": "luggage", "broccoli": "broccoli", "calf": "calves",
    "foal": "foals", "bus": "buses", "grizzly": "grizzlies",
}


def plural(phrase: str) -> str:
    """Plural of a noun phrase: the last word is inflected ("hot dog" -> "hot dogs")."""
    *head, last = phrase.split(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str
    group: str  # SEEN, HELD_VQA_CAP or HELD_CLS_LOC


@functools.lru_cache(maxsize=1)
def _raw() -> dict:
    text = resources.files("gpvcli.data").joinpath("resources/coco_categories.json").read_text()
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def categories() -> tuple[Category, ...]:
    """The 80 categories in COCO's order, each tagged with its COCO-SCE group."""
    sce = _raw()["coco_sce"]
    group = {n: HELD_VQA_CAP for n in sce["held_out_from_vqa_cap"]}
    group.update({n: HELD_CLS_LOC for n in sce["held_out_from_cls_loc"]})
    group.update({n: SEEN for n in sce["seen_in_all"]})
    return tuple(Category(c["id"], c["name"], c["supercategory"], group[c["name"]])
                 for c in _raw()["categories"])


def coco_category_dicts() -> list[dict]:
    """The `categories` list exactly as COCO's annotation files hold it."""
    return [dict(c) for c in _raw()["categories"]]


@functools.lru_cache(maxsize=1)
def by_name() -> dict[str, Category]:
    return {c.name: c for c in categories()}


@functools.lru_cache(maxsize=1)
def by_id() -> dict[int, Category]:
    return {c.id: c for c in categories()}


def group_members(group: str) -> list[str]:
    return [c.name for c in categories() if c.group == group]


def phrases(name: str) -> list[str]:
    """Every phrase (singular and plural) that mentions category `name`."""
    singular = [name, *SYNONYMS[name]]
    out = []
    for p in singular + [plural(p) for p in singular]:
        if p not in out:
            out.append(p)
    return out
