"""Reading images the way users hand them over, and turning them into model input.

`load_image` accepts JPEG/PNG (anything PIL reads), applies the EXIF orientation
and converts grayscale (8- or 16-bit), RGBA (composited on white), palette and CMYK
images to RGB; an image of more than PIL's MAX_IMAGE_PIXELS * 2 pixels (a possible
decompression bomb) is refused before it is decoded.
`to_tensor` resizes to (H, W) without keeping the aspect ratio (as GPV-1 does)
and normalizes with the ImageNet mean/std; it is `normalize(pixels(img, size))`, split so that
DataLoader workers hand over uint8 pixels (a quarter of float32's bytes through shared and pinned
memory) and the device normalizes them (`device_images`), with the same float32 operations.
`load_image(path, reduce_to=(w, h))` lets the JPEG decoder scale the image down by 2, 4 or 8 while
decoding (PIL's `draft`) when the model input is at most half its size (see benchmarks/bench_loader.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gpvcli.errors import GPVError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF-rotated RGB copy of any PIL image (alpha composited on white)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):     # 16-bit grayscale: 0..65535 -> 0..255
        img = Image.fromarray((np.asarray(img, np.float64) / 257).clip(0, 255).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


EXIF_ORIENTATION = 0x0112
TRANSPOSING = (5, 6, 7, 8)          # EXIF orientations that swap width and height


def load_image(path: str | Path, reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """The RGB image at `path`. With `reduce_to` (w, h), a JPEG at least twice that size (after its
    EXIF rotation) may be decoded at 1/2, 1/4 or 1/8 scale, never below (w, h)."""
    path = Path(path)
    if not path.is_file():
        raise GPVError(f"image not found: {path}", hint="check the path")
    try:
        with Image.open(path) as img:
            if reduce_to is not None and img.format == "JPEG":
                w, h = reduce_to
                if img.getexif().get(EXIF_ORIENTATION) in TRANSPOSING:
                    w, h = h, w
                img.draft(None, (w, h))
            img.load()
            rgb = to_rgb(img)
    except Image.DecompressionBombError as e:
        raise GPVError(f"image {path} is too large to decode safely ({e})",
                       hint="resize it, e.g. to 1280 pixels on its long side")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise GPVError(f"cannot read image {path}: {e}", hint="give a JPEG or PNG file")
    if rgb.width < 1 or rgb.height < 1:
        raise GPVError(f"image {path} is empty ({rgb.width}x{rgb.height})")
    return rgb


def to_tensor(img: Image.Image, size: tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """RGB PIL image -> normalized float tensor (3, H, W) at size (H, W)."""
    return normalize(pixels(img, size), mean, std).contiguous()


def pixels(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W) at size (H, W) (bilinear, aspect ratio not kept), a view
    of (H, W, 3) memory (channels last; `torch.stack` of `.permute(1, 2, 0)` views copies it once)."""
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)       # (H, W, 3) -> (3, H, W)


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> float32 (x / 255 - mean) / std per channel, on their device."""
    shape = (3, 1, 1)
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return (images.float() / 255.0 - mean) / std


def stack_pixels(images: list[torch.Tensor]) -> torch.Tensor:
    """(3, H, W) images -> (B, 3, H, W) in channels-last memory (one copy of (H, W, 3) rows)."""
    return torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)      # (B, H, W, 3) -> (B, 3, H, W)


def device_images(images: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """A batch (B, 3, H, W) as model input on `device`: uint8 pixels are copied (non-blocking from pinned
    memory) and normalized there; float images are taken as normalized. Contiguous in the requested
    memory format."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images)
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def crop(img: Image.Image, box_xyxy) -> Image.Image:
    """Crop a pixel xyxy box (clipped to the image; at least one pixel)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(img.width, max(x0 + 1, int(np.ceil(x1)))), min(img.height, max(y0 + 1, int(np.ceil(y1))))
    return img.crop((x0, y0, x1, y1))
