"""Text chunking on real files: windows within the token budget, structure kept, locators exact."""
from __future__ import annotations

import json

import pytest

from omnisdk.items import Item, Locator
from omnisdk.search.walk import locator_key


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(modalities=["text"])


@pytest.fixture(scope="module")
def plugin(model):
    return model.plugins["text"]


def long_markdown(sections: int = 4, paragraphs: int = 8) -> str:
    parts = ["# Field guide\n\nWhat this guide covers.\n"]
    for s in range(sections):
        parts.append(f"\n## Chapter {s}\n\n### Detail {s}\n\n")
        for k in range(paragraphs):
            parts.append(f"Note {s}.{k}: the heron waits by the reed bank.\n" + "It stays. " * (k % 3) + "\n\n")
        parts.append("```\nfenced code\n\n# not a heading inside a fence\n```\n")
    return "".join(parts)


def tokens(model, text: str) -> int:
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_markdown_chunks_fit_the_budget_keep_headings_and_cover_every_line(model, plugin, tmp_path):
    from omnisdk.plugins.text import TextPlugin

    path = tmp_path / "guide.md"
    path.write_text(long_markdown())
    lines = path.read_text().splitlines()
    assert plugin.window() == (model.content_budget("text"), int(0.15 * model.content_budget("text")))
    plugin = TextPlugin({"chunk_overlap": 0.4})  # the tiny tokenizer is per character: room for a paragraph
    plugin.bind(model.runtime)
    chunks = plugin.chunk(Item.of_file(path, "text"))
    size, overlap = plugin.window()
    assert len(chunks) > 10
    covered = set()
    for item in chunks:
        loc = item.locator
        assert item.modality == "text" and item.path == path
        assert tokens(model, item.text) <= size, loc
        # The passage is made of the located lines: every non-blank line of it is one of them.
        source = lines[loc.line0 - 1 : loc.line1]
        assert [t for t in item.text.splitlines() if t.strip()] == [t for t in source if t.strip()], loc
        covered.update(range(loc.line0, loc.line1 + 1))
        if "Note 2." in item.text:
            assert loc.heading == ("Field guide", "Chapter 2", "Detail 2")
    assert {i for i, t in enumerate(lines, 1) if t.strip() and not t.startswith("## ")} <= covered
    # A fence is one block: its "# ..." line is code, not a section of its own.
    assert not any("not a heading" in " ".join(c.locator.heading) for c in chunks)
    # Consecutive windows of one section share text (overlap); no window crosses a heading.
    same_section = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.locator.heading == b.locator.heading]
    assert any(b.locator.line0 <= a.locator.line1 for a, b in same_section)
    assert all(c.text.count("### ") <= 1 for c in chunks)
    assert len({locator_key(c.locator) for c in chunks}) == len(chunks)  # unique, so unique point ids


def test_long_txt_is_chunked_not_truncated_and_embeds(model, plugin, tmp_path):
    path = tmp_path / "log.txt"
    paragraphs = [f"Entry {i}: the tide came in at dawn." for i in range(400)]
    path.write_text("\n\n".join(paragraphs) + "\n")
    chunks = plugin.chunk(Item.of_file(path, "text"))
    assert chunks[0].locator.line0 == 1 and chunks[-1].locator.line1 == 799 and chunks[0].locator.heading is None
    assert "Entry 399:" in chunks[-1].text and all(tokens(model, c.text) <= plugin.window()[0] for c in chunks)
    vectors = model.encode(chunks[:5], role="document", show_progress=False)
    assert vectors.shape == (5, model.dim) and not (vectors[0] == vectors[1]).all()
    # A located item without its text is read back from the file.
    again = model.encode([Item.of_file(path, "text", chunks[2].locator)], show_progress=False, errors="raise")
    assert abs(float(again[0] @ vectors[2]) - 1.0) < 1e-5


