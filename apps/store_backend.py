"""The app's backend for real use: one collection of an omnisdk store, through `Indexer` and `Searcher`.

One store handle, one model and one Searcher live as long as the app: Qdrant Edge allows one open
handle per collection, so while the app runs, files are added through its Index tab (or use a
Qdrant server, which any number of processes share).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from omnisdk.apps.backend import Hit, IndexSummary, ProgressCallback
from omnisdk.errors import OmniError
from omnisdk.items import Item

log = logging.getLogger(__name__)


class StoreBackend:
    """`SearchBackend` over `omnisdk.search.Searcher` and `Indexer` for one collection."""

    def __init__(self, store: Any, collection: str, model: Any, *, model_dir: str | Path | None = None,
                 calibrate: bool = True):
        from omnisdk.search import Indexer, Searcher

        self.store = store
        self.collection = collection
        self.model = model
        self.model_dir = model_dir
        if not store.collection_exists(collection):
            # A new collection: the Indexer creates it and records the model (and refuses nothing yet).
            Indexer(store, collection, model, model_dir=model_dir, progress=False)
        self.searcher = Searcher(store, collection, model, calibrate=calibrate)
        self._roots = _source_dirs(store, collection)
        local = store.local_dir(collection)
        self._local = local if local is not None and local.is_dir() else None  # watched: see _check_store

    @classmethod
    def open(
        cls, collection: str, store: str | Path | None = None, model_dir: str | Path | None = None, *,
        precision: str = "fp32", calibrate: bool = True, device: Any = None,
    ) -> StoreBackend:
        """Open the store and the collection's model (the recorded one unless `model_dir` is given) on `device`
        (default: CUDA if available) at `precision`."""
        from omnisdk.checkpoint import read_manifest
        from omnisdk.model import OmniModel
        from omnisdk.store import check_fingerprint, open_store

        handle = open_store(store)
        try:
            if handle.collection_exists(collection):
                meta = handle.get_meta(collection)
                model_dir = model_dir or meta.model_path
                if model_dir is None:
                    raise OmniError(f"collection '{collection}' does not record its model: pass --model DIR")
                # Refuse another model from its manifest, before loading its weights.
                check_fingerprint(meta, read_manifest(Path(model_dir)).fingerprint, collection, "search")
            elif model_dir is None:
                raise OmniError(
                    f"no collection '{collection}' in {handle.location}: index files into it first "
                    f"(omnisdk index PATH --collection {collection} --model DIR), or pass --model DIR to start it empty"
                )
            model = OmniModel.load(model_dir, device=device, precision=precision)
            return cls(handle, collection, model, model_dir=model_dir, calibrate=calibrate)
        except BaseException:
            handle.close()
            raise

    def close(self) -> None:
        try:
            self.store.close()
        except OmniError as exc:
            if self._local is None or self._local.is_dir():
                raise
            # Its directory was removed under the app (already reported by each search): the final flush has
            # nowhere to go and nothing there to keep, so closing must not fail the app's shutdown.
            log.warning("closing the store: its directory %s was removed (%s)", self._local, exc)

    def modalities(self) -> list[str]:
        return list(self.model.plugins)

    def indexed_roots(self) -> list[Path]:
        return list(self._roots)

    def _check_store(self) -> None:
        """An embedded store whose directory is removed while the app runs still answers from its memory
        maps, with points that exist nowhere any more, and writes would be lost: say so instead."""
        if self._local is not None and not self._local.is_dir():
            raise OmniError(f"the collection's directory {self._local} was removed while the app was running: "
                            f"index the files again (omnisdk index PATH --collection {self.collection}) and restart the app")

    def search(self, query: Item, limit: int, modalities: Sequence[str] | None) -> list[Hit]:
        self._check_store()
        hits = self.searcher.search(query, limit=limit, modalities=list(modalities) if modalities else None)
        return [
            Hit(rank=h.rank, score=float(h.score), modality=h.modality, source=Path(h.source) if h.source else None,
                locator=h.locator, text=h.payload.get("text"))
            for h in hits
        ]

    def index_files(self, paths: Sequence[Path], progress_cb: ProgressCallback | None = None) -> IndexSummary:
        from omnisdk.search import Indexer

        self._check_store()

        def chunks_done(done: int, total: int) -> None:
            if progress_cb is not None:
                progress_cb(done, total, f"{done} of {total} chunks embedded")

        indexer = Indexer(self.store, self.collection, self.model, model_dir=self.model_dir, progress=chunks_done)
        report = indexer.index([Path(p) for p in paths])
        self._roots = _source_dirs(self.store, self.collection)
        return IndexSummary(
            files=report.indexed + report.copied,
            chunks=report.chunks_embedded,
            skipped=report.unchanged + sum(report.skipped.values()),
            failed=[(Path(e.path).name, e.cause) for e in report.errors],
            seconds=report.seconds,
        )


def _source_dirs(store: Any, collection: str) -> list[Path]:
    """The smallest set of folders holding every indexed file: the folders the app may serve from.

    Read from the roots the collection's metadata records (constant time); a collection indexed
    before roots were recorded is scrolled once instead.
    """
    recorded = store.get_meta(collection).roots
    if recorded:
        # A root that is gone serves nothing (its parent would serve more than was indexed).
        folders = {Path(r) if Path(r).is_dir() else Path(r).parent for r in recorded if Path(r).exists()}
    else:
        folders = {Path(p.payload["source"]).parent for p in store.scroll(collection) if p.payload.get("source")}
    kept: list[Path] = []
    for folder in sorted(folders, key=lambda f: len(f.parts)):
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return kept
