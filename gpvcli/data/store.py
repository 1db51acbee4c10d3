"""The prepared-data HDF5 store: one file per split (train.h5, val.h5, test.h5).

Schema (version 1). Strings are UTF-8: a string column `X` is a group with `utf8`
(uint8 bytes of all strings concatenated) and `offsets` (int64, N+1). A ragged
column `X` is a group with `data` (rows concatenated along axis 0) and `offsets`
(int64, N+1): row i is data[offsets[i]:offsets[i+1]]. A ragged string column holds a
string column `X/strings` and `X/offsets` into it.

    /                 attrs: schema_version, split ("train"/"val"/"test"), dataset ("coco"/"sce"),
                             tasks (the task names, index = task code), images_root
    /images/id        int64 (I,)     COCO image id
    /images/file      strings (I,)   path relative to images_root, e.g. train2014/COCO_train2014_...jpg
    /images/width     int32 (I,)     pixels
    /images/height    int32 (I,)
    /images/captions  ragged strings all captions of the image (the CIDEr references)
    /samples/task         uint8 (N,)       index into attrs["tasks"]
    /samples/sample_id    strings (N,)     "vqa/<question_id>", "cap/<caption id>", "loc/<image>:<category>",
                                           "cls/<image>:<category>", "refexp/<ref_id>:<sentence index>"
    /samples/image        int32 (N,)       row in /images
    /samples/query        strings (N,)     the task text given to the model
    /samples/template_id  int16 (N,)       Table 4 prompt index (-1 for vqa/refexp)
    /samples/target       strings (N,)     text target: vqa multiple-choice answer, caption, cls category
                                           name; "" for box tasks
    /samples/answers      ragged strings   vqa: the 10 human answers; else empty
    /samples/boxes        ragged float32 (K, 4)  xyxy pixels clipped to the image: loc all boxes of the
                                           category, refexp its box
    /samples/crop         float32 (N, 4)   cls: xyxy pixel crop of the input image; NaN otherwise
    /samples/category_id  int32 (N,)       loc/cls/refexp: the COCO category id; -1 otherwise
    /samples/mentions     ragged int32     COCO ids of the categories the sample mentions
    /samples/unseen       bool (N,)        test only: mentions a category held out from its task
    /samples/question_type, /samples/answer_type  strings (N,)  vqa fields; "" otherwise
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gpvcli.data.prompts import TASKS
from gpvcli.errors import GPVError

SCHEMA_VERSION = 1


# ---- column writers / readers --------------------------------------------------------------------

def _put_strings(g: h5py.Group, name: str, values: Sequence[str]) -> None:
    blob = "".join(values).encode("utf-8")
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    if len(blob) != lengths.sum():  # not pure ASCII: byte lengths differ from character lengths
        lengths = np.fromiter((len(v.encode("utf-8")) for v in values), np.int64, len(values))
    sub = g.create_group(name)
    sub["offsets"] = np.concatenate([[0], np.cumsum(lengths)])
    sub["utf8"] = np.frombuffer(blob, dtype=np.uint8)


def _put_ragged(g: h5py.Group, name: str, ragged: Ragged) -> None:
    sub = g.create_group(name)
    sub["offsets"] = ragged.offsets.astype(np.int64)
    sub["data"] = ragged.data


def _put_ragged_strings(g: h5py.Group, name: str, rows: Sequence[Sequence[str]]) -> None:
    sub = g.create_group(name)
    sub["offsets"] = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)])
    _put_strings(sub, "strings", [s for r in rows for s in r])


class StringColumn:
    """Lazy decoding of a string column."""

    def __init__(self, g: h5py.Group):
        self.offsets = g["offsets"][()]
        self.blob = g["utf8"][()].tobytes()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8")

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class RaggedStrings:
    def __init__(self, g: h5py.Group):
        self.offsets = g["offsets"][()]
        self.strings = StringColumn(g["strings"])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[str]:
        return [self.strings[j] for j in range(self.offsets[i], self.offsets[i + 1])]


# ---- the split tables -----------------------------------------------------------------------------

@dataclass
class Ragged:
    """Rows of varying length: row i is data[offsets[i]:offsets[i + 1]]."""

    data: np.ndarray      # (M, ...) all rows concatenated
    offsets: np.ndarray   # (N + 1,) int64

    @classmethod
    def from_rows(cls, rows: Sequence, dtype, width: int | None = None) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(rows) if width else rows),
                           dtype, int(lengths.sum()) * (width or 1))
        data = flat.reshape(-1, width) if width else flat
        return cls(data, np.concatenate([[0], np.cumsum(lengths)]))

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        offsets = [np.zeros(1, np.int64)]
        base = 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += p.offsets[-1]
        return cls(np.concatenate([p.data for p in parts]), np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    def take(self, idx: np.ndarray) -> Ragged:
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        new = np.concatenate([[0], np.cumsum(lengths)])
        gather = np.repeat(starts - new[:-1], lengths) + np.arange(new[-1])
        return Ragged(self.data[gather], new)


@dataclass
class ImageTable:
    id: list[int] = field(default_factory=list)
    file: list[str] = field(default_factory=list)
    width: list[int] = field(default_factory=list)
    height: list[int] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)


@dataclass
class SampleTable:
    """Columns of the samples of one split (see the schema above)."""

    task: np.ndarray              # (N,) uint8
    sample_id: list[str]
    image: np.ndarray             # (N,) int64 row in the image table
    query: list[str]
    template_id: np.ndarray       # (N,) int16
    target: list[str]
    answers: list[list[str]]
    boxes: Ragged                 # (K, 4) float32 xyxy pixels per sample
    crop: np.ndarray              # (N, 4) float32, NaN rows where no crop
    category_id: np.ndarray       # (N,) int32
    mentions: Ragged              # int32 category ids per sample
    unseen: np.ndarray            # (N,) bool
    question_type: list[str]
    answer_type: list[str]

    def __len__(self) -> int:
        return len(self.task)

    def take(self, idx: np.ndarray) -> SampleTable:
        cols = {}
        for k, v in vars(self).items():
            if isinstance(v, (np.ndarray, Ragged)):
                cols[k] = v[idx] if isinstance(v, np.ndarray) else v.take(idx)
            else:
                cols[k] = list(map(v.__getitem__, idx.tolist()))
        return SampleTable(**cols)

    def select(self, keep: np.ndarray) -> SampleTable:
        return self.take(np.flatnonzero(keep))

    @classmethod
    def concat(cls, parts: Sequence[SampleTable]) -> SampleTable:
        cols = {}
        for k, v in vars(parts[0]).items():
            values = [getattr(p, k) for p in parts]
            if isinstance(v, np.ndarray):
                cols[k] = np.concatenate(values)
            elif isinstance(v, Ragged):
                cols[k] = Ragged.concat(values)
            else:
                cols[k] = list(itertools.chain.from_iterable(values))
        return cls(**cols)


def _read_ragged(g: h5py.Group) -> Ragged:
    return Ragged(g["data"][()], g["offsets"][()])


def encode_split(*, split: str, dataset: str, images_root: str, images: ImageTable,
                 samples: SampleTable) -> memoryview:
    """The bytes of one split file. Built in memory, to be written in one go (`gpvcli.io.write_bytes`):
    HDF5 writing to a full disk can crash the process (seen: a segmentation fault); a plain write raises."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs.update(schema_version=SCHEMA_VERSION, split=split, dataset=dataset,
                       tasks=list(TASKS), images_root=images_root)
        gi = f.create_group("images")
        gi["id"] = np.asarray(images.id, dtype=np.int64)
        _put_strings(gi, "file", images.file)
        gi["width"] = np.asarray(images.width, dtype=np.int32)
        gi["height"] = np.asarray(images.height, dtype=np.int32)
        _put_ragged_strings(gi, "captions", images.captions)
        gs = f.create_group("samples")
        gs["task"] = np.asarray(samples.task, dtype=np.uint8)
        _put_strings(gs, "sample_id", samples.sample_id)
        gs["image"] = np.asarray(samples.image, dtype=np.int32)
        _put_strings(gs, "query", samples.query)
        gs["template_id"] = np.asarray(samples.template_id, dtype=np.int16)
        _put_strings(gs, "target", samples.target)
        _put_ragged_strings(gs, "answers", samples.answers)
        _put_ragged(gs, "boxes", samples.boxes)
        gs["crop"] = np.asarray(samples.crop, dtype=np.float32).reshape(-1, 4)
        gs["category_id"] = np.asarray(samples.category_id, dtype=np.int32)
        _put_ragged(gs, "mentions", samples.mentions)
        gs["unseen"] = np.asarray(samples.unseen, dtype=bool)
        _put_strings(gs, "question_type", samples.question_type)
        _put_strings(gs, "answer_type", samples.answer_type)
    return buffer.getbuffer()


