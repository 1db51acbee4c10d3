"""Visual-encoder outputs computed once per image and stored in HDF5.

When the visual encoder is frozen, its outputs for an image never change, so they
are computed once (`build_feature_cache`) and read back by key (`FeatureCache`).
Keys are strings chosen by the caller ("img:<image_id>" for whole images,
"crop:<image_id>:<x0>,<y0>,<x1>,<y1>" for classification crops).

File layout: datasets "boxes" (N, Q, 4) and "objectness" (N, Q, K) in float32,
"states" (N, Q, D) and "roi" (N, Q, C) in the cache's form, "keys" (N,) strings; the
attribute "fingerprint" identifies the encoder (`visual_fingerprint`) so a cache
is never read with another encoder's weights or config, and "form" names the form
of the two large datasets (absent in files of the first layout: float16):
    float16  as computed, rounded to float16 (2 bytes a value);
    int8     each region's vector (a row of D or C values) as int8 q with one float32 scale per row,
             "states_scale" / "roi_scale" (N, Q): value = q * scale, scale = max |row| / 127
             (1 byte a value; the error of a value is at most scale / 2).
`bytes_per_sample` gives the size of one entry in either form. Readers get the stored rows
(`FeatureCache.rows`, in the worker that collates a batch) and dequantize them on the device
(`decode_rows`), so int8 rows also cross the host-device link at half the bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from torch import Tensor, nn

from gpvcli.config import to_dict
from gpvcli.errors import DiskFullError, GPVError, GPVRuntimeError
from gpvcli.io import atomic_path, free_bytes
from gpvcli.progress import progress_bar

DTYPES = {"boxes": np.float32, "states": np.float16, "roi": np.float16, "objectness": np.float32,
          "colour": np.float16}     # "colour" only from encoders with region_colour
FORMS = ("float16", "int8")
QUANTIZED = ("states", "roi")           # the datasets the form applies to
INT8_MAX = 127
SPACE_MARGIN = 1 << 20       # bytes kept free beyond the features themselves (HDF5 metadata, the keys)
_FP16_MAX = float(np.finfo(np.float16).max)


def _stored(outputs: dict) -> list[tuple[str, type]]:
    """(name, dtype) of the encoder outputs that are cached."""
    return [(name, dtype) for name, dtype in DTYPES.items() if name in outputs]


def visual_fingerprint(encoder: nn.Module, cfg) -> str:
    """sha256 (hex) over the config's YAML and every state-dict tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(yaml.safe_dump(to_dict(cfg), sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def quantize_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """float (..., C) -> int8 (..., C) and float32 scales (...): values ~ q * scale[..., None], each row's
    largest magnitude mapped to 127 (a zero row: q = 0, scale = 0)."""
    values = values.float()
    scale = values.abs().amax(-1) / INT8_MAX
    q = torch.round(values / torch.where(scale > 0, scale, 1.0)[..., None]).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale


def encode_rows(outputs: dict[str, Tensor], form: str) -> dict[str, np.ndarray]:
    """Encoder outputs (each (B, Q, ...)) -> the arrays stored for them in `form`."""
    stored = {}
    for name, dtype in _stored(outputs):
        values = outputs[name].detach().float().cpu()
        if form == "int8" and name in QUANTIZED:
            q, scale = quantize_rows(values)
            stored[name], stored[f"{name}_scale"] = q.numpy(), scale.numpy()
            continue
        if dtype == np.float16 and values.abs().max() > _FP16_MAX:
            raise GPVRuntimeError(f"visual {name} exceed the float16 range and cannot be cached",
                                  hint="train the visual encoder with frozen features off")
        stored[name] = values.numpy().astype(dtype)
    return stored


def decode_rows(rows: dict[str, Tensor], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Stored rows (`FeatureCache.rows`) -> the VisualEncoder.forward dict, float32 on `device`
    (copied non-blocking, dequantized there)."""
    rows = {k: v.to(device, non_blocking=True) for k, v in rows.items()}
    out = {}
    for name, _ in _stored(rows):
        values = rows[name].float()
        if f"{name}_scale" in rows:
            values = values * rows[f"{name}_scale"][..., None]
        out[name] = values
    return out


