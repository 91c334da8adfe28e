"""The search app in a real browser: headless Chromium (Debian's) driven by Playwright, against the app on localhost.

CI installs the browser with `apt-get install chromium` (Debian's package; /usr/bin/chromium) and
Playwright from PyPI; Playwright drives that binary and downloads no browser of its own.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("qdrant_client")
pytest.importorskip("playwright", reason="Playwright (pip install playwright) drives the browser")

from app_support import CHROMIUM, CHROMIUM_ARGS, open_app_backend, write_png  # noqa: E402
from media.audio import write_wav  # noqa: E402
from media.pdf import write_pdf  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM}: apt-get install chromium (Debian's package)"),
]
# Per step: generous, since the app shares a loaded 2-core machine (an upload once took over 20 s there).
TIMEOUT_MS = 60_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_factory):
    """(url, library folder, backend, settings, server): the app over real files in an in-memory Qdrant collection."""
    from omnisdk.apps.server import AppSettings, BackgroundServer

    base = tmp_path_factory.mktemp("browser")
    library = base / "library"
    library.mkdir()
    write_png(library / "red.png", (220, 30, 30))
    write_png(library / "blue.png", (30, 60, 220))
    write_wav(library / "beep.wav", seconds=1.0, freq=440.0)
    write_wav(library / "low.wav", seconds=1.5, freq=180.0)
    write_pdf(library / "report.pdf")
    backend = open_app_backend(tiny_model_factory(["text", "image", "audio", "document"]), [library])
    settings = AppSettings(collection="app-test", port=0, upload_dir=base / "uploads", preview_cache=base / "previews")
    # The server (and the preview renderer's child process) start before the browser: a child forked
    # later would inherit Playwright's pipes, and Playwright would wait for them to close.
    server = BackgroundServer(backend, settings)
    with server as url:
        yield url, library, backend, settings, server
    backend.close()


@pytest.fixture(scope="module")
def browser(app, heatmap_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium  # Playwright gives every launch a fresh, empty user-data dir
        chromium.close()
        # Before Playwright stops: no child process of an app may hold its pipes then.
        app[-1].stop()
        heatmap_app[-1].stop()


def open_page(browser, url: str):
    """A fresh page at `url`; yields it, then fails on any request of the page that failed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url)
    yield page
    context.close()
    assert not failed, f"requests the page made that failed: {failed}"


@pytest.fixture()
def page(browser, app):
    yield from open_page(browser, app[0])


def search_and_wait(page, expect_in_status: str) -> None:
    page.locator("#search-button").click()
    page.wait_for_function(
        "text => (document.querySelector('#search-status')?.innerText || '').includes(text)", arg=expect_in_status
    )
    page.locator(".omni-card").first.wait_for()


def test_text_query_shows_result_cards_with_previews(page, app, tmp_path):
    page.locator("#query-text textarea").fill("a red circle")
    search_and_wait(page, "a red circle")
    cards = page.locator(".omni-card")
    # 2 images + 2 one-window clips + 3 PDF pages, all within the default limit of 12
    assert cards.count() == 7
    assert "7 result(s)" in page.locator("#search-status").inner_text()
    kinds = {cards.nth(i).get_attribute("data-kind") for i in range(cards.count())}
    assert kinds == {"image", "audio", "document"}
    # Every preview picture (image thumbnails, rendered PDF pages) came back from the guarded route and decoded.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.omni-card img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator(".omni-card img").count() == 5
    assert page.locator(".omni-card audio").count() == 2
    assert page.locator(".omni-card .omni-locator", has_text="page 2").count() == 1
    shot = tmp_path / "app-text-query.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # The modality filter: only images now.
    page.locator("#modality-filter label", has_text="audio").click()
    page.locator("#modality-filter label", has_text="document").click()
    search_and_wait(page, "2 result(s)")
    assert {cards.nth(i).get_attribute("data-modality") for i in range(cards.count())} == {"image"}


def test_audio_file_query_shows_result_cards(page, app, tmp_path):
    query = write_wav(tmp_path / "query-beep.wav", seconds=1.0, freq=440.0)
    page.locator("#query-file input[type=file]").set_input_files(str(query))
    page.locator("#query-file", has_text="query-beep.wav").wait_for()  # uploaded
    search_and_wait(page, "the file query-beep.wav")
    assert page.locator(".omni-card").count() == 7
    assert page.locator(".omni-card[data-modality=audio] audio").count() == 2
    page.screenshot(path=str(tmp_path / "app-audio-query.png"), full_page=True)
    print(f"\nscreenshot: {tmp_path / 'app-audio-query.png'}")


