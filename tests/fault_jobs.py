"""What the kill tests run in a child forked from tests/fork_server.py (module-level functions of text arguments)."""
from __future__ import annotations

import json

COLLECTION = "files"


def index(model_dir: str, store_dir: str, data: str) -> None:
    """`omnisdk index --prune` of `data` in small batches (a 3-page PDF takes two upserts)."""
    from omnisdk.model import OmniModel
    from omnisdk.search import Indexer
    from omnisdk.store import open_store

    with open_store(store_dir) as store:
        Indexer(store, COLLECTION, OmniModel.load(model_dir), model_dir=model_dir, batch_size=2, upsert_batch_size=2,
                progress=False).index([data], prune=True)


def train(base: str, data: str, out: str, settings: str) -> None:
    """An image specialist trained with `settings` (JSON)."""
    from omnisdk.trainers.stages import train_specialist

    train_specialist(base, "image", data, out, json.loads(settings), show_progress=False)