def test_a_line_longer_than_a_window_is_cut_into_parts(model, plugin, tmp_path):
    path = tmp_path / "one-line.json"
    path.write_text(json.dumps({"k": ["value %d" % i for i in range(200)]}))
    chunks = plugin.chunk(Item.of_file(path, "text"))
    assert len(chunks) > 3 and {(c.locator.line0, c.locator.line1) for c in chunks} == {(1, 1)}
    assert [c.locator.part for c in chunks] == list(range(1, len(chunks) + 1))
    assert str(chunks[1].locator) == "line 1, part 2"
    assert "value 199" in chunks[-1].text and all(tokens(model, c.text) <= plugin.window()[0] for c in chunks)


def test_html_through_a_parser_with_headings_and_source_lines(plugin, tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<!doctype html>\n<html><head><title>Trip</title><style>p { color: red }</style>\n"
        "<script>var hidden = 'script text';</script></head>\n<body>\n"
        "<h1>Trip &amp; notes</h1>\n<p>Day one:\nwe walked.</p>\n"
        "<h2>Food</h2>\n<ul><li>bread</li><li>cheese</li></ul>\n"
        "<table><tr><th>item</th><th>cost</th></tr><tr><td>tea</td><td>2</td></tr></table>\n</body></html>\n"
    )
    chunks = plugin.chunk(Item.of_file(path, "text"))
    text = "\n".join(c.text for c in chunks)
    assert "script text" not in text and "color" not in text and "Trip & notes" in text
    assert "Day one: we walked." in text and "item | cost" in text and "tea | 2" in text
    food = next(c for c in chunks if "bread" in c.text)
    assert food.locator.heading == ("Trip & notes", "Food") and food.locator.line0 == 8


def test_csv_chunks_repeat_the_header_and_data_files_split_at_entries(plugin, tmp_path):
    table = tmp_path / "prices.csv"
    table.write_text("fruit,price\n" + "".join(f"fruit{i},{i}\n" for i in range(60)))
    chunks = plugin.chunk(Item.of_file(table, "text"))
    assert len(chunks) > 2 and all(c.text.startswith("fruit,price\n") for c in chunks)
    assert chunks[0].locator.line0 == 2 and chunks[-1].locator.line1 == 61
    config = tmp_path / "config.yaml"
    config.write_text("".join(f"service{i}:\n  port: {8000 + i}\n  host: example{i}\n" for i in range(20)))
    for c in plugin.chunk(Item.of_file(config, "text")):
        assert c.text.startswith("service") and (c.locator.line0 - 1) % 3 == 0  # whole entries


def test_code_splits_at_top_level_definitions(plugin, tmp_path):
    path = tmp_path / "tool.py"
    path.write_text("".join(f"# helper {i}\ndef f{i}(x):\n    y = x + {i}\n\n    return y\n\n\n" for i in range(12)))
    chunks = plugin.chunk(Item.of_file(path, "text"))
    assert len(chunks) > 1
    for c in chunks:
        assert c.text.startswith("# helper") and c.text.rstrip().endswith("return y")


