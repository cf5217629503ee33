"""Check that a ``deepwiener report`` page renders in a real headless browser (Chromium).

Usage::

    python scripts/check_report_renders.py runs/sb-lru/report.html [--png shot.png] [--browser chromium]

Runs ``chromium --headless --no-sandbox --disable-gpu ... --screenshot=PNG --window-size=1200,3000
file://REPORT`` (offline: no background networking, no component updates, no sync, a throw-away profile) and
checks that the screenshot is not trivial: it has the window's size, enough non-white pixels (a blank or error
page has almost none), and enough saturated pixels (only the embedded plots have coloured lines; text,
tables and a broken-image icon are grey). Exit status: 0 rendered, 1 not rendered, 2 no browser found.
On Debian: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1200, 3000)
MIN_INK = 0.02  # fraction of pixels that are not (near) white
MIN_COLOURED = 2000  # pixels with saturated colour (plot lines)


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, report: Path, png: Path, timeout: float = 120.0) -> None:
    """Render ``report`` headless into ``png`` (raises CalledProcessError / TimeoutExpired on failure)."""
    with tempfile.TemporaryDirectory(prefix="dw-chromium-") as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", report.resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout,
        )


def problems(png: Path) -> list[str]:
    """What is wrong with a screenshot ([] when it shows a rendered report)."""
    if not png.is_file() or png.stat().st_size == 0:
        return [f"no screenshot was written to {png}"]
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    found = []
    if rgb.size != WINDOW:
        found.append(f"screenshot is {rgb.size[0]}x{rgb.size[1]}, expected {WINDOW[0]}x{WINDOW[1]}")
    pixels = np.asarray(rgb, dtype=np.int16)  # (height, width, 3)
    ink = float(np.mean(pixels.min(axis=2) < 235))
    coloured = int(np.sum(np.ptp(pixels, axis=2) > 80))
    if ink < MIN_INK:
        found.append(f"only {ink:.1%} of the pixels are not white (blank page?)")
    if coloured < MIN_COLOURED:
        found.append(f"only {coloured} coloured pixels (the embedded plots did not render?)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("--png", type=Path, help="where to keep the screenshot (default: a temporary file)")
    parser.add_argument("--browser", help=f"browser executable (default: the first of {', '.join(BROWSERS)})")
    args = parser.parse_args()
    browser = args.browser or find_browser()
    if browser is None:
        print(f"no browser found (tried {', '.join(BROWSERS)}); on Debian: apt-get install -y chromium")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        png = args.png or Path(tmp) / "report.png"
        try:
            screenshot(browser, args.report, png)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"{browser} failed: {exc}")
            return 1
        found = problems(png)
    for problem in found:
        print(problem)
    if not found:
        print(f"{args.report} renders in {browser}" + (f"; screenshot {png}" if args.png else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
