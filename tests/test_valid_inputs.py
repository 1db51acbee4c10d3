"""Valid but unusual images give what the README and gpvcli.data.images promise: CMYK converted to RGB,
a palette image's transparent colour and an RGBA image's alpha composited on white; `gpv predict` answers
such a file exactly as it answers the RGB image the promise describes."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data.images import load_image

cli = CliRunner()

# CMYK ink -> RGB: each channel is 255 minus its ink and the black ink (C -> R, M -> G, Y -> B)
CMYK_RGB = [((0, 0, 0, 0), (255, 255, 255)), ((255, 0, 0, 0), (0, 255, 255)), ((0, 255, 0, 0), (255, 0, 255)),
            ((0, 0, 255, 0), (255, 255, 0)), ((0, 0, 0, 255), (0, 0, 0)), ((100, 0, 0, 0), (155, 255, 255)),
            ((0, 0, 0, 100), (155, 155, 155))]


def stripes(colours, mode, width=8):
    arr = np.zeros((16, width * len(colours), len(colours[0])), np.uint8)
    for k, c in enumerate(colours):
        arr[:, width * k:width * (k + 1)] = c
    return Image.fromarray(arr, mode)


def centres(img, n, width=8):
    a = np.asarray(img)
    return [a[8, width * k + width // 2].tolist() for k in range(n)]


@pytest.mark.parametrize("suffix, tolerance", [(".tif", 0), (".jpg", 6)])
def test_cmyk_becomes_rgb(tmp_path, suffix, tolerance):
    path = tmp_path / f"cmyk{suffix}"
    stripes([c for c, _ in CMYK_RGB], "CMYK").save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    assert Image.open(path).mode == "CMYK"
    img = load_image(path)
    assert img.mode == "RGB"
    got = np.array(centres(img, len(CMYK_RGB)))
    assert np.abs(got - np.array([rgb for _, rgb in CMYK_RGB])).max() <= tolerance


def palette_png(path):
    """Stripes of palette indices 0 (transparent, dark blue), 1 (orange), 2 (green)."""
    idx = np.zeros((16, 24), np.uint8)
    idx[:, 8:16], idx[:, 16:] = 1, 2
    img = Image.fromarray(idx, "P")
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 160, 0] + [0] * (253 * 3))
    img.save(path, transparency=0)
    return path


def test_palette_transparency_is_white(tmp_path):
    img = load_image(palette_png(tmp_path / "palette.png"))
    assert img.mode == "RGB" and centres(img, 3) == [[255, 255, 255], [200, 100, 50], [0, 160, 0]]


def test_rgba_is_composited_on_white(tmp_path):
    rgba = stripes([(0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 51), (200, 100, 50, 255)], "RGBA")
    rgba.save(tmp_path / "rgba.png")
    # alpha a of black over white: 255 * (1 - a / 255): 255, 0, 204
    assert centres(load_image(tmp_path / "rgba.png"), 4) == [[255] * 3, [0] * 3, [204] * 3, [200, 100, 50]]


def test_predict_answers_a_cmyk_or_palette_file_as_its_rgb_equivalent(tiny_run, tmp_path):
    cmyk = tmp_path / "cmyk.tif"
    stripes([c for c, _ in CMYK_RGB], "CMYK", width=16).save(cmyk)
    stripes([rgb for _, rgb in CMYK_RGB], "RGB", width=16).save(tmp_path / "cmyk_rgb.png")
    palette = palette_png(tmp_path / "palette.png")
    white = np.asarray(Image.open(palette).convert("RGB")).copy()
    white[:, :8] = 255                                        # the transparent stripe on white
    Image.fromarray(white).save(tmp_path / "palette_rgb.png")

    def predict(path):
        result = cli.invoke(app, ["predict", str(path), "Locate dog.", "--run", str(tiny_run), "--json",
                                  "--top-k", "3"])
        assert result.exit_code == 0, result.output
        record = json.loads(result.output.strip().splitlines()[-1])
        return {k: v for k, v in record.items() if k != "image"}

    assert predict(cmyk) == predict(tmp_path / "cmyk_rgb.png")
    assert predict(palette) == predict(tmp_path / "palette_rgb.png")
