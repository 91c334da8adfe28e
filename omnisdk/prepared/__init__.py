"""Prepare once, train many times: a content-keyed cache of preprocessed items (see cache.py)."""
from omnisdk.prepared.cache import PreparedCache, default_cache_dir, item_key, namespace
from omnisdk.prepared.warm import warm_cache

__all__ = ["PreparedCache", "default_cache_dir", "item_key", "namespace", "warm_cache"]
