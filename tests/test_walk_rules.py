"""Walk controls on real folders: include/exclude, .gitignore/.omnisdkignore, --no-ignore, the size
cap, skips by cause in the summary, and the roots recorded in the collection's metadata."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnisdk.cli import main
from omnisdk.errors import OmniError
from omnisdk.search.rules import WalkRules
from omnisdk.search.walk import walk


def write_tree(root: Path) -> Path:
    files = {
        "notes/a.md": "# A\n\nalpha\n",
        "notes/b.txt": "beta",
        "notes/draft.md": "draft",
        "notes/keep.log": "kept log",
        "notes/noise.log": "noise",
        "build/out.txt": "generated",
        "src/deep/c.md": "# C\n\ngamma\n",
        "src/deep/secret.md": "secret",
        "big.txt": "x" * 300_000,
        "private/p.txt": "private",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / ".gitignore").write_text("# comment\n*.log\n!keep.log\nbuild/\n")
    (root / "src" / ".gitignore").write_text("secret.md\n")
    (root / ".omnisdkignore").write_text("/private/\n")
    return root


def names(result, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in result.files]


def test_ignore_files_with_git_semantics_and_no_ignore(tmp_path):
    root = write_tree(tmp_path / "tree")
    result = walk([root])
    assert names(result, root) == ["big.txt", "notes/a.md", "notes/b.txt", "notes/draft.md", "notes/keep.log", "src/deep/c.md"]
    # noise.log, src/deep/secret.md (nested .gitignore), build/ and private/ (folders, not entered)
    assert result.skipped["ignored"] == 4 and result.skipped["hidden"] == 3
    everything = walk([root], WalkRules(ignore_files=False))
    assert len(everything.files) == 10 and "ignored" not in everything.skipped
    # A root named explicitly is indexed even when an ignore file names it.
    assert walk([root / "notes" / "noise.log"]).files == [root / "notes" / "noise.log"]


def test_include_exclude_and_size_cap(tmp_path):
    root = write_tree(tmp_path / "tree")
    result = walk([root], WalkRules(include=["*.md"], exclude=["draft.md", "src/"], max_file_mb=0.1))
    assert names(result, root) == ["notes/a.md"]
    assert result.skipped["excluded"] == 2 and result.skipped["not included"] == 3  # big.txt is not *.md
    capped = walk([root], WalkRules(max_file_mb=0.1))
    assert capped.skipped["too large"] == 1 and capped.too_large == [(root / "big.txt", 300_000)]
    anchored = walk([root], WalkRules(include=["/notes/*.md"]))
    assert names(anchored, root) == ["notes/a.md", "notes/draft.md"]
    with pytest.raises(OmniError, match="--include"):
        walk([root], WalkRules(include=["!"]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory) -> Path:
    directory = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model_factory(modalities=["text"]).save(directory)
    return directory


def test_cli_rules_summary_and_roots_in_metadata(model_dir, tmp_path, capsys):
    from omnisdk.apps.store_backend import _source_dirs
    from omnisdk.store import open_store

    root = write_tree(tmp_path / "tree")
    store = tmp_path / "store"
    argv = ["index", str(root), "--model", str(model_dir), "--collection", "c", "--store", str(store), "--no-progress",
            "--exclude", "notes/draft.md", "--max-file-mb", "0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for row in ("| skipped (too large) | 1 |", "| skipped (ignored) | 4 |", "| skipped (excluded) | 1 |", "| skipped (hidden) | 3 |"):
        assert row in out, out
    assert f"| {root / 'big.txt'} | 0.3 |" in out
    assert main(argv + ["--json", "--include", "*.md"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"]["not included"] == 3 and report["too_large"] == []  # big.txt, b.txt, keep.log
    with open_store(str(store)) as handle:
        meta = handle.get_meta("c")
        assert list(meta.roots) == [str(root)]
        assert meta.roots[str(root)]["rules"] == {"include": ["*.md"], "exclude": ["notes/draft.md"], "ignore_files": True,
                                                   "max_file_mb": 0.1}
        # The app's roots come from the metadata: the root itself, though every file sits in a subfolder.
        assert _source_dirs(handle, "c") == [root]
    # A root that is gone is forgotten by --prune, with its points.
    gone = tmp_path / "gone"
    (gone / "x").mkdir(parents=True)
    (gone / "x" / "n.txt").write_text("note")
    base = ["--model", str(model_dir), "--collection", "c", "--store", str(store), "--no-progress", "--json"]
    assert main(["index", str(gone), *base]) == 0
    capsys.readouterr()
    (gone / "x" / "n.txt").unlink()
    (gone / "x").rmdir()
    gone.rmdir()
    assert main(["index", str(gone), *base, "--prune"]) == 0
    assert json.loads(capsys.readouterr().out)["pruned_files"] == 1
    with open_store(str(store)) as handle:
        assert list(handle.get_meta("c").roots) == [str(root)]


def test_update_meta_on_the_client_store(tmp_path):
    from omnisdk.store import open_store
    from omnisdk.store.base import ensure_collection

    with open_store(":memory:") as store:
        meta = ensure_collection(store, "m", dim=4, fingerprint="f" * 64)
        store.update_meta("m", meta.model_copy(update={"roots": {"/data": {"rules": {}}}}))
        store._metas.clear()  # read back from Qdrant's collection metadata, not the cache
        assert store.get_meta("m").roots == {"/data": {"rules": {}}} and store.get_meta("m").dim == 4
