"""Visual-encoder outputs computed once per image and stored in HDF5.

When the visual encoder is frozen, its outputs for an image never change, so they
are computed once (`build_feature_cache`) and read back by key (`FeatureCache`).
Keys are strings chosen by the caller ("img:<image_id>" for whole images,
"crop:<image_id>:<x0>,<y0>,<x1>,<y1>" for classification crops).

File layout: datasets "boxes" (N, Q, 4) and "objectness" (N, Q, K) in float32,
"states" (N, Q, D) and "roi" (N, Q, C) in float16, "keys" (N,) strings; the
attribute "fingerprint" identifies the encoder (`visual_fingerprint`) so a cache
is never read with another encoder's weights or config.
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


def _append(f: h5py.File, outputs: dict[str, Tensor]) -> None:
    """Append one batch of encoder outputs (each (B, Q, ...)) to the file's datasets."""
    for name, dtype in _stored(outputs):
        values = outputs[name].detach().float().cpu()
        if dtype == np.float16 and values.abs().max() > _FP16_MAX:
            raise GPVRuntimeError(f"visual {name} exceed the float16 range and cannot be cached",
                                  hint="train the visual encoder with frozen features off")
        values = values.numpy().astype(dtype)
        if name not in f:
            f.create_dataset(name, data=values, maxshape=(None, *values.shape[1:]), chunks=(1, *values.shape[1:]))
        else:
            ds = f[name]
            ds.resize(ds.shape[0] + len(values), axis=0)
            ds[-len(values):] = values


def _check_space(path: Path, outputs: dict[str, Tensor], *, done: int, total: int | None) -> None:
    """Before appending a batch: refuse (DiskFullError) when the images left to cache (`total` - `done`, or
    this batch) would not fit, with a margin for HDF5's metadata, so that HDF5 itself never meets a full disk
    (it can crash the process there)."""
    per_image = sum(outputs[name][0].numel() * np.dtype(dtype).itemsize for name, dtype in _stored(outputs))
    left = (total - done if total else len(outputs["boxes"])) * per_image
    free = free_bytes(path.parent)
    if left + SPACE_MARGIN > free:
        raise DiskFullError(path, needed=left + SPACE_MARGIN, free=free)


def build_feature_cache(encoder: nn.Module, items: Iterable[tuple[str, Tensor]], path: str | Path, *,
                        batch_size: int = 32, fingerprint: str, show_progress: bool = False,
                        total: int | None = None) -> Path:
    """Run `encoder` (eval mode, no gradients) over `items` and write its outputs to `path`.

    items: (key, image) pairs, image a normalized (3, H, W) tensor, all of one size; keys unique.
    The file appears only when complete (written under a temporary name, then renamed). The space the
    images left need (`total` of them, when given) is checked before each batch is written.
    Returns `path`.
    """
    path = Path(path)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    keys: list[str] = []
    seen: set[str] = set()
    try:
        with (atomic_path(path) as tmp, h5py.File(tmp, "w") as f, torch.no_grad(),
              progress_bar(show_progress) as progress):
            task = progress.add_task("caching visual features", total=total, info="")
            batch_keys: list[str] = []
            batch_images: list[Tensor] = []

            def flush() -> None:
                if batch_images:
                    images = torch.stack(batch_images).to(device)  # (B, 3, H, W)
                    outputs = encoder(images)
                    _check_space(path, outputs, done=len(keys), total=total)
                    _append(f, outputs)
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
    finally:
        encoder.train(was_training)
    return path


class FeatureCache:
    """Read-only access to a file written by `build_feature_cache`.

    `FeatureCache(path, expected_fingerprint)` refuses a cache made by another encoder
    (pass None to skip the check). `get(keys)` returns the VisualEncoder.forward dict for
    those keys, batched, float32, on the CPU. The HDF5 file is opened lazily and reopened
    in a forked process, so a cache can be shared with DataLoader workers.
    """

    def __init__(self, path: str | Path, expected_fingerprint: str | None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GPVError(f"feature cache not found: {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                fingerprint = str(f.attrs["fingerprint"])
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

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def get(self, keys: list[str]) -> dict[str, Tensor]:
        """Outputs for `keys`: "boxes" (B, Q, 4), "states" (B, Q, D), "objectness" (B, Q, K), "roi" (B, Q, C)."""
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise GPVError(f"feature cache {self.path} has no entry {missing[0]!r} ({len(missing)} missing)",
                           hint="rebuild the cache for this data")
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        rows, inverse = np.unique([self._index[k] for k in keys], return_inverse=True)  # h5py wants sorted rows
        return {name: torch.from_numpy(self._file[name][rows][inverse].astype(np.float32)) for name in DTYPES if name in self._file}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