def test_short_and_empty_files_and_refusals(model, plugin, tmp_path):
    short = tmp_path / "short.md"
    short.write_text("# Title\n\nOne line.\n")
    (chunk,) = plugin.chunk(Item.of_file(short, "text"))
    assert chunk.locator == Locator(line0=1, line1=3, heading=("Title",)) and chunk.text == "# Title\n\nOne line."
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert plugin.chunk(Item.of_file(empty, "text")) == [Item.of_file(empty, "text")]
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(ValueError, match="NUL"):
        plugin.chunk(Item.of_file(binary, "text"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        plugin.chunk(Item.of_file(latin, "text"))
    small = type(plugin)({"max_file_mb": 0.001})
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(ValueError, match="max_file_mb"):
        small.chunk(Item.of_file(big, "text"))
    _, failures = model.encode([Item.of_file(binary, "text"), "fine"], errors="ignore", return_errors=True, show_progress=False)
    assert [f.index for f in failures] == [0] and "NUL" in failures[0].cause


def test_locator_forms_of_existing_kinds_are_unchanged():
    # Point ids hash these strings: page and time locators must read as they always did.
    assert locator_key(Locator(page=2)) == '{"page":2}'
    assert locator_key(Locator(t0=0.0, t1=10.0)) == '{"t0":0.0,"t1":10.0}'
    assert locator_key(None) == "{}"
    text = Locator(line0=3, line1=9, heading=("A", "B"))
    assert locator_key(text) == '{"heading":["A","B"],"line0":3,"line1":9}'
    assert Locator.from_dict(json.loads(json.dumps(text.to_dict()))) == text
    assert str(text) == "lines 3-9 (A > B)"


def test_fallback_extensions_yield_to_a_plugin_that_lists_them(tmp_path):
    from omnisdk.detect import omnisdk_detect_modality
    from omnisdk.modality import ModalityPlugin
    from omnisdk.plugins.text import TextPlugin

    class Tables(ModalityPlugin):
        name = "tables"
        extensions = (".csv",)

    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    assert omnisdk_detect_modality(Item.of_file(path), {"text": TextPlugin}) == "text"
    assert omnisdk_detect_modality(Item.of_file(path), {"text": TextPlugin, "tables": Tables}) == "tables"


def test_reindex_after_an_edit_replaces_only_that_files_chunks_and_search_shows_the_passage(model, tmp_path):
    from omnisdk.search import Indexer, Searcher
    from omnisdk.store import open_store

    data = tmp_path / "notes"
    data.mkdir()
    (data / "guide.md").write_text(long_markdown(sections=3))
    (data / "diary.txt").write_text("\n\n".join(f"Day {i}: rain on the tin roof." for i in range(60)))

    def index() -> tuple[dict, dict]:
        report = Indexer(store, "notes", model, progress=False).index([data])
        points = {p.id: p.payload for p in store.scroll("notes")}
        return report, points

    with open_store(":memory:") as store:
        first, before = index()
        chunks = {name: len(model.plugins["text"].chunk(Item.of_file(data / name, "text"))) for name in ("guide.md", "diary.txt")}
        assert first.indexed == 2 and first.points_total == sum(chunks.values())
        diary_before = {i: p for i, p in before.items() if p["source"].endswith("diary.txt")}
        # Edit one file: a paragraph changed in the middle and a section added.
        text = (data / "guide.md").read_text().replace("Note 1.3:", "Note 1.3 (revised):") + "\n## Appendix\n\nA late addition.\n"
        (data / "guide.md").write_text(text)
        second, after = index()
        assert (second.indexed, second.unchanged) == (1, 1)
        assert {i: p for i, p in after.items() if p["source"].endswith("diary.txt")} == diary_before  # untouched
        guide = [p for p in after.values() if p["source"].endswith("guide.md")]
        new_chunks = model.plugins["text"].chunk(Item.of_file(data / "guide.md", "text"))
        assert len(guide) == len(new_chunks) == guide[0]["chunks"]  # the old version's points are gone
        assert {p["sha256"] for p in guide} == {guide[0]["sha256"]}
        assert any(p["locator"]["heading"] == ["Field guide", "Appendix"] for p in guide)
        # A search result carries the passage and its lines.
        hits = Searcher(store, "notes", model).search(new_chunks[5].text, limit=3)
        hit = next(h for h in hits if h.payload["locator"] == new_chunks[5].locator.to_dict())
        assert hit.text == new_chunks[5].text and hit.where == str(new_chunks[5].locator)
        assert hit.as_dict()["text"] == hit.text and hit.where.startswith("line")


def test_a_huge_line_is_chunked_in_bounded_memory(tmp_path, tiny_model_factory):
    """A 5 MB line in one tokenizer call held ~80 bytes per character (a 50 MB line: 3.9 GB); in slices it is flat."""
    import subprocess
    import sys

    tiny_model_factory(["text"]).save(tmp_path / "model")
    (tmp_path / "line.txt").write_text("a" * 5_000_000)
    script = ("import resource, sys; from pathlib import Path; from omnisdk.model import OmniModel; from omnisdk.items import Item\n"
              "m = OmniModel.load(sys.argv[1]); before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "chunks = m.plugins['text'].chunk(Item.of_file(Path(sys.argv[2])))\n"
              "print(len(chunks), sum(len(c.text) for c in chunks), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "line.txt")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    chunks, chars, grown_mb = map(int, done.stdout.split())
    assert chunks >= 50 and chars >= 5_000_000  # every character is in a chunk
    assert grown_mb < 150, f"chunking a 5 MB line grew the process by {grown_mb} MB"
