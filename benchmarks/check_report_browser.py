"""Render a `gpv report` page in headless Chromium and save a screenshot, to check it in a real browser.

    python benchmarks/check_report_browser.py runs/tiny/report.html [--out report.png --width 1280 --height 2000]

Needs `chromium` on PATH (Debian: apt-get install chromium; `.ci/run` installs it); runs it offline with a
throwaway profile, saves the screenshot next to the page (default) and prints its path, size, how many
distinct colours it holds (a blank page has one or two) and how many of the page's images the browser
decoded. The same check runs in tests/test_report.py (in CI; skipped where Chromium is absent).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


# Added to a copy of the page (the report itself has no scripts): once the page has loaded, the browser's own
# count of its images that decoded (complete, with a natural width) and of all its images, on <body>.
COUNT_IMAGES = ('<script>window.addEventListener("load", () => { const all = Array.from(document.images); '
                'document.body.dataset.images = all.filter(i => i.complete && i.naturalWidth > 0).length + "/" '
                '+ all.length; });</script>')


def chromium(*args: str, timeout: float = 120.0) -> str:
    """Run headless Chromium offline with a throwaway profile; returns its stdout."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("chromium is not on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], check=True,
                              capture_output=True, text=True, timeout=timeout).stdout


def screenshot(page: str | Path, out: str | Path, *, width: int = 1280, height: int = 2000,
               timeout: float = 120.0) -> Path:
    """Screenshot `page` (a local HTML file) at width x height CSS pixels into the PNG `out`."""
    out = Path(out).resolve()
    out.unlink(missing_ok=True)
    chromium(f"--screenshot={out}", f"--window-size={width},{height}", Path(page).resolve().as_uri(),
             timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def decoded_images(page: str | Path, *, timeout: float = 120.0) -> tuple[int, int]:
    """(images the browser decoded, images on the page) of `page`, counted by the page in Chromium."""
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / page.name
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", COUNT_IMAGES + "</body>", 1),
                         encoding="utf-8")
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), timeout=timeout)
    found = re.search(r'data-images="(\d+)/(\d+)"', dom)
    if found is None:
        raise RuntimeError(f"chromium did not count the images of {page} (no load event?)")
    return int(found[1]), int(found[2])


def distinct_colours(png: Path) -> int:
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: the page's name with .png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    png = screenshot(args.page, args.out or args.page.with_suffix(".png"), width=args.width, height=args.height)
    with Image.open(png) as im:
        size = im.size
    decoded, total = decoded_images(args.page)
    print(f"{png}: {size[0]}x{size[1]} PNG, {distinct_colours(png)} distinct colours; "
          f"{decoded} of {total} images decoded")


if __name__ == "__main__":
    main()
