"""Index folders of files into a vector store and search them with the model that indexed them.

    from omnisdk.model import OmniModel
    from omnisdk.search import Indexer, Searcher
    from omnisdk.store import open_store

    model = OmniModel.load("ckpt")
    with open_store() as store:                       # Qdrant Edge in ./.omnisdk
        report = Indexer(model, store, "docs", model_dir="ckpt").index(["papers/", "clips/"])
        hits = Searcher(store, "docs", model).search("solar panels", limit=5, modalities=["document"])

- `Indexer(model, store, collection, *, model_dir=None, batch_size=32, error_log=None, progress=None,
  on_event=None).index(paths, *, prune=False) -> IndexReport`: see `omnisdk.search.indexer`.
- `Indexer.update(paths, roots, *, rules=None) -> IndexReport`: bring changed paths (present or gone)
  in line with the disk; `Watcher(indexer, roots, ...).run(stop_event)` keeps a collection in sync
  with folders (watch mode): see `omnisdk.search.watch`.
- `Searcher(store, collection, model=None, *, model_dir=None).search(query, *, limit=10,
  modalities=None) -> list[SearchHit]`: see `omnisdk.search.searcher`.
- `point_id(sha256, source, locator)`: the deterministic id of a chunk's point.

The command line: `omnisdk index`, `omnisdk search`, `omnisdk collections` (omnisdk.search.commands).
"""
from __future__ import annotations

from omnisdk.search.indexer import FileError, Indexer, IndexReport
from omnisdk.search.searcher import Searcher, SearchHit
from omnisdk.search.walk import point_id

__all__ = ["FileError", "IndexReport", "Indexer", "SearchHit", "Searcher", "point_id"]
