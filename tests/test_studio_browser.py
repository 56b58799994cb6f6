"""The studio's page in headless Chromium (Debian's ``chromium``, driven by Playwright): load
the page, upload a photo and a style, pick a method, run a job, watch its progress and live
preview, see the result and its recipe in the history; paint a mask and run with it.

Skipped when Playwright or the chromium binary is missing; nothing is downloaded."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio needs fastapi (the 'studio' extra)")
pytest.importorskip("uvicorn", reason="the studio needs uvicorn (the 'studio' extra)")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (pip install playwright)")

CHROMIUM = os.environ.get("BRUSHWORK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from brushwork.studio.app import StudioConfig  # noqa: E402
from brushwork.studio.server import StudioThread  # noqa: E402

TIMEOUT = 180_000  # ms: a busy machine is slow, never wrong


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    server = StudioThread(StudioConfig(data=tmp_path_factory.mktemp("studio"), workers=1))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from skimage import data
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(data.chelsea()).resize((96, 64), Image.BICUBIC).save(d / "cat.png")
    b = np.asarray(Image.fromarray(data.brick()).resize((64, 64), Image.BICUBIC), float)
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([b, b * 0.5 + x * 1.5, b * 0.2 + (63 - y) * 1.2], -1).clip(0, 255)
    Image.fromarray(rgb.astype(np.uint8)).save(d / "brick.png")
    return d


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # a chromium that cannot start here
            pytest.skip(f"chromium does not start: {str(e).splitlines()[0]}")
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.set_default_timeout(TIMEOUT)
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def test_page_runs_a_job_with_live_progress_and_shows_result_and_recipe(studio, images, page):
    page.goto(studio.url)
    page.wait_for_selector("#method option[value=gatys]", state="attached")
    assert "brushwork" in page.text_content("#health")
    page.set_input_files("#content-file", str(images / "cat.png"))
    page.set_input_files("#style-file", str(images / "brick.png"))
    page.wait_for_selector(".style-item")
    page.select_option("#method", "gatys")
    page.wait_for_selector("#control-steps")
    page.fill("#size", "64")
    page.fill("#control-steps", "30")
    page.fill("#control-tol", "0")
    page.click("#run")
    # live: progress text with the step count, then a preview image
    page.wait_for_function("document.querySelector('#progress-text').textContent"
                           ".includes('step')")
    page.wait_for_selector("#preview[src*='/preview']", state="attached")
    page.wait_for_selector("#message.ok")
    assert "/result" in page.get_attribute("#compare-after", "src")
    assert page.is_visible("#compare-range")
    page.fill("#compare-range", "20")
    assert "80%" in page.get_attribute("#compare-before", "style")
    card = page.wait_for_selector("#gallery .card[data-state=done]")
    job_id = card.get_attribute("data-id")
    assert card.query_selector("a.dl-recipe").get_attribute("href").endswith(
        f"/api/jobs/{job_id}/recipe?download=1")
    card.query_selector("details summary").click()
    page.wait_for_function(f"document.querySelector('.card[data-id=\"{job_id}\"] pre.recipe')"
                           ".textContent.includes('brushwork_recipe')")
    recipe = json.loads(card.query_selector("pre.recipe").text_content())
    assert recipe["method"] == "gatys" and recipe["controls"] == {"steps": 30, "tol": 0}
    assert recipe["size"] == 64
    assert not page.errors, page.errors


def test_mask_brush_sends_one_mask_per_style(studio, images, page):
    page.goto(studio.url)
    page.wait_for_selector("#method option[value=adain]", state="attached")
    page.select_option("#method", "adain")
    page.select_option("#option-encoder", "small")
    page.set_input_files("#content-file", str(images / "cat.png"))
    page.set_input_files("#style-file", [str(images / "brick.png"), str(images / "cat.png")])
    page.wait_for_selector(".style-item >> nth=1")
    page.fill("#size", "64")
    page.check("#mask-enable")
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for style, x in (("0", 0.25), ("1", 0.75)):
        page.select_option("#mask-style", style)
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] - 5, steps=6)
        page.mouse.up()
    painted = page.evaluate("() => S.masks.map(m => { const d = m.getContext('2d')"
                            ".getImageData(0, 0, m.width, m.height).data; let n = 0;"
                            " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })")
    assert len(painted) == 2 and all(n > 0 for n in painted)
    page.click("#run")
    page.wait_for_selector("#message.ok")
    job_id = page.evaluate("() => S.job.id")
    job = json.loads(page.evaluate(f"() => fetch('/api/jobs/{job_id}').then(r => r.text())"))
    assert job["state"] == "done" and job["n_masks"] == 2 and job["n_styles"] == 2
    assert not page.errors, page.errors
