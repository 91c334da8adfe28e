"""The document (PDF) plugin on real PDFs written by PyMuPDF: pages, chunks, damaged files, isolation."""
from __future__ import annotations

import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

pymupdf = pytest.importorskip("pymupdf")

from media.pdf import (  # noqa: E402
    write_empty_pdf,
    write_encrypted_pdf,
    write_not_pdf,
    write_pdf,
    write_truncated_pdf,
)
from omnisdk.items import Item, Locator  # noqa: E402
from omnisdk.plugins.document import (  # noqa: E402
    DocumentAdapter,
    DocumentConfig,
    DocumentError,
    DocumentPlugin,
    IsolatedRunner,
    count_pages,
    read_page,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork isolation and RLIMIT_AS are Linux-only")


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pdfs")
    good = write_pdf(root / "report.pdf")
    return {
        "good": good,
        "encrypted": write_encrypted_pdf(root / "locked.pdf"),
        "half": write_truncated_pdf(root / "half.pdf", good, 0.5),
        "head": write_truncated_pdf(root / "head.pdf", good, 100),
        "empty": write_empty_pdf(root / "empty.pdf"),
        "not_pdf": write_not_pdf(root / "picture.pdf"),
        "missing": root / "missing.pdf",
    }


#: What each bad file must report, as a substring of its cause.
BAD_CAUSES = {
    "encrypted": "encrypted PDF: a password is required",
    "half": "damaged PDF (truncated or corrupt",
    "head": "not a readable PDF",
    "empty": "empty file (0 bytes)",
    "not_pdf": "not a PDF: no %PDF- header",
    "missing": "file not found",
}


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(modalities=["image", "document"])


def pages_of(path, n=3):
    return [Item.of_file(path, locator=Locator(page=p)) for p in range(1, n + 1)]


def assert_unit_rows(vectors):
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- reading pages ---------------------------------------------------------------------------------------
def test_each_page_gives_its_text_layer(pdfs):
    config = DocumentConfig(render_size=64)
    texts = [read_page(str(pdfs["good"]), p, config).text for p in (1, 2, 3)]
    assert texts[0].startswith("Solar Energy Report Photovoltaic panels convert sunlight")
    assert "\n" not in texts[0] and "  " not in texts[0]  # layout whitespace collapsed
    assert texts[1].startswith("Harbour Logistics Container cranes")
    assert texts[2] == ""  # drawn shapes only, like a scan


def test_render_fits_the_longer_side_and_keeps_the_aspect(pdfs):
    page = read_page(str(pdfs["good"]), 2, DocumentConfig(render_size=100))
    assert (page.width, page.height) == (round(100 * 595 / 842), 100)
    pixels = np.frombuffer(page.samples, dtype=np.uint8).reshape(page.height, page.width, 3)
    reddish = (pixels[..., 0] > 180) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert reddish.sum() > 20, "the embedded PNG should show in the render"
    blank = read_page(str(pdfs["good"]), 3, DocumentConfig(render_size=100))
    assert np.frombuffer(blank.samples, dtype=np.uint8).std() > 10, "a page without text still renders its drawing"


def test_whole_document_joins_all_text_and_shows_the_first_page(pdfs):
    config = DocumentConfig(render_size=64, max_text_tokens=200)
    whole = read_page(str(pdfs["good"]), None, config)
    first = read_page(str(pdfs["good"]), 1, config)
    assert whole.text.startswith("Solar Energy Report") and "Harbour Logistics" in whole.text
    assert whole.samples == first.samples
    short = read_page(str(pdfs["good"]), None, DocumentConfig(max_text_tokens=4))
    assert len(short.text) <= 4 * 8  # only as much text as the token budget can use is gathered


def test_prepare_gives_pixels_for_the_tower_and_texts(model, pdfs):
    prepared = model.prepare("document", pages_of(pdfs["good"]))
    size = model.plugins["image"].config.image_size
    assert prepared.ok == [0, 1, 2] and prepared.errors == {}
    assert prepared.batch["pixels"].shape == (3, 3, size, size)
    assert prepared.batch["texts"][0].startswith("Solar Energy") and prepared.batch["texts"][2] == ""


# -- chunking ----------------------------------------------------------------------------------------------
def test_chunk_gives_one_located_item_per_page(model, pdfs):
    plugin = model.plugins["document"]
    chunks = plugin.chunk(Item.of_file(pdfs["good"]))
    assert [c.locator for c in chunks] == [Locator(page=1), Locator(page=2), Locator(page=3)]
    assert all(c.path == pdfs["good"] for c in chunks)
    located = Item.of_file(pdfs["good"], locator=Locator(page=2))
    assert plugin.chunk(located) == [located]


@pytest.mark.parametrize("kind", sorted(BAD_CAUSES))
def test_chunk_of_an_unreadable_pdf_raises_naming_the_file(model, pdfs, kind):
    with pytest.raises(DocumentError) as info:
        model.plugins["document"].chunk(Item.of_file(pdfs[kind]))
    assert str(pdfs[kind]) in str(info.value)
    assert BAD_CAUSES[kind] in info.value.cause


def test_max_pages_refuses_longer_pdfs(pdfs):
    plugin = DocumentPlugin({"max_pages": 2})
    with pytest.raises(DocumentError, match="has 3 pages, over the limit of 2"):
        plugin.chunk(Item.of_file(pdfs["good"]))


# -- encoding ----------------------------------------------------------------------------------------------
def test_mixed_batch_embeds_good_pages_and_reports_each_bad_one(model, pdfs):
    good = pages_of(pdfs["good"])
    bad = {kind: Item.of_file(pdfs[kind], locator=Locator(page=1)) for kind in BAD_CAUSES}
    out_of_range = Item.of_file(pdfs["good"], locator=Locator(page=5))
    items = [good[0], *bad.values(), good[1], out_of_range, good[2]]
    vectors, errors = model.encode(items, return_errors=True, errors="ignore")
    assert_unit_rows(vectors[[0, 7, 9]])
    assert np.isnan(vectors[1:7]).all() and np.isnan(vectors[8]).all()
    causes = {e.index: e.cause for e in errors}
    assert sorted(causes) == [1, 2, 3, 4, 5, 6, 8]
    for index, kind in enumerate(BAD_CAUSES, start=1):
        assert BAD_CAUSES[kind] in causes[index], (kind, causes[index])
    assert causes[8] == "page 5 of a 3-page PDF"
    assert "locked.pdf [page 1]" in str(next(e for e in errors if e.index == 1))


@pytest.mark.parametrize("page, cause", [(5, "page 5 of a 3-page PDF"), (0, "page 0 of a 3-page PDF (pages count from 1)")])
def test_page_out_of_range(model, pdfs, page, cause):
    prepared = model.prepare("document", [Item.of_file(pdfs["good"], locator=Locator(page=page))])
    assert prepared.ok == [] and prepared.batch is None
    assert prepared.errors == {0: cause}


def test_a_time_span_is_no_page(model, pdfs):
    prepared = model.prepare("document", [Item.of_file(pdfs["good"], locator=Locator(t0=0.0, t1=1.0))])
    assert "takes a page locator" in prepared.errors[0]


def test_whole_document_item_and_pdf_bytes(model, pdfs):
    data = pdfs["good"].read_bytes()
    items = [Item.of_file(pdfs["good"]), Item(modality="document", data=data, locator=Locator(page=2))]
    vectors = model.encode(items, errors="raise")
    assert_unit_rows(vectors)
    np.testing.assert_allclose(vectors[1], model.encode([pages_of(pdfs["good"])[1]])[0], atol=1e-6)


def test_different_pages_give_different_embeddings(model, pdfs):
    vectors = model.encode(pages_of(pdfs["good"]), errors="raise")
    assert_unit_rows(vectors)
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(3, dtype=bool)] < 0.9999).all()


