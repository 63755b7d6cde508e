"""Screenshot a fairdistill report.html with headless Chromium, e.g. for the README.

    python scripts/screenshot_report.py runs/compare/report.html --out docs/report.png --max-height 2600

Chromium (Debian: ``apt-get install -y chromium``) renders the page into a tall window; the PNG is
then cut at the bottom of the page content (or at ``--max-height``), optionally scaled down to
``--width-out`` pixels, and saved as a palette PNG so that it stays small. The page is opened from
a ``file://`` URL with networking features off and a throwaway profile: a report is self-contained
and needs nothing else.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser(given: str | None) -> str:
    if given:
        return given
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: install it (Debian: apt-get install -y chromium) or pass --browser PATH")


def capture(report: Path, png: Path, browser: str, width: int, height: int, timeout: float) -> None:
    """Let headless Chromium write a width x height screenshot of ``report`` to ``png``."""
    with tempfile.TemporaryDirectory(prefix="fd-chromium-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            report.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not png.is_file():
            sys.exit(f"chromium failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def trim(png: Path, out: Path, max_height: int, width_out: int | None, colors: int) -> tuple[int, int]:
    """Cut the empty page bottom (and anything past ``max_height``), scale, quantise; returns the size."""
    from PIL import Image, ImageChops

    img = Image.open(png).convert("RGB")
    background = Image.new("RGB", img.size, img.getpixel((img.width - 1, img.height - 1)))
    box = ImageChops.difference(img, background).getbbox()
    bottom = min(img.height, (box[3] + 24) if box else img.height, max_height)
    img = img.crop((0, 0, img.width, bottom))
    if width_out and width_out < img.width:
        img = img.resize((width_out, round(img.height * width_out / img.width)), Image.LANCZOS)
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return img.size


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a report.html (or the folder holding it)")
    ap.add_argument("--out", type=Path, default=Path("report.png"), help="PNG to write (default: report.png)")
    ap.add_argument("--width", type=int, default=1280, help="browser window width in pixels")
    ap.add_argument("--height", type=int, default=4000, help="browser window height (the longest page shot)")
    ap.add_argument("--max-height", type=int, default=4000, help="cut the screenshot at this height")
    ap.add_argument("--width-out", type=int, default=None, help="scale the PNG down to this width")
    ap.add_argument("--colors", type=int, default=256, help="palette size of the saved PNG")
    ap.add_argument("--browser", default=None, help="Chromium executable (default: found on PATH)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for the browser")
    args = ap.parse_args(argv)

    report = args.report / "report.html" if args.report.is_dir() else args.report
    if not report.is_file():
        sys.exit(f"not found: {report}")
    browser = find_browser(args.browser)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fd-shot-") as tmp:
        raw = Path(tmp) / "raw.png"
        capture(report, raw, browser, args.width, args.height, args.timeout)
        w, h = trim(raw, args.out, args.max_height, args.width_out, args.colors)
    print(f"wrote {args.out} ({w}x{h}, {args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
