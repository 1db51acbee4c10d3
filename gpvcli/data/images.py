"""Reading images the way users hand them over, and turning them into model input.

`load_image` accepts JPEG/PNG (anything PIL reads), applies the EXIF orientation
and converts grayscale (8- or 16-bit), RGBA (composited on white), palette and CMYK
images to RGB; an image of more than PIL's MAX_IMAGE_PIXELS * 2 pixels (a possible
decompression bomb) is refused before it is decoded.
`to_tensor` resizes to (H, W) without keeping the aspect ratio (as GPV-1 does)
and normalizes with the ImageNet mean/std.
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


def load_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise GPVError(f"image not found: {path}", hint="check the path")
    try:
        with Image.open(path) as img:
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
    h, w = size
    arr = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0  # (H, W, 3)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)


def crop(img: Image.Image, box_xyxy) -> Image.Image:
    """Crop a pixel xyxy box (clipped to the image; at least one pixel)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(img.width, max(x0 + 1, int(np.ceil(x1)))), min(img.height, max(y0 + 1, int(np.ceil(y1))))
    return img.crop((x0, y0, x1, y1))