def test_a_page_without_text_is_embedded_from_its_image_alone(model, pdfs):
    prepared = model.prepare("document", pages_of(pdfs["good"])[2:])
    tokens = model.adapters["document"](prepared.batch, model.runtime)
    image_tokens = model.adapters["image"].encode_pixels(prepared.batch["pixels"])
    assert tokens.embeds.shape == image_tokens.shape and tokens.mask.all()
    assert_unit_rows(model.encode(pages_of(pdfs["good"])[2:], errors="raise"))


def test_text_never_overflows_the_backbone_sequence(model, pdfs, caplog):
    prepared = model.prepare("document", pages_of(pdfs["good"])[:1])
    greedy = DocumentAdapter(max_text_tokens=10_000)
    with caplog.at_level(logging.WARNING, logger="omnisdk.plugins.document"):
        tokens = greedy(prepared.batch, model.runtime)
    assert tokens.embeds.size(1) == model.runtime.content_budget("document")
    assert "keep 93 text tokens, not max_text_tokens=10000" in caplog.text
    framed = model._frame(tokens, "document", "query")  # the longer instruction
    assert framed.embeds.size(1) == model.runtime.max_length


def test_token_grid_pools_the_page_harder_than_an_image(model, pdfs):
    prepared = model.prepare("document", pages_of(pdfs["good"])[2:])  # no text: image tokens only
    coarse = DocumentAdapter(max_text_tokens=64, token_grid=1)
    assert coarse(prepared.batch, model.runtime).embeds.shape[1] == 2  # class token + one pooled cell
    assert model.adapters["document"](prepared.batch, model.runtime).embeds.shape[1] == 17  # 4x4 + class