def bytes_per_sample(*, queries: int, state_dim: int, roi_dim: int, classes: int, form: str,
                     colour_dim: int = 0) -> int:
    """Bytes of one cache entry (one image or crop) in `form`, the keys and HDF5's metadata aside
    (colour_dim: the region colour's values per region, 0 without region_colour)."""
    f32 = np.dtype(np.float32).itemsize
    small = queries * (4 + classes) * f32 + queries * colour_dim * np.dtype(np.float16).itemsize   # + colour
    if form == "int8":
        return small + queries * (state_dim + roi_dim) + 2 * queries * f32   # + a scale per row
    return small + queries * (state_dim + roi_dim) * np.dtype(np.float16).itemsize


# COCO-SCE's train split: 80% of train2014's 82,783 images, and one classification crop per sample of
# the seed's Table 5 (174,538 train classification samples).
COCO_SCE_TRAIN = {"images": 66_226, "crops": 174_538}


def projected_size(*, queries: int, state_dim: int, roi_dim: int, classes: int, form: str, max_gb: float = 0.0,
                   images: int = COCO_SCE_TRAIN["images"], crops: int = COCO_SCE_TRAIN["crops"],
                   colour_dim: int = 0) -> dict:
    """The cache of `images` whole images and `crops` crops in `form` within `max_gb` (0 = no bound; images
    first, as `gpvcli.train.stages.cache_plan` fills it): bytes_per_sample, bytes (all entries), cached
    (entries within the bound), cached_bytes, live (entries computed live)."""
    per = bytes_per_sample(queries=queries, state_dim=state_dim, roi_dim=roi_dim, classes=classes, form=form,
                           colour_dim=colour_dim)
    total = images + crops
    cached = total if not max_gb else min(total, int(max_gb * 1e9 // per))
    return {"form": form, "bytes_per_sample": per, "entries": total, "bytes": total * per, "cached": cached,
            "cached_bytes": cached * per, "live": total - cached}


def _append(f: h5py.File, stored: dict[str, np.ndarray]) -> None:
    """Append one batch of stored arrays (each (B, Q, ...)) to the file's datasets."""
    for name, values in stored.items():
        if name not in f:
            f.create_dataset(name, data=values, maxshape=(None, *values.shape[1:]), chunks=(1, *values.shape[1:]))
        else:
            ds = f[name]
            ds.resize(ds.shape[0] + len(values), axis=0)
            ds[-len(values):] = values


def _check_space(path: Path, stored: dict[str, np.ndarray], *, done: int, total: int | None) -> None:
    """Before appending a batch: refuse (DiskFullError) when the images left to cache (`total` - `done`, or
    this batch) would not fit, with a margin for HDF5's metadata, so that HDF5 itself never meets a full disk
    (it can crash the process there)."""
    per_image = sum(values[0].nbytes for values in stored.values())
    left = (total - done if total else len(stored["boxes"])) * per_image
    free = free_bytes(path.parent)
    if left + SPACE_MARGIN > free:
        raise DiskFullError(path, needed=left + SPACE_MARGIN, free=free)


def frozen_outputs(encoder: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """`encoder`'s outputs for a batch of model-input images as the cache holds them: eval mode, no gradients."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            return encoder(images)
    finally:
        encoder.train(was_training)


def build_feature_cache(encoder: nn.Module, items: Iterable[tuple[str, Tensor]], path: str | Path, *,
                        batch_size: int = 32, fingerprint: str, show_progress: bool = False,
                        total: int | None = None, form: str = "float16") -> Path:
    """Run `encoder` (eval mode, no gradients) over `items` and write its outputs to `path` in `form`.

    items: (key, image) pairs, image a normalized float or uint8-pixel (3, H, W) tensor (see
    `gpvcli.data.images.device_images`), all of one size; keys unique.
    The file appears only when complete (written under a temporary name, then renamed). The space the
    images left need (`total` of them, when given) is checked before each batch is written.
    Returns `path`.
    """
    from gpvcli.data.images import device_images, stack_pixels

    if form not in FORMS:
        raise GPVError(f"feature cache form {form!r} is unknown", hint=f"use one of {', '.join(FORMS)}")
    path = Path(path)
    device = next(encoder.parameters()).device
    keys: list[str] = []
    seen: set[str] = set()
    with (atomic_path(path) as tmp, h5py.File(tmp, "w") as f, progress_bar(show_progress) as progress):
        task = progress.add_task("caching visual features", total=total, info="")
        batch_keys: list[str] = []
        batch_images: list[Tensor] = []

        def flush() -> None:
            if batch_images:
                images = device_images(stack_pixels(batch_images), device)      # (B, 3, H, W)
                stored = encode_rows(frozen_outputs(encoder, images), form)
                _check_space(path, stored, done=len(keys), total=total)
                _append(f, stored)
                keys.extend(batch_keys)
                progress.advance(task, len(batch_images))
                batch_keys.clear()
                batch_images.clear()

        for key, image in items:
            if key in seen:
                raise GPVError(f"feature cache key {key!r} appears twice")
            if batch_images and image.shape != batch_images[0].shape:
                raise GPVError(f"image {key!r} has shape {tuple(image.shape)}, "
                               f"others {tuple(batch_images[0].shape)}", hint="resize all images alike")
            seen.add(key)
            batch_keys.append(key)
            batch_images.append(image)
            if len(batch_images) == batch_size:
                flush()
        flush()
        if not keys:
            raise GPVError(f"no images to cache for {path}")
        f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        f.attrs["fingerprint"] = fingerprint
        f.attrs["form"] = form
    return path


class FeatureCache:
    """Read-only access to a file written by `build_feature_cache`.

    `FeatureCache(path, expected_fingerprint)` refuses a cache made by another encoder
    (pass None to skip the check). `rows(keys)` returns the stored arrays of those keys (see the
    module docstring), `get(keys)` the VisualEncoder.forward dict for them, batched, float32, on the
    CPU. The HDF5 file is opened lazily and reopened
    in a forked process, so a cache can be shared with DataLoader workers. After `load()`, rows come from
    memory (read once, before workers fork: they share those pages).
    """

    def __init__(self, path: str | Path, expected_fingerprint: str | None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GPVError(f"feature cache not found: {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                fingerprint = str(f.attrs["fingerprint"])
                self.form = str(f.attrs.get("form", "float16"))
                self.datasets = [name for name in f if name != "keys"]
                names = [k.decode() for k in f["keys"][:]]
        except (OSError, KeyError) as e:
            raise GPVError(f"feature cache {self.path} is unreadable ({e})", hint="delete it and rebuild it")
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise GPVError(
                f"feature cache {self.path} was computed with a different visual encoder "
                f"(fingerprint {fingerprint[:12]}, expected {expected_fingerprint[:12]})",
                hint="delete it and rerun the command that built it (e.g. `gpv train`) to rebuild it "
                     "with the current visual encoder")
        self.fingerprint = fingerprint
        self._index = {k: i for i, k in enumerate(names)}
        self._file: h5py.File | None = None
        self._pid = -1
        self._arrays: dict[str, np.ndarray] | None = None

    def load(self) -> FeatureCache:
        """Read every dataset into memory; `rows` reads from there from now on. Returns the cache."""
        with h5py.File(self.path, "r") as f:
            self._arrays = {name: f[name][:] for name in self.datasets}
        return self

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def get(self, keys: list[str]) -> dict[str, Tensor]:
        """Outputs for `keys`: "boxes" (B, Q, 4), "states" (B, Q, D), "objectness" (B, Q, K), "roi" (B, Q, C)."""
        return decode_rows(self.rows(keys))

    def rows(self, keys: list[str]) -> dict[str, Tensor]:
        """The stored arrays of `keys`, batched (B, Q, ...), in their stored dtypes."""
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise GPVError(f"feature cache {self.path} has no entry {missing[0]!r} ({len(missing)} missing)",
                           hint="rebuild the cache for this data")
        if self._arrays is not None:
            rows = np.array([self._index[k] for k in keys], dtype=np.int64)
            return {name: torch.from_numpy(values[rows]) for name, values in self._arrays.items()}
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        rows, inverse = np.unique([self._index[k] for k in keys], return_inverse=True)  # h5py wants sorted rows
        return {name: torch.from_numpy(self._file[name][rows][inverse]) for name in self.datasets}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
