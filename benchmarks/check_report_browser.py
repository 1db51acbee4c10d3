"""Render a `gpv report` page in headless Chromium and save a screenshot, to check it in a real browser.

    python benchmarks/check_report_browser.py runs/tiny/report.html --out report.png [--width 1280 --height 2000]

Needs `chromium` on PATH (Debian: apt-get install chromium); runs it offline with a throwaway profile and
prints the screenshot's path, size and how many distinct colours it holds (a blank page has one or two).
The same check runs in tests/test_report.py, skipped where Chromium is absent.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def screenshot(page: str | Path, out: str | Path, *, width: int = 1280, height: int = 2000,
               timeout: float = 120.0) -> Path:
    """Screenshot `page` (a local HTML file) at width x height CSS pixels into the PNG `out`."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium is not on PATH (Debian: apt-get install chromium)")
    out = Path(out).resolve()
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                        f"--window-size={width},{height}", Path(page).resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def distinct_colours(png: Path) -> int:
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    png = screenshot(args.page, args.out, width=args.width, height=args.height)
    with Image.open(png) as im:
        size = im.size
    print(f"{png}: {size[0]}x{size[1]} PNG, {distinct_colours(png)} distinct colours")


if __name__ == "__main__":
    main()
