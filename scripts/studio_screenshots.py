"""Screenshots of the studio for docs/studio.md: each step of a session in headless Chromium.

Starts a studio on a free loopback port with a fresh data folder, drives the page with
Playwright (Debian's /usr/bin/chromium; nothing is downloaded) and writes docs/studio/*.png:

  01-inputs.png   a photo, two styles (an upload and a bundled one), adain with its controls
  02-masks.png    the mask brush: where each style goes
  03-live.png     a gatys job running: progress, ETA and the live preview
  04-result.png   the result (of the masked adain job) under the before/after slider
  05-history.png  the history, a result's recipe opened

    python scripts/studio_screenshots.py [--out docs/studio] [--chromium /usr/bin/chromium]
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

WIDTH = 1000     # the saved screenshots' width
VIEWPORT = 1280  # the browser window's width (saved scaled down to WIDTH)


def save(png: bytes, path: Path) -> None:
    """A screenshot as a small PNG: at most WIDTH px wide, 256 colours."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    if im.width > WIDTH:
        im = im.resize((WIDTH, round(im.height * WIDTH / im.width)), Image.LANCZOS)
    im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    im.save(path, optimize=True)
    print(f"wrote {path} ({im.width}x{im.height}, {path.stat().st_size // 1024} KB)")


def paint(page, style_index: str, x0: float, x1: float) -> None:
    """Paint a band from x0 to x1 (fractions of the width) for the style at ``style_index``."""
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.select_option("#mask-style", style_index)
    page.fill("#brush-size", "60")
    y = box["y"] + 20
    while y < box["y"] + box["height"] - 10:
        page.mouse.move(box["x"] + box["width"] * x0, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * x1, y, steps=4)
        page.mouse.up()
        y += 40


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/studio")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright
    from skimage import data

    from brushwork.studio.app import StudioConfig
    from brushwork.studio.server import StudioThread

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.fromarray(data.chelsea()).save(tmp / "chelsea.png")
        Image.fromarray(data.coffee()).save(tmp / "coffee.png")
        server = StudioThread(StudioConfig(data=tmp / "studio", workers=1)).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium,
                                            args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": VIEWPORT, "height": 900})
                page.set_default_timeout(600_000)
                page.goto(server.url)
                page.wait_for_selector("#method option[value=adain]", state="attached")
                page.wait_for_selector(".thumb[data-name=swirls] img")
                page.set_input_files("#content-file", str(tmp / "chelsea.png"))
                page.set_input_files("#style-file", str(tmp / "coffee.png"))
                page.click(".thumb[data-name=swirls]")
                page.wait_for_selector(".style-item >> nth=1")
                page.select_option("#option-encoder", "small")
                page.fill("#size", "512")
                page.fill("#control-strength", "0.9")
                page.dispatch_event("#control-strength", "input")
                page.wait_for_function("[...document.querySelectorAll('.thumb img')]"
                                       ".every(i => i.complete && i.naturalWidth)")
                page.evaluate("window.scrollTo(0, 0)")
                page.wait_for_timeout(300)
                save(page.screenshot(), out / "01-inputs.png")

                page.check("#mask-enable")
                paint(page, "0", 0.02, 0.5)
                paint(page, "1", 0.5, 0.98)
                page.evaluate("window.scrollTo(0, 0)")
                save(page.screenshot(), out / "02-masks.png")

                page.click("#run")
                page.wait_for_selector("#message.ok")
                page.fill("#compare-range", "45")
                page.dispatch_event("#compare-range", "input")
                page.wait_for_timeout(300)
                save(page.locator("#work").screenshot(), out / "04-result.png")

                page.click(".tabs button[data-view=compose]")
                page.uncheck("#mask-enable")
                page.select_option("#method", "gatys")
                page.wait_for_selector("#control-steps")
                page.fill("#size", "256")
                page.fill("#control-steps", "40")
                page.click("#run")
                page.wait_for_function(
                    "() => { const m = document.querySelector('#progress-text').textContent"
                    ".match(/step (\\d+)\\//); return m && +m[1] >= 12; }")
                page.wait_for_timeout(300)
                save(page.locator("#work").screenshot(), out / "03-live.png")
                page.wait_for_selector("#message.ok")

                card = page.wait_for_selector("#gallery .card[data-state=done] >> nth=1")
                card.query_selector("details summary").click()
                page.wait_for_selector("#gallery pre.recipe:has-text('brushwork_recipe')")
                save(page.locator("#history").screenshot(), out / "05-history.png")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