def test_index_tab_adds_an_uploaded_file(page, app, tmp_path):
    url, library, backend, settings, _ = app
    new = write_png(tmp_path / "green.png", (30, 200, 60))
    page.get_by_role("tab", name="Index").click()
    page.locator("#index-files input[type=file]").set_input_files(str(new))
    page.locator("#index-files", has_text="green.png").wait_for()
    page.locator("#index-button").click()
    page.locator("#index-summary", has_text="Indexed").wait_for()
    assert "Indexed 1 file(s) as 1 chunk(s)" in page.locator("#index-summary").inner_text()
    page.screenshot(path=str(tmp_path / "app-index-tab.png"), full_page=True)
    kept = settings.upload_dir / "green.png"
    assert kept.read_bytes() == new.read_bytes()
    assert settings.upload_dir.resolve() in backend.indexed_roots()
    page.get_by_role("tab", name="Search").click()
    page.locator("#query-text textarea").fill("green")
    search_and_wait(page, "green")
    assert page.locator(".omni-card .omni-source", has_text="green.png").count() == 1


# -- a third-party modality: the example plugin's preview card ------------------------------------------------
HEATMAP = REPO / "examples" / "omnisdk-heatmap"


@pytest.fixture(scope="module")
def heatmap_app(tmp_path_factory, tiny_model_factory):
    """(url, library, server): the app over CSV heat maps, indexed by a model with the example heatmap plugin."""
    from omnisdk.apps.server import AppSettings, BackgroundServer
    from omnisdk.plugin_manager import register_plugin

    base = tmp_path_factory.mktemp("heatmap-app")
    library = base / "library"
    library.mkdir()
    hot = np.zeros((8, 8))
    hot[:3, :3] = 1.0  # a hot spot in the top left corner
    write_csv(library / "hot-top-left.csv", hot)
    write_csv(library / "hot-bottom-right.csv", hot[::-1, ::-1])
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(HEATMAP))
        register_plugin(importlib.import_module("omnisdk_heatmap"), name="heatmap")  # as a notebook user would
        backend = open_app_backend(tiny_model_factory(["text", "heatmap"]), [library], collection="heatmaps")
        settings = AppSettings(collection="heatmaps", port=0, upload_dir=base / "uploads", preview_cache=base / "previews")
        server = BackgroundServer(backend, settings)
        with server as url:
            yield url, library, server
    sys.modules.pop("omnisdk_heatmap", None)
    backend.close()


def write_csv(path, grid: np.ndarray):
    path.write_text("\n".join(",".join(f"{v:g}" for v in row) for row in grid) + "\n")
    return path


#: The RGB of a point of an <img>, read back through a canvas (same origin, so the canvas is not tainted).
PIXEL = """([selector, fx, fy]) => {
  const img = document.querySelector(selector);
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(Math.floor(fx * img.naturalWidth), Math.floor(fy * img.naturalHeight), 1, 1).data.slice(0, 3));
}"""


def test_a_third_party_modality_gets_a_preview_card(browser, heatmap_app, tmp_path):
    url, library, _ = heatmap_app
    for page in open_page(browser, url):
        page.locator("#query-text textarea").fill("a hot spot")
        search_and_wait(page, "2 result(s)")
        cards = page.locator(".omni-card")
        assert cards.count() == 2
        assert {cards.nth(i).get_attribute("data-kind") for i in range(2)} == {"picture"}
        assert {cards.nth(i).get_attribute("data-modality") for i in range(2)} == {"heatmap"}
        page.wait_for_function(
            "() => [...document.querySelectorAll('.omni-card img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        for name, hot, cold in (("hot-top-left.csv", (0.1, 0.1), (0.9, 0.9)), ("hot-bottom-right.csv", (0.9, 0.9), (0.1, 0.1))):
            selector = f".omni-card img[alt='heatmap {name}']"
            assert page.locator(selector).count() == 1
            red, green, blue = page.evaluate(PIXEL, [selector, *hot])
            assert red == 255 and blue < 128, (name, red, green, blue)  # the hot spot is red
            red, green, blue = page.evaluate(PIXEL, [selector, *cold])
            assert blue == 255 and red > 128, (name, red, green, blue)  # the rest a little below the mean: pale blue
        page.screenshot(path=str(tmp_path / "app-heatmap.png"), full_page=True)
        print(f"\nscreenshot: {tmp_path / 'app-heatmap.png'}")