def test_save_then_load_gives_identical_embeddings(model, pdfs, tmp_path):
    from omnisdk.model import OmniModel

    items = [*pages_of(pdfs["good"]), Item.of_file(pdfs["good"])]
    before = model.encode(items, errors="raise", role="document")
    model.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    assert loaded.plugins["document"].config == model.plugins["document"].config
    np.testing.assert_array_equal(loaded.encode(items, errors="raise", role="document"), before)


def test_allow_repaired_reads_what_mupdf_recovers(model, pdfs, caplog):
    plugin = DocumentPlugin({"render_size": 32, "max_text_tokens": 64, "allow_repaired": True})
    with caplog.at_level(logging.WARNING, logger="omnisdk.plugins.document"):
        prepared = plugin.preprocess([Item.of_file(pdfs["half"], locator=Locator(page=1))], model.runtime)
    assert prepared.ok == [0]
    assert "damaged PDF read anyway" in caplog.text and "half.pdf" in caplog.text


def test_in_process_reading_reports_the_same_causes(model, pdfs):
    plugin = DocumentPlugin({"render_size": 32, "max_text_tokens": 64, "isolate": False})
    items = [Item.of_file(pdfs[kind]) for kind in BAD_CAUSES] + [Item.of_file(pdfs["good"])]
    prepared = plugin.preprocess(items, model.runtime)
    assert prepared.ok == [len(BAD_CAUSES)]
    for index, kind in enumerate(BAD_CAUSES):
        assert BAD_CAUSES[kind] in prepared.errors[index]


def test_config_guards_the_render_size():
    with pytest.raises(ValueError):
        DocumentConfig(render_size=100_000)


# -- isolation ---------------------------------------------------------------------------------------------
def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang() -> None:
    time.sleep(60)


def _allocate_gigabytes() -> int:
    return len(bytearray(3 * 2**30))


@linux_only
def test_a_crash_costs_one_job_and_the_runner_goes_on(pdfs):
    config = DocumentConfig()
    with IsolatedRunner(timeout_s=20) as runner:
        assert runner.run(count_pages, str(pdfs["good"]), config) == 3
        with pytest.raises(DocumentError, match="MuPDF crashed \\(killed by SIGSEGV\\)"):
            runner.run(_segfault)
        assert runner.run(count_pages, str(pdfs["good"]), config) == 3
        os.kill(runner._proc.pid, signal.SIGKILL)  # like the OOM killer, between two jobs
        runner._proc.join()
        assert runner.run(count_pages, str(pdfs["good"]), config) == 3


@linux_only
def test_a_hang_is_stopped_after_the_timeout():
    with IsolatedRunner(timeout_s=0.5) as runner:
        start = time.monotonic()
        with pytest.raises(DocumentError, match="took over 0.5 s and was stopped"):
            runner.run(_hang)
        assert time.monotonic() - start < 5


@linux_only
def test_the_child_memory_is_capped():
    with IsolatedRunner(max_memory_mb=256) as runner:
        with pytest.raises(DocumentError, match="ran out of memory"):
            runner.run(_allocate_gigabytes)


def _count_in_a_daemon(conn, path) -> None:
    try:
        with IsolatedRunner() as runner:
            conn.send(runner.run(count_pages, path, DocumentConfig()))
    except Exception as exc:  # the parent asserts on what came back
        conn.send(repr(exc))


@linux_only
def test_a_daemonic_process_reads_in_process(pdfs):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_count_in_a_daemon, args=(send, str(pdfs["good"])), daemon=True)
    worker.start()
    assert receive.poll(20) and receive.recv() == 3  # a daemon may not fork: it must not try
    worker.join(5)
