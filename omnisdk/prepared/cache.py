"""The prepared-input cache: each item is decoded once, then every stage reads its prepared row.

Preprocessing is a pure function of (item content, locator, plugin, plugin settings, tokenizer), so
its output is keyed by exactly that: the item key hashes the file's bytes (or the text) and the
locator, and the namespace hashes the plugin's name, version and settings, the settings of the
plugins it uses, the backbone's token budget and the tokenizer's vocabulary. Change any of them
(say the image size) and the lookup misses. A model and its specialists, fused and recovered
descendants share one namespace, so a pipeline decodes each file once.

In-memory objects (a PIL image, a waveform) have no stable identity and are prepared every time.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from omnisdk.batching import is_splittable
from omnisdk.items import Item
from omnisdk.modality import Prepared, dependencies_of
from omnisdk.prepared.store import NotStorable, ShardStore, check_storable

if TYPE_CHECKING:
    from omnisdk.model import OmniModel

log = logging.getLogger(__name__)
ENV_DIR = "OMNISDK_CACHE_DIR"


def default_cache_dir() -> Path:
    """$OMNISDK_CACHE_DIR, else the user cache directory's `prepared/`."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("omnisdk")) / "prepared"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    uncached: int = 0  # items with no stable identity, or plugins whose batches cannot be stored
    rebuilt_shards: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "uncached": self.uncached,
                "rebuilt_shards": len(self.rebuilt_shards)}


class PreparedCache:
    """Prepared rows on disk under `root`; `prepare` serves a batch from them, preparing what is missing."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.store = ShardStore(self.root)
        self.stats = CacheStats()
        self._lock = threading.Lock()  # a prefetch thread and the caller may look up at once
        self._uncacheable: set[str] = set()
        atexit.register(self.flush)  # rows prepared by a process that ends without flushing still land

    def prepare(self, model: OmniModel, modality: str, items: Sequence[Item]) -> Prepared:
        """Like `plugin.preprocess(items)`, but rows already prepared are read rather than decoded."""
        plugin = model.plugins[modality]
        space = namespace(model, modality)
        if space in self._uncacheable:
            self.stats.uncached += len(items)
            return plugin.preprocess(items, model.runtime)
        keys = [item_key(item) for item in items]
        with self._lock:
            found = self.store.get(space, list(dict.fromkeys(k for k in keys if k is not None)))
        rows_at = {i: found[k] for i, k in enumerate(keys) if k is not None and k in found}
        missing = [i for i in range(len(items)) if i not in rows_at]
        errors: dict[int, str] = {}
        if missing:
            fresh = plugin.preprocess([items[i] for i in missing], model.runtime)
            errors = {missing[local]: cause for local, cause in fresh.errors.items()}
            rows = self._rows_of(plugin, space, fresh) if fresh.ok else []
            if rows is None:  # this plugin's batches cannot be stored: hand its own batch back
                self.stats.uncached += len(items)
                return fresh if len(missing) == len(items) else plugin.preprocess(items, model.runtime)
            keep = {}
            for local, row in zip(fresh.ok, rows):
                rows_at[missing[local]] = row
                if keys[missing[local]] is not None:
                    keep[keys[missing[local]]] = row
            with self._lock:
                self.store.put(space, keep)
        self.stats.hits += len(items) - len(missing)
        self.stats.misses += sum(1 for i in missing if keys[i] is not None)
        self.stats.uncached += sum(1 for i in missing if keys[i] is None)
        ok = [i for i in range(len(items)) if i not in errors]
        batch = plugin.collate_rows([rows_at[i] for i in ok], model.runtime) if ok else None
        return Prepared(batch=batch, ok=ok, errors=errors)

    def _rows_of(self, plugin, space: str, fresh: Prepared) -> list | None:
        """A fresh batch cut into rows; None (and the namespace marked) when it cannot be stored."""
        try:
            if not is_splittable(fresh.batch):
                raise NotStorable(f"its batch is a {type(fresh.batch).__name__}, not a dict of tensors and lists")
            rows = plugin.split_rows(fresh.batch, len(fresh.ok))
            for row in rows:
                check_storable(row)
            return rows
        except NotStorable as exc:
            log.info("prepared-input cache: not caching plugin '%s': %s", plugin.name, exc)
            self._uncacheable.add(space)
            return None

    def flush(self) -> None:
        """Write rows still held in memory to disk."""
        with self._lock:
            self.store.flush()
            self.stats.rebuilt_shards = list(self.store.rebuilt)


# -- keys ---------------------------------------------------------------------------------------------
_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, inode, size, mtime) for this process."""
    st = os.stat(path)
    memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def item_key(item: Item) -> str | None:
    """What identifies an item's prepared row: its content and locator; None for in-memory objects."""
    parts = [item.modality or ""]
    if item.path is not None:
        try:
            parts.append("file:" + file_sha256(Path(item.path)))
        except OSError:
            return None  # unreadable: let preprocessing report the cause
    elif item.data is not None:
        return None
    if item.text is not None:
        parts.append("text:" + item.text)
    parts.append("at:" + json.dumps(item.locator.to_dict() if item.locator else {}, sort_keys=True))
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:40]


def namespace(model: OmniModel, modality: str) -> str:
    """`<modality>-<hash>` of everything besides the item that the plugin's preprocessing depends on."""
    memo = getattr(model, "_prepared_namespaces", None)
    if memo is None:
        memo = model._prepared_namespaces = {}
    if modality not in memo:
        plugins = {}
        for name in dependencies_of(model.plugins, modality):
            p = model.plugins[name]
            plugins[name] = {"class": f"{type(p).__module__}.{type(p).__qualname__}", "version": p.version,
                             "config": p.config.model_dump(mode="json")}
        payload = {"plugins": plugins, "max_length": model.spec.max_length, "model_type": model.spec.model_type,
                   "tokenizer": tokenizer_fingerprint(model.tokenizer)}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        memo[modality] = f"{modality}-{digest}"
    return memo[modality]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    payload = json.dumps([type(tokenizer).__name__, vocab, getattr(tokenizer, "padding_side", None)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
