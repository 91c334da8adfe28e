"""Reference encoders for reports and sanity checks: random vectors (chance) and an oracle (ceiling).

Both follow the encoder protocol of `OmniModel.encode` and key items by a stable hash of their
content (modality, text, file bytes, locator), so a moved dataset gives the same vectors and the
same report.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from omnisdk.errors import ItemError, ItemErrors, OmniError
from omnisdk.items import Item, as_item


def item_key(item: Item, _file_hashes: dict[Path, str] | None = None) -> str:
    """A stable sha256 of what an item is: modality, text, file content (not its path), locator."""
    digest = hashlib.sha256()
    digest.update(f"{item.modality}\0{item.text}\0".encode())
    if item.path is not None:
        path = Path(item.path)
        if _file_hashes is not None and path in _file_hashes:
            content = _file_hashes[path]
        else:
            content = _file_sha256(path)  # a missing file raises OSError: the caller reports it
            if _file_hashes is not None:
                _file_hashes[path] = content
        digest.update(f"file:{content}\0".encode())
    elif item.data is not None:
        digest.update(b"data:" + _data_bytes(item.data) + b"\0")
    if item.locator is not None:
        digest.update(repr(sorted(item.locator.to_dict().items())).encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if hasattr(data, "tobytes"):  # numpy arrays and PIL images
        shape = getattr(data, "shape", getattr(data, "size", ""))
        return f"{type(data).__name__}{shape}".encode() + data.tobytes()
    if isinstance(data, tuple):  # (samples, sample_rate) waveforms
        return b"|".join(_data_bytes(part) for part in data)
    return repr(data).encode()


class _KeyedEncoder:
    """Shared plumbing: key each item, look up or make its vector, report failures like OmniModel."""

    dim: int
    name: str

    def __init__(self) -> None:
        self._file_hashes: dict[Path, str] = {}

    def encode(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 32,
        role: str | None = None,
        show_progress: bool | None = None,
        errors: str = "warn",
        return_errors: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[ItemError]]:
        """One float32 unit vector per item (NaN rows for failures), as `OmniModel.encode`."""
        items = [as_item(x) for x in items]
        out = np.full((len(items), self.dim), np.nan, dtype=np.float32)
        failures: list[ItemError] = []
        for i, item in enumerate(items):
            try:
                out[i] = self._vector(item_key(item, self._file_hashes), role)
            except (OSError, KeyError) as exc:
                cause = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                failures.append(ItemError(i, item, str(cause)))
        if failures and errors == "raise":
            raise ItemErrors(failures, embeddings=out)
        if errors == "warn":
            for failure in failures:
                warnings.warn(str(failure), stacklevel=2)
        return (out, failures) if return_errors else out

    def _vector(self, key: str, role: str | None) -> np.ndarray:
        raise NotImplementedError


class RandomEncoder(_KeyedEncoder):
    """Seeded Gaussian unit vectors, one per distinct item: the chance row of a report.

    The same item always gets the same vector (whatever its role), so an item found in both the
    queries and the corpus matches itself, as it would with any deterministic encoder.
    """

    name = "random"

    def __init__(self, dim: int = 128, seed: int = 0):
        super().__init__()
        if dim < 1:
            raise OmniError(f"RandomEncoder needs dim >= 1, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)

    @property
    def fingerprint(self) -> str:
        return f"random-d{self.dim}-s{self.seed}"

    def _vector(self, key: str, role: str | None) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dim)
        return (vector / np.linalg.norm(vector)).astype(np.float32)


class OracleEncoder(_KeyedEncoder):
    """Vectors built from a split's qrels, so every metric is at its ceiling: the oracle row of a report.

    Queries with the same relevant set share one basis direction e_g; a corpus item relevant with
    grade s to group g gets weight 0.5 + 0.5 * s / max_grade on e_g (higher grades score higher),
    the rest of its unit length on a spare axis that no query uses. A query thus scores its relevant
    items above 0.5 and every other item exactly 0: no ties across the relevance boundary. An item
    relevant to several groups is spread over their axes, which can reorder grades within a query
    (nDCG below 1) but never puts a non-relevant item first. Items not in the split's queries or
    corpus fail with a message, as a broken file would.
    """

    name = "oracle"

    def __init__(self, dataset: Any, split: str = "test"):
        super().__init__()
        if split not in dataset.qrels:
            raise OmniError(f"dataset {dataset.name} has no qrels for split '{split}' (splits: {', '.join(dataset.splits)})")
        self.split = split
        judged = dataset.qrels[split]
        relevant_by_key: dict[str, set[tuple[str, int]]] = {}
        for qid, row in judged.items():
            key = self._key_or_none(dataset.item(dataset.queries[qid]))
            if key is None:
                continue
            # Identical queries cannot be told apart by any encoder: they share the union of their sets.
            relevant_by_key.setdefault(key, set()).update((c, g) for c, g in row.items() if g > 0)
        groups: dict[frozenset[tuple[str, int]], int] = {}
        self._query_axis = {key: groups.setdefault(frozenset(rel), len(groups) + 1) for key, rel in relevant_by_key.items()}
        self.dim = len(groups) + 1  # axis 0: the spare axis
        max_grade = max((g for rel in groups for _, g in rel), default=1)
        weights: dict[str, dict[int, float]] = {}
        for rel, axis in groups.items():
            for cid, grade in rel:
                weights.setdefault(cid, {})[axis] = 0.5 + 0.5 * grade / max_grade
        merged: dict[str, dict[int, float]] = {}
        for cid, record in dataset.corpus.items():
            key = self._key_or_none(dataset.item(record))
            if key is None:
                continue  # an unreadable file: encode reports it when it is asked for
            axes = merged.setdefault(key, {})  # records with identical content are one item
            for axis, weight in weights.get(cid, {}).items():
                axes[axis] = max(axes.get(axis, 0.0), weight)
        self._doc_vectors = {key: self._doc_vector(axes) for key, axes in merged.items()}
        self._fingerprint = f"oracle-{dataset.content_hash()[:12]}-{split}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _key_or_none(self, item: Item) -> str | None:
        try:
            return item_key(item, self._file_hashes)
        except OSError:
            return None

    def _doc_vector(self, axes: dict[int, float]) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float64)
        for axis, weight in axes.items():
            vector[axis] = weight
        # The spare axis tops a single weight up to unit length, so the score is the weight itself.
        vector[0] = np.sqrt(max(0.0, 1.0 - float((vector[1:] ** 2).sum())))
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def _vector(self, key: str, role: str | None) -> np.ndarray:
        if role == "query":
            if key not in self._query_axis:
                raise KeyError(f"not a judged query of split '{self.split}', so the oracle has no vector for it")
            vector = np.zeros(self.dim, dtype=np.float32)
            vector[self._query_axis[key]] = 1.0
            return vector
        if key not in self._doc_vectors:
            raise KeyError("not in the dataset's corpus, so the oracle has no vector for it")
        return self._doc_vectors[key]


def make_baseline(name: str, dataset: Any = None, *, split: str = "test", dim: int = 128, seed: int = 0) -> _KeyedEncoder:
    """A baseline encoder by name: 'random' or 'oracle' (which needs the dataset and split)."""
    if name == "random":
        return RandomEncoder(dim=dim, seed=seed)
    if name == "oracle":
        if dataset is None:
            raise OmniError("the oracle baseline is built from a dataset's qrels: pass the dataset")
        return OracleEncoder(dataset, split)
    raise OmniError(f"unknown baseline '{name}'; choose one of: {', '.join(BASELINES)}")


BASELINES: Sequence[str] = ("random", "oracle")
