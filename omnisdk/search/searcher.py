"""Searcher: a query (text, a file, an Item) -> ranked hits from one collection, with the collection's model.

    from omnisdk.search import Searcher
    from omnisdk.store import open_store

    store = open_store()                                  # keep it open while the app runs
    searcher = Searcher(store, "photos")                  # loads the model the collection was indexed with
    for hit in searcher.search("a red bicycle", limit=5, modalities=["image", "video"]):
        print(hit.rank, f"{hit.score:.3f}", hit.modality, hit.source, hit.where)

`query` is a `str` (text), a `Path` (a file: image, audio, video, PDF; its modality is detected),
or an `Item` (e.g. `Item.of_file(p, "document", Locator(page=2))`, or `Item(data=pil_image)`). It is
encoded with role "query", so the plugins' query instructions apply. `search_vector` takes a vector.

The model must have the collection's fingerprint: pass one (`model=`, loaded in full, not with a
subset of `modalities`, whose fingerprint would differ) or a directory (`model_dir=`), or neither
and the directory recorded at indexing time is used. Another model is refused before its weights
are loaded (FingerprintMismatchError, naming both fingerprints).

`exact`: None (default) searches exactly while the collection holds up to EXACT_SEARCH_UP_TO points
and through Qdrant's HNSW graph above; True or False forces one way. Measured on 10k random 384-d
unit vectors (bench/search.py): HNSW with default settings found 60% of the true top 10 in 0.4 ms,
exact search all of it in 0.7 ms. Real embeddings are kinder to HNSW than random vectors, but at
these sizes exactness costs little.

`calibrate` (default True): results of several modalities are ranked by the query-time modality
correction (omnisdk.search.calibration), from the statistics the indexer stored with the collection:
one query per modality, each modality's scores standardised by that modality's own score
distribution for this query, then merged; exact, because the correction keeps each modality's order.
The merge first uses one wider raw query, and asks a modality for its own top only when that
query cannot rule out its unseen items. A collection indexed with a model that carries fitted
"platt" parameters (omnisdk.search.platt) is ranked by them, per the query's modality
(`search_vector(..., query_modality=)`, default text; `search` knows it from the query).
AGFF collections (indexed with an AGFF model, omnisdk/aspects.py): the query's K aspect vectors
prefetch `max(PREFETCH x limit, PREFETCH_MIN)` candidates by the stored multivector's MaxSim, which
are then rescored exactly with the model's own aggregation (omnisdk/aggregation.py), and
`SearchHit.score` is that aggregated similarity; a plain vector given to `search_vector` searches
the stored pooled vector. The modality calibration does not apply to AGFF scores (not yet built).
Otherwise `SearchHit.score` stays the cosine similarity; `SearchHit.calibrated` is the score the hits are
ranked by (None when uncalibrated). One modality (or `calibrate=False`, or a collection without
statistics) is the plain nearest-neighbour search.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from omnisdk.errors import OmniError
from omnisdk.items import Item, Locator, as_item
from omnisdk.search.calibration import Calibration, calibrated_top, stored_calibration
from omnisdk.store.base import ASPECTS, Hit, Store, StoreError, check_fingerprint, check_kind, modality_list

if TYPE_CHECKING:
    from omnisdk.model import OmniModel

#: Up to this many points, search scores every point (see the module docstring).
EXACT_SEARCH_UP_TO = 100_000
#: A calibrated search first asks for this many x limit x modalities raw hits (see calibrated_top).
CALIBRATION_POOL = 2
#: The payload keys a calibrated search's wide queries read: what the merge needs.
MERGE_FIELDS = ("modality",)
#: AGFF search rescores the best max(PREFETCH x limit, PREFETCH_MIN) candidates by MaxSim.
PREFETCH, PREFETCH_MIN = 4, 50


@dataclass
class SearchHit:
    """One result: its rank (from 1), score (cosine similarity), and where the matching chunk is."""

    rank: int
    score: float
    modality: str
    source: str
    locator: Locator | None
    id: str
    #: the locator in words ("page 2", "10.00-20.00s"), empty for a whole file.
    where: str = ""
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the modality-calibrated score the results are ranked by; None when search was not calibrated.
    calibrated: float | None = None

    @property
    def text(self) -> str | None:
        """The matching passage of a text chunk (stored at indexing); None for other chunks."""
        return self.payload.get("text")

    def as_dict(self) -> dict[str, Any]:
        out = {
            "rank": self.rank, "score": round(self.score, 6), "modality": self.modality, "source": self.source,
            "locator": self.locator.to_dict() if self.locator else None, "where": self.where, "id": self.id,
        }
        if self.text is not None:
            out["text"] = self.text
        if self.calibrated is not None:
            out["calibrated"] = round(self.calibrated, 6)
        return out


class Searcher:
    """Search one collection of a store with the model that indexed it; see the module docstring.

    Args:
        store: the store holding the collection (`omnisdk.open_store(...)`).
        collection: the collection's name.
        model: the OmniModel that indexed it; None loads the one the collection records (or `model_dir`).
        model_dir: a checkpoint directory to load instead of the recorded one.
        device: where a loaded model runs (default: CUDA if available).
        exact: exact (brute-force) search instead of the index; None lets the store decide.
        precision: a loaded model's precision ("fp32", "bf16", ...).
        calibrate: rank mixed-modality results with the per-modality score calibration.

    Raises:
        StoreError: no such collection.
        OmniError: no model given and none recorded (or its directory is gone).
        FingerprintMismatchError: `model` is not the one that indexed the collection.
    """

    def __init__(
        self, store: Store, collection: str, model: OmniModel | None = None, *, model_dir: str | Path | None = None,
        device: Any = None, exact: bool | None = None, precision: str = "fp32", calibrate: bool = True,
    ):
        self.store = store
        self.collection = collection
        self.exact = exact
        self.calibrate = calibrate
        self.meta = store.get_meta(collection)
        if model is None:
            model = self._load_model(model_dir, device, precision)
        check_kind(self.meta, model.embedding_kind, model.aspect_count, collection, "search")
        check_fingerprint(self.meta, model.fingerprint, collection, "search")
        self.model = model

    def _load_model(self, model_dir: str | Path | None, device: Any, precision: str) -> OmniModel:
        from omnisdk.checkpoint import read_manifest
        from omnisdk.model import OmniModel

        if model_dir is None:
            if not self.meta.model_path:
                raise OmniError(f"collection '{self.collection}' does not record its model directory: pass the model (--model DIR)")
            model_dir = self.meta.model_path
            if not Path(model_dir).is_dir():
                raise OmniError(
                    f"collection '{self.collection}' was indexed with the model in {model_dir}, which is gone: "
                    "pass the model (--model DIR)"
                )
        # Refuse another model from its manifest, before loading any weights.
        manifest = read_manifest(Path(model_dir))
        aspects = manifest.backbone.aspects
        check_kind(self.meta, "single" if aspects is None else "agff", 0 if aspects is None else aspects.count,
                   self.collection, "search")
        check_fingerprint(self.meta, manifest.fingerprint, self.collection, "search")
        return OmniModel.load(model_dir, device=device, precision=precision)

    def encode_query(self, query: str | Path | Item) -> np.ndarray:
        """The query's vector (role "query"), or its K aspect vectors (K, dim) for an AGFF collection; an
        OmniError with the cause when it cannot be encoded."""
        item = as_item(query)
        vectors, failures = self.model.encode([item], role="query", errors="ignore", return_errors=True, show_progress=False,
                                              **({"aspects": True} if self.meta.embedding == "agff" else {}))
        if failures or not np.isfinite(vectors[0]).all():
            cause = failures[0].cause if failures else "the model returned no vector"
            raise OmniError(f"cannot encode the query {item.label()}: {cause}")
        return vectors[0]

    def search(
        self, query: str | Path | Item, *, limit: int = 10, modalities: str | Sequence[str] | None = None
    ) -> list[SearchHit]:
        """The `limit` best chunks for the query, best first, optionally only of some modalities.

        Args:
            query: text, a file path (an image, audio, ... query), or an Item.
            limit: how many hits, at least 1.
            modalities: only hits of this modality (or these); None for all.

        Returns:
            SearchHits, best first: score, modality, source file, locator (page, time span, lines), payload.

        Raises:
            OmniError: `limit` below 1, or a modality the model does not embed.
            ItemErrors: the query itself cannot be embedded (an unreadable file).
        """
        modalities = self._check_modalities(modalities)
        item = as_item(query)
        vector = self.encode_query(item)  # encoded: its modality is known (stated or detected)
        return self.search_vector(vector, limit=limit, modalities=modalities, query_modality=self._query_modality(item))

    def search_vector(self, vector: Any, *, limit: int = 10, modalities: str | Sequence[str] | None = None,
                      query_modality: str | None = None) -> list[SearchHit]:
        if limit < 1:
            raise OmniError(f"limit must be at least 1, not {limit}")
        vector = np.asarray(vector, dtype=np.float32)
        wanted = modality_list(modalities)
        if self.meta.embedding == "agff":
            return self._search_agff(vector, limit, wanted)
        calibration = self.calibration()
        try:
            points = self.store.count(self.collection)
            exact = self.exact if self.exact is not None else points <= EXACT_SEARCH_UP_TO
            if calibration is not None and points != calibration.points:
                calibration = None  # written to outside the indexer since: raw scores, rather than stale statistics
            if calibration is not None and wanted is not None:
                # The statistics cover every modality the collection holds: any other has no points.
                wanted = [m for m in wanted if m in calibration.modalities] or wanted[:1]
            if calibration is None or (wanted is not None and len(wanted) == 1):
                return [self._hit(rank, hit) for rank, hit in enumerate(self.store.query(self.collection, vector, limit, wanted, exact=exact), start=1)]
            merged = self._calibrated(vector, limit, wanted, calibration, exact, query_modality)
        except StoreError:
            raise
        except Exception as exc:  # a backend error on query: one line naming the collection
            raise StoreError(f"searching collection '{self.collection}' in {self.store.location} failed: {exc}") from exc
        return [self._hit(rank, hit, calibrated) for rank, (calibrated, _, hit) in enumerate(merged, start=1)]

    def _calibrated(self, vector: np.ndarray, limit: int, wanted: list[str] | None, calibration: Calibration,
                    exact: bool, query_modality: str | None = None) -> list[tuple[float, float, Hit]]:
        """(calibrated, raw, hit) best first: one wider raw query, then each modality's own top only
        where the wider one cannot rule it out (exact, see calibration.calibrated_top; usually one query).

        The wide queries read only each hit's modality; the full payloads of the `limit` kept hits
        come in one `retrieve` (at 100k points the wide query's payloads cost more than the merge).
        """
        pool = max(CALIBRATION_POOL * limit * len(calibration.modalities), 50)
        first = [(h.score, h.payload.get("modality", ""), h)
                 for h in self.store.query(self.collection, vector, pool, wanted, exact=exact, fields=MERGE_FIELDS)]

        def fetch(modality: str) -> list:
            return [(h.score, h) for h in self.store.query(self.collection, vector, limit, [modality], exact=exact,
                                                           fields=MERGE_FIELDS)]

        merged = calibrated_top(vector, first, pool, calibration, limit, fetch, wanted, query_modality)
        payloads = {p.id: p.payload for p in self.store.retrieve(self.collection, [h.id for _, _, h in merged])}
        # a point deleted between the query and the read keeps its place, with the payload it came with
        return [(calibrated, raw, Hit(h.id, h.score, payloads.get(h.id, h.payload))) for calibrated, raw, h in merged]
    def _search_agff(self, vector: np.ndarray, limit: int, wanted: list[str] | None) -> list[SearchHit]:
        """Aspect vectors (K, dim): MaxSim prefetch, exact rescoring by the aggregation; a (dim,) vector: the pooled one."""
        try:
            exact = self.exact if self.exact is not None else self.store.count(self.collection) <= EXACT_SEARCH_UP_TO
            if vector.ndim == 1:
                hits = self.store.query(self.collection, vector, limit, wanted, exact=exact)
                return [self._hit(rank, hit) for rank, hit in enumerate(hits, start=1)]
            pool = max(PREFETCH * limit, PREFETCH_MIN)
            candidates = self.store.query(self.collection, vector, pool, wanted, exact=exact, using=ASPECTS, with_vectors=True)
        except StoreError:
            raise
        except Exception as exc:  # a backend error on query: one line naming the collection
            raise StoreError(f"searching collection '{self.collection}' in {self.store.location} failed: {exc}") from exc
        if not candidates:
            return []
        stored = np.asarray([hit.vector[ASPECTS] for hit in candidates], dtype=np.float32)
        scores = self.model.similarity(vector[None], stored)[0].numpy()
        order = np.argsort(-scores, kind="stable")[:limit]  # ties keep the MaxSim order
        return [self._hit(rank, Hit(candidates[i].id, float(scores[i]), candidates[i].payload))
                for rank, i in enumerate(order, start=1)]

    def calibration(self) -> Calibration | None:
        """The collection's statistics for the modality correction, or None (switched off, or none recorded)."""
        if not self.calibrate:
            return None
        data = getattr(self.store.get_meta(self.collection), "calibration", None)
        # Parsed again only when the indexer has recorded new statistics (the app indexes while it runs).
        if getattr(self, "_calibration_source", None) is not data:
            self._calibration_source, self._calibration = data, stored_calibration(self.store.get_meta(self.collection))
        return self._calibration

    def _hit(self, rank: int, hit, calibrated: float | None = None) -> SearchHit:
        payload = hit.payload
        locator = Locator.from_dict(payload.get("locator"))
        modality = payload.get("modality", "")
        plugin = self.model.plugins.get(modality)
        where = plugin.describe_locator(locator) if plugin is not None and locator else (str(locator) if locator else "")
        return SearchHit(rank, hit.score, modality, payload.get("source", ""), locator, hit.id, where, payload, calibrated)

    def _query_modality(self, item: Item) -> str | None:
        detect = getattr(self.model, "detect", None)
        try:
            return detect(item) if detect is not None else item.modality
        except Exception:  # the calibration then takes its default query modality
            return item.modality

    def _check_modalities(self, modalities: str | Sequence[str] | None) -> list[str] | None:
        wanted = modality_list(modalities)
        unknown = [m for m in wanted or () if m not in self.model.plugins]
        if unknown:
            raise OmniError(f"unknown modality {', '.join(map(repr, unknown))}: this model has {', '.join(self.model.plugins)}")
        return wanted
