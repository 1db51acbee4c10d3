"""Readers of the COCO 2014 / VQA v2 / referring-expression files.

Expected layout under a COCO folder (`--coco-dir`), the one `gpv synth` writes too:

    images/train2014/COCO_train2014_<id:012d>.jpg    images/val2014/...
    annotations/instances_{train2014,val2014}.json   (COCO instances)
    annotations/captions_{train2014,val2014}.json    (COCO captions)
    annotations/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json   (VQA v2)
    annotations/v2_mscoco_{train2014,val2014}_annotations.json           (VQA v2)
    annotations/refexp_{train2014,val2014}.json      (optional; see gpvcli.data.synth for its format)

Only the fields the toolkit uses are read; every missing file or field is one clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpvcli.errors import GPVError
from gpvcli.io import read_json

IMAGE_SPLITS = ("train2014", "val2014")

SOURCES = {
    "instances": ("instances_{s}.json", "https://cocodataset.org/#download (2014 Train/Val annotations)"),
    "captions": ("captions_{s}.json", "https://cocodataset.org/#download (2014 Train/Val annotations)"),
    "questions": ("v2_OpenEnded_mscoco_{s}_questions.json", "https://visualqa.org/download.html (VQA v2 questions)"),
    "vqa": ("v2_mscoco_{s}_annotations.json", "https://visualqa.org/download.html (VQA v2 annotations)"),
}


@dataclass
class ImageSplitData:
    """Everything read for one COCO image split (train2014 or val2014)."""

    name: str
    images: list[dict]        # COCO image dicts (id, file_name, width, height)
    instances: list[dict]     # COCO annotation dicts (id, image_id, category_id, bbox, iscrowd)
    captions: list[dict]      # (id, image_id, caption)
    questions: list[dict]     # VQA questions (question_id, image_id, question)
    vqa: list[dict]           # VQA annotations (question_id, answers, multiple_choice_answer, ...)
    refs: list[dict]          # referring expressions (ref_id, image_id, ann_id, category_id, sentences)


def annotation_path(coco_dir: Path, kind: str, split: str) -> Path:
    return coco_dir / "annotations" / SOURCES[kind][0].format(s=split)


def check_layout(coco_dir: Path) -> None:
    """Raise one GPVError naming the first missing file and where it is downloaded from."""
    if not coco_dir.is_dir():
        raise GPVError(f"COCO folder not found: {coco_dir}")
    for split in IMAGE_SPLITS:
        for kind, (_, origin) in SOURCES.items():
            p = annotation_path(coco_dir, kind, split)
            if not p.is_file():
                raise GPVError(f"missing {p}", hint=f"download it from {origin}")
        if not (coco_dir / "images" / split).is_dir():
            raise GPVError(f"missing image folder {coco_dir / 'images' / split}",
                           hint=f"download {split}.zip from https://cocodataset.org/#download and unpack it there")


def _field(d: dict, key: str, path: Path):
    try:
        return d[key]
    except (KeyError, TypeError):
        raise GPVError(f"{path} has no '{key}' field: is it the right file?")


def read_split(coco_dir: Path, split: str) -> ImageSplitData:
    paths = {k: annotation_path(coco_dir, k, split) for k in SOURCES}
    inst = read_json(paths["instances"], "COCO instances file")
    caps = read_json(paths["captions"], "COCO captions file")
    qs = read_json(paths["questions"], "VQA questions file")
    vqa = read_json(paths["vqa"], "VQA annotations file")
    ref_path = coco_dir / "annotations" / f"refexp_{split}.json"
    refs = _field(read_json(ref_path, "referring-expression file"), "refs", ref_path) if ref_path.is_file() else []
    return ImageSplitData(
        name=split,
        images=_field(inst, "images", paths["instances"]),
        instances=_field(inst, "annotations", paths["instances"]),
        captions=_field(caps, "annotations", paths["captions"]),
        questions=_field(qs, "questions", paths["questions"]),
        vqa=_field(vqa, "annotations", paths["vqa"]),
        refs=refs,
    )
