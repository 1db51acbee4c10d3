"""Generators of the corpus inputs (see cases.py), all made at test time and small.

Each generator takes the shared fixture and the case's empty work folder, writes its input there
and returns the path that replaces `{input}` in the case's command. The shared fixture itself is
never written to: an input derived from it is a copy (or a symlink to a file that is only read).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml
from conftest import make_mini_coco
from PIL import Image


@dataclass(frozen=True)
class Fixture:
    coco: Path     # the synthetic world (COCO layout)
    data: Path     # its COCO-SCE preparation
    run: Path      # a 2-step run on it
    image: Path    # a valid JPEG of the world

    @property
    def ckpt(self) -> Path:
        return self.run / "best"


class Foreign:
    """An object a weights-only unpickler must refuse (pickled by reference to this module)."""


# ---- images --------------------------------------------------------------------------------------

def empty_jpeg(fx: Fixture, work: Path) -> Path:
    path = work / "empty.jpg"
    path.write_bytes(b"")
    return path


def truncated_jpeg(fx: Fixture, work: Path) -> Path:
    data = fx.image.read_bytes()
    path = work / "truncated.jpg"
    path.write_bytes(data[:len(data) // 2])
    return path


def corrupt_jpeg(fx: Fixture, work: Path) -> Path:
    """A JPEG start-of-image marker followed by seeded noise."""
    path = work / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(4000))
    return path


def bomb_png(fx: Fixture, work: Path) -> Path:
    """A valid 20000x20000 1-bit PNG (400M pixels) of 48 KB: zeros compress 1000:1."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    side = 20000
    rows = b"\x00" * ((1 + side // 8) * 1000)       # 1000 rows: a filter byte + 2500 bytes each
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(rows) for _ in range(side // 1000)) + z.flush()
    path = work / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def cmyk_jpeg(fx: Fixture, work: Path) -> Path:
    path = work / "cmyk.jpg"
    Image.open(fx.image).convert("CMYK").save(path, "JPEG")
    return path


def gray16_png(fx: Fixture, work: Path) -> Path:
    """16-bit grayscale (mode I;16): the 8-bit gray image times 257."""
    path = work / "gray16.png"
    gray = np.asarray(Image.open(fx.image).convert("L"), np.uint16)
    Image.fromarray(gray * 257).save(path)
    return path


def palette_png(fx: Fixture, work: Path) -> Path:
    """A 16-colour palette image with a transparent colour."""
    path = work / "palette.png"
    Image.open(fx.image).convert("RGB").quantize(16).save(path, transparency=0)
    return path


def no_images_folder(fx: Fixture, work: Path) -> Path:
    path = work / "photos"
    path.mkdir()
    (path / "notes.txt").write_text("no pictures here\n")
    return path


# ---- predict batch files (JSONL of {"image", "text"}) ----------------------------------------------

def jsonl_valid_unicode(fx: Fixture, work: Path) -> Path:
    shutil.copy(fx.image, work / "a.jpg")
    path = work / "pairs.jsonl"
    path.write_text(json.dumps({"image": "a.jpg", "text": "Qu'est-ce que c'est ? café"}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    return path


def jsonl_latin1(fx: Fixture, work: Path) -> Path:
    shutil.copy(fx.image, work / "a.jpg")
    path = work / "pairs.jsonl"
    path.write_bytes('{"image": "a.jpg", "text": "Qu\'est-ce que c\'est ? café"}\n'.encode("latin-1"))
    return path


def jsonl_truncated(fx: Fixture, work: Path) -> Path:
    shutil.copy(fx.image, work / "a.jpg")
    path = work / "pairs.jsonl"
    path.write_text('{"image": "a.jpg", "text": "What is this?"}\n{"image": "a.jpg", "te\n')
    return path


def jsonl_without_image_field(fx: Fixture, work: Path) -> Path:
    path = work / "pairs.jsonl"
    path.write_text('{"text": "What is this?"}\n')
    return path


def jsonl_missing_image(fx: Fixture, work: Path) -> Path:
    shutil.copy(fx.image, work / "a.jpg")
    path = work / "pairs.jsonl"
    path.write_text('{"image": "a.jpg", "text": "What is this?"}\n'
                    '{"image": "gone.jpg", "text": "Locate dog."}\n')
    return path


# ---- configs ---------------------------------------------------------------------------------------

def config_unknown_key(fx: Fixture, work: Path) -> Path:
    path = work / "my.yaml"
    path.write_text("train:\n  lrr: 0.001\n")
    return path


def config_latin1(fx: Fixture, work: Path) -> Path:
    path = work / "my.yaml"
    path.write_bytes("# réglages\nmodel:\n  hidden: 128\n".encode("latin-1"))
    return path


def config_malformed(fx: Fixture, work: Path) -> Path:
    path = work / "my.yaml"
    path.write_text("model:\n  hidden: [128\n  dropout: 0.1\n")
    return path


# ---- checkpoints, runs, caches ---------------------------------------------------------------------

def _checkpoint_copy(fx: Fixture, work: Path) -> Path:
    """best/ without its trainer state (evaluate and predict read only the model)."""
    path = work / "ckpt"
    shutil.copytree(fx.ckpt, path, ignore=shutil.ignore_patterns("trainer.pt"))
    return path


def ckpt_other_config(fx: Fixture, work: Path) -> Path:
    """The weights of one config beside the model_config.yaml of another (model.hidden 128 -> 64)."""
    path = _checkpoint_copy(fx, work)
    cfg = yaml.safe_load((path / "model_config.yaml").read_text())
    cfg["hidden"] //= 2
    (path / "model_config.yaml").write_text(yaml.safe_dump(cfg))
    return path


def ckpt_pickled_weights(fx: Fixture, work: Path) -> Path:
    """model.safetensors replaced by a pickle."""
    path = _checkpoint_copy(fx, work)
    (path / "model.safetensors").write_bytes(pickle.dumps({"visual.weight": Foreign()}))
    return path


def visual_missing_tensor(fx: Fixture, work: Path) -> Path:
    """A tiny visual encoder saved as `gpv train --stage detector` saves it, one backbone tensor removed."""
    from safetensors.torch import load_file, save_file

    from gpvcli.model.config import load_model_config
    from gpvcli.model.visual import WEIGHTS_FILE, build_visual, save_visual

    cfg = load_model_config("tiny").visual
    path = save_visual(build_visual(cfg), cfg, work / "visual")
    tensors = load_file(path / WEIGHTS_FILE)
    del tensors["detr.backbone.model.encoder.stages.1.layers.0.layer.0.convolution.weight"]
    save_file(tensors, str(path / WEIGHTS_FILE))
    return path


def _run_copy(fx: Fixture, work: Path) -> Path:
    """The run with its last/ checkpoint (what --resume reads)."""
    path = work / "run"
    path.mkdir()
    for name in ("config.yaml", "run.json", "metrics.jsonl"):
        shutil.copy(fx.run / name, path / name)
    shutil.copytree(fx.run / "last", path / "last")
    return path


def run_pickled_trainer_state(fx: Fixture, work: Path) -> Path:
    """last/trainer.pt replaced by a plain pickle of a foreign object (default protocol)."""
    path = _run_copy(fx, work)
    state = {"optimizer": Foreign(), "scheduler": {}, "rng": {}}
    (path / "last" / "trainer.pt").write_bytes(pickle.dumps(state))
    return path


def run_other_config(fx: Fixture, work: Path) -> Path:
    """The run's config.yaml edited to another model (model.hidden 128 -> 64): its last/ no longer fits."""
    path = _run_copy(fx, work)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["model"]["hidden"] //= 2
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


FOREIGN_FINGERPRINT = "0" * 64


def run_foreign_feature_cache(fx: Fixture, work: Path) -> Path:
    """A new run folder holding only features/train.h5 of another visual encoder."""
    path = work / "run"
    (path / "features").mkdir(parents=True)
    with h5py.File(path / "features" / "train.h5", "w") as f:
        for name, shape in (("boxes", (1, 20, 4)), ("states", (1, 20, 128)), ("roi", (1, 20, 256)),
                            ("objectness", (1, 20, 2))):
            f[name] = np.zeros(shape, np.float32)
        f.create_dataset("keys", data=np.array(["img:1"], dtype=object), dtype=h5py.string_dtype())
        f.attrs["fingerprint"] = FOREIGN_FINGERPRINT
    return path


def feature_cache_rebuilt(path: Path) -> None:
    """After the run: the foreign cache was replaced by this encoder's."""
    with h5py.File(path / "features" / "train.h5", "r") as f:
        assert f.attrs["fingerprint"] != FOREIGN_FINGERPRINT and len(f["keys"]) > 1


def data_truncated_test_split(fx: Fixture, work: Path) -> Path:
    path = work / "data"
    path.mkdir()
    data = (fx.data / "test.h5").read_bytes()
    (path / "test.h5").write_bytes(data[:len(data) // 2])
    return path


def run_truncated_record(fx: Fixture, work: Path) -> Path:
    """A run whose run.json (the data it was trained on) is cut short; best/ links to the fixture's."""
    path = work / "run"
    path.mkdir()
    (path / "best").symlink_to(fx.ckpt, target_is_directory=True)
    text = (fx.run / "run.json").read_text()
    (path / "run.json").write_text(text[:len(text) // 2])
    return path


def ablation_truncated_result(fx: Fixture, work: Path) -> Path:
    path = work / "ablate"
    (path / "vqa_rel_modality_s0").mkdir(parents=True)
    (path / "vqa_rel_modality_s0" / "result.json").write_text('{"variant": "vqa_rel_modality_s0", "metr')
    return path


def folder_with_a_file(fx: Fixture, work: Path) -> Path:
    path = work / "mine"
    path.mkdir()
    (path / "thesis.tex").write_text("\\documentclass{article}\n")
    return path


# ---- COCO / VQA annotation folders (the hand-written mini COCO of conftest, one file changed) -----

def _coco(work: Path) -> Path:
    return make_mini_coco(work / "coco")


def _edit(root: Path, name: str, change) -> Path:
    """Apply `change` to the parsed annotations/NAME and write it back."""
    path = root / "annotations" / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return root


INSTANCES = "instances_train2014.json"


def _first_annotation(**fields):
    def change(data: dict) -> None:
        data["annotations"][0].update(fields)
    return change


def coco_missing_captions(fx: Fixture, work: Path) -> Path:
    root = _coco(work)
    (root / "annotations" / "captions_val2014.json").unlink()
    return root


def coco_truncated_instances(fx: Fixture, work: Path) -> Path:
    root = _coco(work)
    path = root / "annotations" / INSTANCES
    text = path.read_text()
    path.write_text(text[:len(text) // 2])
    return root


def coco_latin1_captions(fx: Fixture, work: Path) -> Path:
    root = _coco(work)
    path = root / "annotations" / "captions_train2014.json"
    path.write_bytes(path.read_text().replace("A puppy.", "Un chiot élevé.").encode("latin-1"))
    return root


def coco_no_annotations_key(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, lambda d: d.pop("annotations"))


def coco_annotation_without_bbox(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, lambda d: d["annotations"][0].pop("bbox"))


def coco_bbox_string(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(bbox="0,5,20,10"))


def coco_image_id_string(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, lambda d: d["images"][0].update(id="1"))


def coco_negative_box(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(bbox=[30.0, 5.0, -20.0, 10.0]))


def coco_zero_size_box(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(bbox=[9.98, 18.56, 5.54, 0.0], area=0.0))


def coco_box_outside_image(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(bbox=[150.0, 5.0, 20.0, 10.0]))   # image is 100x80


def coco_box_partly_outside(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(bbox=[90.0, 70.0, 20.0, 20.0]))


def coco_unknown_category(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, _first_annotation(category_id=999))


def coco_duplicate_image_ids(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, lambda d: d["images"][1].update(id=d["images"][0]["id"]))


def coco_duplicate_annotation_ids(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), INSTANCES, lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]))


def coco_caption_of_unknown_image(fx: Fixture, work: Path) -> Path:
    return _edit(_coco(work), "captions_train2014.json", lambda d: d["annotations"][0].update(image_id=999))


def coco_vqa_three_answers(fx: Fixture, work: Path) -> Path:
    def change(data: dict) -> None:
        data["annotations"][0]["answers"] = data["annotations"][0]["answers"][:3]
    return _edit(_coco(work), "v2_mscoco_train2014_annotations.json", change)


def split_file_wrong_types(fx: Fixture, work: Path) -> Path:
    _coco(work)
    path = work / "split.json"
    path.write_text(json.dumps({"train": "1,2,3,4,5,6,7", "val": [8, 9, 10]}))
    return path
