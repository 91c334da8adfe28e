"""Fill the prepared-input cache for a set of items up front, with progress, decoding in parallel."""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterable, Literal

from omnisdk.items import Item

if TYPE_CHECKING:
    from omnisdk.model import OmniModel

Role = Literal["query", "document"]
CHUNK = 32


def warm_cache(model: OmniModel, items: Iterable[tuple[Item, Role | None]], *, workers: int | None = None,
               show_progress: bool | None = None, desc: str = "prepare") -> dict[str, int]:
    """Prepare every (item, role) the model has no row for yet; returns the cache's hit/miss counts.

    Items need their modality set. Files are decoded by `workers` threads (default: the CPU count);
    video and PDF decoders run in child processes, so threads overlap them well. Text is tokenised in
    the calling thread (one tokenizer is not safe to share between threads).
    """
    from tqdm.auto import tqdm

    cache = model.prepared_cache
    if cache is None:
        raise ValueError("the model has no prepared-input cache: call model.use_cache(...) first")
    groups: dict[tuple[str, Role | None], list[Item]] = defaultdict(list)
    seen = set()
    for item, role in items:
        if item.modality not in model.plugins:
            continue
        role_key = role if item.modality == "text" else None  # only text rows depend on the role
        marker = (item.modality, role_key, item.path, item.text, item.locator)
        if marker not in seen:
            seen.add(marker)
            groups[(item.modality, role_key)].append(item)
    total = sum(len(v) for v in groups.values())
    show = total > 64 if show_progress is None else show_progress  # a line every 30 s in a log
    bar = tqdm(total=total, desc=desc, unit="item", disable=not show, file=sys.stderr,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    before = cache.stats.as_dict()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for (modality, role), group in groups.items():
            chunks = [group[i:i + CHUNK] for i in range(0, len(group), CHUNK)]
            if modality == "text":
                for chunk in chunks:
                    model.prepare(modality, chunk, role, to_device=False)
                    bar.update(len(chunk))
                continue
            for chunk, _ in zip(chunks, pool.map(lambda c: model.prepare(modality, c, role, to_device=False), chunks)):
                bar.update(len(chunk))
    bar.close()
    cache.flush()
    after = cache.stats.as_dict()
    return {k: after[k] - before[k] for k in ("hits", "misses", "uncached")}