class SplitStore:
    """Read-only, in-memory view of one split file. `sample(i)` gives one sample as a dict."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise GPVError(f"prepared split not found: {path}", hint="run `gpv prepare` first")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise GPVError(f"{path} is not a readable HDF5 file ({e})", hint="rerun `gpv prepare`")
        with f:
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise GPVError(f"{path} has schema version {version}, this gpvcli reads {SCHEMA_VERSION}",
                               hint="rerun `gpv prepare`")
            self.path = path
            self.split = str(f.attrs["split"])
            self.dataset = str(f.attrs["dataset"])
            self.task_names = [str(t) for t in f.attrs["tasks"]]
            self.images_root = str(f.attrs["images_root"])
            gi, gs = f["images"], f["samples"]
            self.image_id = gi["id"][()]
            self.image_file = StringColumn(gi["file"])
            self.image_width = gi["width"][()]
            self.image_height = gi["height"][()]
            self.captions = RaggedStrings(gi["captions"])
            self.task_code = gs["task"][()]
            self.sample_id = StringColumn(gs["sample_id"])
            self.image = gs["image"][()]
            self.query = StringColumn(gs["query"])
            self.template_id = gs["template_id"][()]
            self.target = StringColumn(gs["target"])
            self.answers = RaggedStrings(gs["answers"])
            self.boxes = _read_ragged(gs["boxes"])
            self.crop = gs["crop"][()]
            self.category_id = gs["category_id"][()]
            self.mentions = _read_ragged(gs["mentions"])
            self.unseen = gs["unseen"][()]
            self.question_type = StringColumn(gs["question_type"])
            self.answer_type = StringColumn(gs["answer_type"])

    def __len__(self) -> int:
        return len(self.task_code)

    @property
    def tasks(self) -> list[str]:
        """Task name of every sample."""
        names = np.asarray(self.task_names)
        return names[self.task_code].tolist()

    def image_path(self, i: int) -> Path:
        """Absolute path of sample i's image."""
        return Path(self.images_root) / self.image_file[int(self.image[i])]

    def sample(self, i: int) -> dict:
        row = int(self.image[i])
        crop = self.crop[i]
        return {
            "index": i,
            "task": self.task_names[self.task_code[i]],
            "sample_id": self.sample_id[i],
            "image_id": int(self.image_id[row]),
            "image_file": self.image_file[row],
            "image_size": (int(self.image_width[row]), int(self.image_height[row])),
            "query": self.query[i],
            "template_id": int(self.template_id[i]),
            "target": self.target[i],
            "answers": self.answers[i],
            "references": self.captions[row],
            "boxes": self.boxes[i].copy(),
            "crop": None if np.isnan(crop).any() else crop.copy(),
            "category_id": int(self.category_id[i]),
            "mentions": self.mentions[i].tolist(),
            "unseen": bool(self.unseen[i]),
            "question_type": self.question_type[i],
            "answer_type": self.answer_type[i],
        }
