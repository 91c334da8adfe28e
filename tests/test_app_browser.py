"""The search app in a real browser: headless Chromium (Debian's) driven by Playwright, against the app on localhost.

CI installs the browser with `apt-get install chromium` (Debian's package; /usr/bin/chromium) and
Playwright from PyPI; Playwright drives that binary and downloads no browser of its own.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip("gradio")
pytest.importorskip("qdrant_client")
pytest.importorskip("playwright", reason="Playwright (pip install playwright) drives the browser")

from app_support import CHROMIUM, CHROMIUM_ARGS, open_app_backend, write_png  # noqa: E402
from media.audio import write_wav  # noqa: E402
from media.pdf import write_pdf  # noqa: E402

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM}: apt-get install chromium (Debian's package)"
)
TIMEOUT_MS = 20_000


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
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium  # Playwright gives every launch a fresh, empty user-data dir
        chromium.close()
        app[-1].stop()  # before Playwright stops: no child process of the app may hold its pipes then


@pytest.fixture()
def page(browser, app):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(app[0])
    yield page
    context.close()
    assert not failed, f"requests the page made that failed: {failed}"


def search_and_wait(page, expect_in_status: str) -> None:
    page.locator("#search-button").click()
    page.wait_for_function(
        "text => (document.querySelector('#search-status')?.innerText || '').includes(text)", arg=expect_in_status
    )
    page.locator(".omni-card").first.wait_for()


def test_text_query_shows_result_cards_with_previews(page, app, tmp_path):
    start = time.perf_counter()
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
    assert time.perf_counter() - start < 30


def test_audio_file_query_shows_result_cards(page, app, tmp_path):
    start = time.perf_counter()
    query = write_wav(tmp_path / "query-beep.wav", seconds=1.0, freq=440.0)
    page.locator("#query-file input[type=file]").set_input_files(str(query))
    page.locator("#query-file", has_text="query-beep.wav").wait_for()  # uploaded
    search_and_wait(page, "the file query-beep.wav")
    assert page.locator(".omni-card").count() == 7
    assert page.locator(".omni-card[data-modality=audio] audio").count() == 2
    page.screenshot(path=str(tmp_path / "app-audio-query.png"), full_page=True)
    print(f"\nscreenshot: {tmp_path / 'app-audio-query.png'}")
    assert time.perf_counter() - start < 30


def test_index_tab_adds_an_uploaded_file(page, app, tmp_path):
    url, library, backend, settings, _ = app
    start = time.perf_counter()
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
    assert time.perf_counter() - start < 30
