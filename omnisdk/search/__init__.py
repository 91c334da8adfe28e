"""Index folders of files into a vector store and search them with the model that indexed them.

    import omnisdk

    model = omnisdk.OmniModel.load("ckpt")
    with omnisdk.open_store() as store:               # Qdrant Edge in ./.omnisdk
        report = omnisdk.Indexer(store, "docs", model).index(["papers/", "clips/"])
        hits = omnisdk.Searcher(store, "docs", model).search("solar panels", limit=5, modalities=["document"])

Both take the store, then the collection, then the model (as qdrant-client's calls take the collection first).

- `Indexer(store, collection, model, *, model_dir=model.directory, batch_size=32, error_log=None, progress=None,
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
