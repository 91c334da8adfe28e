"""`omnisdk index`, `omnisdk search`, `omnisdk collections` end to end, and the Searcher API."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from media.pdf import write_pdf
from omnisdk.cli import EXIT_ERROR, EXIT_ITEMS_FAILED, main
from omnisdk.items import Item, Locator
from omnisdk.search import Searcher
from omnisdk.store import FingerprintMismatchError, StoreLockedError, open_store


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_factory):
    """A saved tiny model and a folder of images, a PDF, a text file and a broken PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("search")
    tiny_model_factory(modalities=["text", "image", "document"]).save(root / "model")
    data = root / "data"
    data.mkdir()
    for name, rgb in {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}.items():
        Image.new("RGB", (24, 24), rgb).save(data / f"{name}.png")
    write_pdf(data / "report.pdf")
    (data / "notes.txt").write_text("a note about solar panels")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def indexed(setup, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = cli(capsys, "index", setup / "data", "--model", setup / "model", "--collection", "c", "--store", store, "--no-progress")
    assert code == EXIT_ITEMS_FAILED, err  # the broken PNG: the rest is indexed
    assert "broken.png" in err and "broken.png" in out and "| indexed (new or changed) | 5 |" in out
    return store


def test_index_json_summary_and_exit_codes(setup, indexed, capsys):
    code, out, _ = cli(capsys, "index", setup / "data", "--collection", "c", "--store", indexed, "--json")  # model recorded
    report = json.loads(out)
    assert code == EXIT_ITEMS_FAILED and report["unchanged"] == 5 and report["failed"] == 1
    assert report["points_total"] == 3 + 3 + 1 and report["errors"][0]["path"].endswith("broken.png")
    clean = setup / "clean"
    clean.mkdir(exist_ok=True)
    (clean / "a.txt").write_text("hello")
    code, out, _ = cli(capsys, "index", clean, "--collection", "c", "--store", indexed, "--json")
    assert code == 0 and json.loads(out)["indexed"] == 1


def test_search_text_prints_ranked_hits(setup, indexed, capsys):
    code, out, _ = cli(capsys, "search", "solar panels", "--collection", "c", "--store", indexed, "--limit", "4")
    assert code == 0
    table, _, passages = out.strip().partition("\n\n")
    lines = table.splitlines()
    # several modalities: ranked by the calibrated score (issue 16), the cosine beside it
    assert lines[0] == "| rank | calibrated | cosine | modality | source | locator |" and len(lines) == 2 + 4
    assert lines[2].startswith("| 1 | ")
    # The text hit shows its lines in the table and its passage below it.
    text_row = next(line for line in lines if "| text |" in line)
    assert text_row.endswith("| line 1 |")
    assert f"{text_row.split()[1]}. notes.txt, line 1:\n    a note about solar panels" in passages


def test_search_json_with_modality_filter_and_locators(setup, indexed, capsys):
    code, out, _ = cli(capsys, "search", "solar panels", "--collection", "c", "--store", indexed, "--modality", "document", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 3 and {h["modality"] for h in hits} == {"document"}
    assert sorted(h["locator"]["page"] for h in hits) == [1, 2, 3] and {h["where"] for h in hits} == {"page 1", "page 2", "page 3"}
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    code, out, _ = cli(capsys, "search", "x", "--collection", "c", "--store", indexed, "--modality", "image,text", "--json")
    assert {h["modality"] for h in json.loads(out)["hits"]} == {"image", "text"}


def test_search_with_files(setup, indexed, capsys):
    code, out, _ = cli(capsys, "search", "--image", setup / "data" / "red.png", "--collection", "c", "--store", indexed,
                       "--modality", "image", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and hits[0]["source"].endswith("red.png")
    code, out, _ = cli(capsys, "search", "--document", setup / "data" / "report.pdf", "--collection", "c", "--store", indexed, "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == 7


def test_search_refusals(setup, indexed, capsys, tiny_model_factory, tmp_path):
    code, _, err = cli(capsys, "search", "--collection", "c", "--store", indexed)
    assert code == EXIT_ERROR and "give one query" in err
    code, _, err = cli(capsys, "search", "x", "--image", setup / "data" / "red.png", "--collection", "c", "--store", indexed)
    assert code == EXIT_ERROR and "give one query" in err
    code, _, err = cli(capsys, "search", "x", "--collection", "nope", "--store", indexed)
    assert code == EXIT_ERROR and "no collection 'nope'" in err and "collections: c" in err
    code, _, err = cli(capsys, "search", "x", "--collection", "c", "--store", indexed, "--modality", "smell")
    assert code == EXIT_ERROR and "unknown modality 'smell'" in err
    code, _, err = cli(capsys, "search", "--image", setup / "data" / "broken.png", "--collection", "c", "--store", indexed)
    assert code == EXIT_ERROR and "cannot encode the query" in err
    other = tmp_path / "other"
    tiny_model_factory(modalities=["text"], seed=3).save(other)
    from omnisdk.checkpoint import read_manifest

    ours, theirs = read_manifest(setup / "model").fingerprint, read_manifest(other).fingerprint
    for command in (["search", "x"], ["index", setup / "data"]):
        code, _, err = cli(capsys, *command, "--model", other, "--collection", "c", "--store", indexed)
        assert code == EXIT_ERROR and ours[:12] in err and theirs[:12] in err, err
    code, _, err = cli(capsys, "index", setup / "data", "--collection", "new", "--store", indexed)
    assert code == EXIT_ERROR and "--model" in err


def test_collections_lists_points_and_model(setup, indexed, capsys):
    code, out, _ = cli(capsys, "collections", "--store", indexed, "--json")
    listing = json.loads(out)
    assert code == 0 and [c["collection"] for c in listing["collections"]] == ["c"]
    assert listing["collections"][0]["points"] == 7 and listing["collections"][0]["model_path"] == str((setup / "model").resolve())
    code, out, _ = cli(capsys, "collections", "--store", setup / "empty-store")
    assert code == 0 and "no collections" in out


def test_a_store_open_elsewhere_is_a_clear_error(setup, indexed, capsys):
    holder = open_store(str(indexed))
    holder.count("c")  # holds the collection open, as a running app would
    code, _, err = cli(capsys, "search", "x", "--collection", "c", "--store", indexed)
    holder.close()
    assert code == EXIT_ERROR and "is open in another process" in err


def test_searcher_api(setup, indexed):
    from omnisdk.model import OmniModel

    model = OmniModel.load(setup / "model")
    with open_store(str(indexed)) as store:
        searcher = Searcher(store, "c", model)
        by_path = searcher.search(setup / "data" / "green.png", limit=3, modalities="image")
        assert [h.rank for h in by_path] == [1, 2, 3] and by_path[0].source.endswith("green.png")
        page = searcher.search(Item.of_file(setup / "data" / "report.pdf", "document", Locator(page=2)), limit=1, modalities=["document"])
        assert page[0].locator == Locator(page=2) and page[0].where == "page 2"
        text = searcher.search("a note about solar panels", limit=1)
        assert text[0].modality == "text" and text[0].as_dict()["source"].endswith("notes.txt")
        vector = searcher.encode_query("a note about solar panels")
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
        assert searcher.search_vector(vector, limit=1)[0].id == text[0].id
        assert Searcher(store, "c").model.fingerprint == model.fingerprint  # loaded from the recorded path
        with pytest.raises(FingerprintMismatchError):
            from omnisdk.presets import build_base

            Searcher(store, "c", build_base("tiny", modalities=["text"], seed=5))
    with pytest.raises(StoreLockedError):
        a, b = open_store(str(indexed)), open_store(str(indexed))
        try:
            Searcher(a, "c", model).search("x")
            Searcher(b, "c", model).search("x")
        finally:
            a.close()
            b.close()
