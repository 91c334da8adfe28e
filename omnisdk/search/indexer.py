"""Indexer: folders of files -> located chunks -> vectors -> points in a store collection, resumably.

    import omnisdk

    model = omnisdk.OmniModel.load("ckpt")
    with omnisdk.open_store() as store:
        report = omnisdk.Indexer(store, "photos", model).index(["~/Pictures"], prune=True)
    print(report.markdown())

What happens to each regular, non-hidden file under the roots (no symlink is followed):

1. Detection through the model's plugins; a file no plugin of the model accepts is skipped
   ("unsupported"), not an error.
2. Unchanged files are skipped: a stored group of points with the file's size and mtime (fast
   check), else with its sha256, that is complete (as many points as its `chunks` payload says).
3. The plugin's `chunk` splits it (PDF pages, video segments, audio windows: the chunking that
   `omnisdk embed --chunks` uses); chunks are embedded in batches with role "document".
4. Its points are written, then its stale points (other content at that path) are deleted.

A file whose content is already stored under another path (moved, copied) reuses those vectors.
A file that fails (unreadable, corrupt, decoder crash or hang: PDF and video decoding run in child
processes) is recorded with its cause in the report and in the error log (JSONL, rewritten each
run), and indexing goes on. `prune=True` deletes the points of files under the roots that are gone.

Crash safety: point ids are uuid5(sha256, source, locator) (see `point_id`), so rewriting is
idempotent; a file's new points are written before its stale ones are deleted, and completeness is
judged from the store itself (count of a group's points vs. its `chunks`). After a kill at any
moment, running the same command again converges to exactly the points of a clean run.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from omnisdk.errors import ModalityDetectionError, OmniError
from omnisdk.faults import kill_point
from omnisdk.items import Item, Locator
from omnisdk.search.rules import WalkRules
from omnisdk.search.calibration import refresh_calibration, stored_calibration
from omnisdk.search.platt import load_platt
from omnisdk.search.walk import Walk, file_sha256, point_id, under, walk, walk_paths
from omnisdk.store.base import Store, StoredPoint, ensure_collection, now_iso
from omnisdk.tables import markdown_table
from omnisdk.timing import PhaseTimer

if TYPE_CHECKING:
    from omnisdk.model import OmniModel

Progress = Callable[[int, int], None]
Event = Callable[[str, dict[str, Any]], None]
# Where a run's wall time goes: decoding files (chunking, preprocessing), the model, store writes
# (upserts, deletes, flush, optimize); the rest (walking, hashing, state, payloads) is bookkeeping.
PHASES = ("decode", "encode", "upsert")


@dataclass
class FileError:
    """One file that failed, in whole or in part: `stage` is read, chunk or embed."""

    path: str
    cause: str
    stage: str
    locators: list[dict[str, Any]] = field(default_factory=list)
    failed_chunks: int = 0
    chunks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IndexReport:
    """What one `Indexer.index` run did; `errors` lists failed and partly failed files."""

    collection: str
    store: str
    roots: list[str]
    files: int = 0
    indexed: int = 0
    copied: int = 0
    unchanged: int = 0
    failed: int = 0
    partial: int = 0
    skipped: Counter = field(default_factory=Counter)
    #: files over the size cap: {"path", "bytes"}
    too_large: list[dict[str, Any]] = field(default_factory=list)
    chunks_embedded: int = 0
    points_written: int = 0
    points_deleted: int = 0
    pruned_files: int = 0
    points_total: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    error_log: str | None = None
    errors: list[FileError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = dict(self.skipped)
        return out

    def markdown(self) -> str:
        rows = [
            ["files seen", self.files], ["indexed (new or changed)", self.indexed], ["copied (same content elsewhere)", self.copied],
            ["unchanged", self.unchanged], ["failed", self.failed], ["partly failed", self.partial],
            *([[f"skipped ({cause})", n] for cause, n in sorted(self.skipped.items())] or [["skipped", 0]]),
            ["chunks embedded", self.chunks_embedded], ["points written", self.points_written],
            ["points deleted", self.points_deleted], ["files pruned", self.pruned_files],
            ["points in collection", self.points_total], ["seconds", f"{self.seconds:.1f}"],
        ]
        total = max(self.seconds, 1e-9)
        rows += [[f"seconds in {name}", f"{sec:.1f} ({100 * sec / total:.0f}%)"] for name, sec in self.timings.items()]
        text = markdown_table(["collection " + self.collection, self.store], rows)
        if self.too_large:
            shown = self.too_large[:20]
            text += "\n\n" + markdown_table(["too large (skipped)", "MB"], [[f["path"], f"{f['bytes'] / 1e6:.1f}"] for f in shown])
            if len(self.too_large) > len(shown):
                text += f"\n\n(+{len(self.too_large) - len(shown)} more)"
        if self.errors:
            text += "\n\n" + markdown_table(
                ["file", "stage", "cause"], [[e.path, e.stage, _short(e.cause)] for e in self.errors]
            )
            if self.error_log:
                text += f"\n\nerrors logged to {self.error_log}"
        return text


@dataclass
class _Group:
    """The stored points of one (source, sha256)."""

    chunks: int
    size: int | None
    mtime: float | None
    ids: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.ids) == self.chunks


@dataclass
class _Job:
    """A file to embed: its chunks, their vectors as they come, and the ids it had before."""

    path: Path
    modality: str
    size: int
    mtime: float
    sha256: str
    chunks: list[Item]
    old_ids: set[str]
    vectors: np.ndarray | None = None
    causes: dict[int, str] = field(default_factory=dict)
    done: int = 0


class Indexer:
    """Index files into one collection of a store with one model; see the module docstring.

    Arguments come in Searcher's order: the store, the collection, the model (the old order,
    `Indexer(model, store, collection)`, still works with a DeprecationWarning). Creating it opens the
    collection, or creates it (recording the model's fingerprint, dimension and `model_dir`, by default
    `model.directory`, where a Searcher loads the model from), and refuses a collection indexed with
    another model (FingerprintMismatchError).
    `progress`: None (a bar on a terminal), a bool, or a callable(done_chunks, total_chunks).
    `decode_workers`: threads that decode the next batches while the model embeds (None: up to 4, or
    $OMNISDK_DECODE_WORKERS; 0: decode and embed in turn); the points are the same either way.
    `on_event(name, info)` is called after each store write ("upsert", "delete", "prune") and
    after each file ("file"): for progress displays and for tests that stop a run at a given write.

    Args:
        store: where the vectors go (`omnisdk.open_store(...)`).
        collection: the collection's name; created on first use.
        model: the OmniModel that embeds the files; a collection holds one model's vectors only.
        model_dir: the model's checkpoint directory recorded in the collection (default `model.directory`).
        batch_size: chunks embedded per forward pass.
        upsert_batch_size: points written to the store per call.
        error_log: a JSON-lines file that gets one line per file that failed.
        progress: see above.
        on_event: see above.

    Raises:
        OmniError: a batch size below 1.
        FingerprintMismatchError: the collection was indexed with another model.
    """

    def __init__(
        self,
        store: Store,
        collection: str,
        model: OmniModel,
        *,
        model_dir: str | Path | None = None,
        batch_size: int = 32,
        upsert_batch_size: int = 256,
        decode_workers: int | None = None,
        error_log: str | Path | None = None,
        progress: bool | Progress | None = None,
        on_event: Event | None = None,
    ):
        if batch_size < 1 or upsert_batch_size < 1:
            raise OmniError(f"batch sizes must be at least 1 (got {batch_size} and {upsert_batch_size})")
        if isinstance(model, str):  # the old order, Indexer(model, store, collection): cheap to keep working
            warnings.warn("Indexer(model, store, collection) is deprecated: pass Indexer(store, collection, model), "
                          "the order Searcher takes", DeprecationWarning, stacklevel=2)
            store, collection, model = collection, model, store  # type: ignore[assignment]
        if model_dir is None:
            model_dir = getattr(model, "directory", None)
        self.model = model
        self.store = store
        self.collection = collection
        self.batch_size = batch_size
        self.upsert_batch_size = upsert_batch_size
        self.decode_workers = decode_workers
        self.progress = progress
        self.on_event = on_event
        self.meta = ensure_collection(store, collection, dim=model.dim, fingerprint=model.fingerprint, model_path=model_dir,
                                      embedding=model.embedding_kind, aspects=model.aspect_count)
        self._model_dir = model_dir
        self._aspects = model.aspect_count  # AGFF: each point stores its K aspect vectors and their pooled vector
        local = store.local_dir(collection)
        self.error_log = Path(error_log) if error_log else (local / "errors.jsonl" if local else Path(".omnisdk") / f"{collection}.errors.jsonl")

    # -- the run ----------------------------------------------------------------------------------------
    def index(self, paths: Iterable[str | Path], *, prune: bool = False, rules: WalkRules | None = None) -> IndexReport:
        """Index every file under `paths` (files or folders) that `rules` select; see the module docstring.

        The roots and rules are recorded in the collection's metadata before anything is written.
        Unchanged files are skipped, changed ones replaced; a file that fails is reported, the rest goes on.

        Args:
            paths: files and folders to index.
            prune: also delete the points of files under `paths` that are gone (or that `rules` now leave out).
            rules: which files a walk takes (include / exclude globs, ignore files, a size cap); default: all.

        Returns:
            An IndexReport: files indexed, skipped and failed (each with its cause), chunks, timings.

        Raises:
            OmniError: no paths, or a path that does not exist (without `prune`).
        """
        start = time.perf_counter()
        self._timer = PhaseTimer()
        roots = [Path(p).expanduser().resolve() for p in paths]
        if not roots:
            raise OmniError("nothing to index: give at least one file or folder")
        missing = [str(r) for r in roots if not r.exists()]
        if missing and not prune:
            raise OmniError(f"no such file or folder: {', '.join(missing)} (with --prune, their points are removed)")
        report = IndexReport(self.collection, self.store.location, [str(r) for r in roots], error_log=str(self.error_log))
        rules = rules or WalkRules()
        self._record_roots([r for r in roots if r.exists()], rules)
        kill_point("index.roots")
        tree = walk([r for r in roots if r.exists()], rules)
        self._run(report, tree, roots if prune else None, log_mode="w")
        if prune:
            self._forget_roots([r for r in roots if not r.exists()])
        report.seconds = time.perf_counter() - start
        report.timings = self._timer.split(report.seconds, PHASES, "bookkeeping")
        return report

    def update(self, paths: Iterable[str | Path], roots: Iterable[str | Path], *, rules: WalkRules | None = None) -> IndexReport:
        """Bring `paths` (files or folders under `roots`, present or gone) in line with the disk.

        What is at or below each path and selected by `rules` is indexed as `index` would (unchanged
        files skipped, moved ones reuse their vectors); the points of files at or below a path that
        are gone, or that the rules now leave out, are deleted. Watch mode (omnisdk.search.watch)
        calls it with each batch of changes, so it costs the changed files, not the whole roots, plus
        one read of the collection's bookkeeping. The same crash-safe contract holds; failures are
        appended to the error log of the last `index` run.
        """
        start = time.perf_counter()
        self._timer = PhaseTimer()
        changed = [Path(os.path.abspath(Path(p).expanduser())) for p in paths]
        report = IndexReport(self.collection, self.store.location, [str(p) for p in changed], error_log=str(self.error_log))
        tree = walk_paths(changed, [Path(r).expanduser().resolve() for r in roots], rules)
        self._run(report, tree, changed, log_mode="a")
        report.seconds = time.perf_counter() - start
        report.timings = self._timer.split(report.seconds, PHASES, "bookkeeping")
        return report

    def _run(self, report: IndexReport, tree: Walk, prune_under: list[Path] | None, log_mode: str) -> None:
        """Plan, embed and write the walked files, then delete the points of files under `prune_under` not in it."""
        state = self._load_state()
        reusable = {sha: group for groups in state.values() for sha, group in groups.items() if group.complete}
        # The store's own files are never indexed, wherever it lives.
        own = [Path(d).resolve() for d in (self.store.local_dir(self.collection), getattr(self.store, "root", None),
                                 getattr(self.store, "local_path", None)) if d is not None]
        report.skipped.update(tree.skipped)
        report.too_large = [{"path": str(p), "bytes": size} for p, size in tree.too_large]
        self.error_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.error_log, log_mode, encoding="utf-8") as log:
            self._log = log
            self._report = report
            self._index_files([p for p in tree.files if not self._is_own(p, own)], state, reusable)
            if prune_under is not None:
                self._prune(prune_under, {str(p) for p in tree.files}, state)
        if report.points_written or report.points_deleted:
            with self._timer.phase("upsert"):
                kill_point("index.flush")
                self.store.flush(self.collection)
                kill_point("index.optimize")
                self.store.optimize(self.collection)
        # AGFF search ranks by the model's aggregation, which the single-vector statistics do not describe.
        stale = report.points_written or report.points_deleted or getattr(self.meta, "calibration", None) is None
        platt = load_platt(self._model_dir)  # fitted with the model (omnisdk.search.platt): recorded with the statistics
        if platt is not None and not stale:
            stored = stored_calibration(self.meta)
            stale = stored is None or stored.platt != platt
        if stale and not self._aspects:
            # The modality correction's statistics follow the collection (omnisdk.search.calibration).
            kill_point("index.calibration")
            refresh_calibration(self.store, self.collection, platt=platt)
            self.meta = self.store.get_meta(self.collection)
        report.points_total = self.store.count(self.collection)
        kill_point("index.done")

    def _index_files(self, files: list[Path], state: dict[str, dict[str, _Group]], reusable: dict[str, _Group]) -> None:
        """Plan each file, then embed and write those that need it (omnisdk.search.ray_engine overrides this)."""
        jobs = []
        for path in files:
            job = self._plan(path, state.get(str(path), {}), reusable)
            if job is not None:
                jobs.append(job)
        self._embed(jobs)

    def _is_own(self, path: Path, own: list[Path]) -> bool:
        if path == self.error_log.resolve() or under(path, own):
            self._report.skipped["store"] += 1
            return True
        return False

    def _plan(self, path: Path, groups: dict[str, _Group], reusable: dict[str, _Group]) -> _Job | None:
        """Decide what a file needs: nothing, its stale points dropped, a copy, or embedding."""
        checked = self._precheck(path, groups)
        if checked is None:
            return None
        modality, st, old_ids = checked
        try:
            sha = file_sha256(path)
        except OSError as exc:  # unreadable now (permissions, gone): its stored points stay as they are
            self._fail(read_error(str(path), exc))
            return None
        if self._settle(path, modality, st, sha, groups, reusable, old_ids):
            return None
        return self._decode(path, modality, st, sha, old_ids)

    def _decode(self, path: Path, modality: str, st: os.stat_result, sha: str, old_ids: set[str]) -> _Job | None:
        """The file's chunks to embed, or None when chunking fails (logged, its old points dropped)."""
        try:
            with self._timer.phase("decode"):
                chunks = self.model.plugins[modality].chunk(Item.of_file(path, modality))
        except Exception as exc:  # an unreadable file: this one fails, the run goes on
            self._chunk_failed(path, old_ids, chunk_cause(exc))
            return None
        if not chunks:
            self._chunk_failed(path, old_ids, nothing_to_embed(modality))
            return None
        return _Job(path, modality, st.st_size, st.st_mtime, sha, chunks, old_ids)

    def _precheck(self, path: Path, groups: dict[str, _Group]) -> tuple[str, os.stat_result, set[str]] | None:
        """What can be decided without reading the file's content: (modality, stat, old ids), or None when done."""
        report, source = self._report, str(path)
        report.files += 1
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:  # payloads are UTF-8 text: such a name would end the whole run at its upsert
            self._fail(FileError(source, "its name is not valid UTF-8 (stored names are text): rename the file", "read"))
            return None
        old_ids = {i for g in groups.values() for i in g.ids}
        modality = self._modality(path)
        if modality is None:
            report.skipped["unsupported"] += 1
            self._delete(path, old_ids)  # it was indexed while it read as a supported type
            return None
        try:
            st = path.stat()
        except OSError as exc:  # unreadable now (permissions, gone): its stored points stay as they are
            self._fail(read_error(source, exc))
            return None
        if len(groups) == 1:
            group = next(iter(groups.values()))
            if group.complete and _same_stat(group, st):
                report.unchanged += 1
                return None
        return modality, st, old_ids

    def _settle(self, path: Path, modality: str, st: os.stat_result, sha: str, groups: dict[str, _Group],
                reusable: dict[str, _Group], old_ids: set[str]) -> bool:
        """True when the file's content is stored already (here: unchanged; elsewhere: copied), so nothing is embedded."""
        group = groups.get(sha)
        if group is not None and group.complete:  # same content, touched or left over from a killed run
            self._delete(path, old_ids - set(group.ids))
            if not _same_stat(group, st):
                kill_point("index.touch")
                with self._timer.phase("upsert"):
                    self.store.set_payload(self.collection, group.ids, {"size": st.st_size, "mtime": stored_mtime(st.st_mtime)})
            self._report.unchanged += 1
            return True
        return sha in reusable and self._copy(path, modality, st, sha, reusable[sha], old_ids)

    def _chunk_failed(self, path: Path, old_ids: set[str], cause: str) -> None:
        self._fail(FileError(str(path), cause, "chunk"))
        self._delete(path, old_ids)

    def _embed(self, jobs: list[_Job]) -> None:
        """Embed every job's chunks in windows of `batch_size`, decoding later windows while the model
        embeds earlier ones (omnisdk/encode_stream.py); a file is written when its last chunk is in."""
        from omnisdk.encode_stream import encode_windows

        jobs.sort(key=lambda j: (j.modality, str(j.path)))  # one modality per batch where possible
        work = [(job, i) for job in jobs for i in range(len(job.chunks))]
        windows = [work[start : start + self.batch_size] for start in range(0, len(work), self.batch_size)]
        shape = (self._aspects, self.model.dim) if self._aspects else (self.model.dim,)
        progress = _progress_bar(len(work), self.progress)
        stream = encode_windows(self.model, ([job.chunks[i] for job, i in window] for window in windows),
                                batch_size=self.batch_size, aspects=bool(self._aspects), role="document", timer=self._timer,
                                decode_workers=self.decode_workers, contain_errors=True)
        for window, (vectors, failures) in zip(windows, stream):
            causes = {f.index: f.cause for f in failures}
            for k, (job, i) in enumerate(window):
                if job.vectors is None:  # allocated at a file's first chunk, freed once written: memory follows the window
                    job.vectors = np.full((len(job.chunks), *shape), np.nan, dtype=np.float32)
                job.vectors[i] = vectors[k]
                if k in causes or not np.isfinite(vectors[k]).all():
                    job.causes[i] = causes.get(k, "the model returned no vector")
                job.done += 1
                if job.done == len(job.chunks):
                    self._write(job)
                    job.vectors = None
            progress(len(window))
        progress(None)

    def _write(self, job: _Job) -> None:
        """A file's new points first, then its stale ones deleted: a kill in between loses nothing."""
        report, source = self._report, str(job.path)
        good = [i for i in range(len(job.chunks)) if i not in job.causes]
        report.chunks_embedded += len(good)
        if job.causes:
            self._fail(_chunk_error(job), partial=bool(good))
        if not good:
            self._delete(job.path, job.old_ids)
            return
        indexed_at = now_iso()
        points = [
            StoredPoint(
                point_id(job.sha256, source, job.chunks[i].locator), self._point_vector(job.vectors[i]),
                _payload(job.modality, source, job.chunks[i].locator, job.sha256, job.size, job.mtime, len(good), indexed_at,
                         job.chunks[i].text),
            )
            for i in good
        ]
        self._upsert(job.path, points)
        self._delete(job.path, job.old_ids - {p.id for p in points})
        report.indexed += 1
        self._event("file", path=source, status="partial" if job.causes else "indexed", points=len(points))

    def _point_vector(self, vector: np.ndarray):
        """What a point stores: the vector, or for AGFF its K aspect vectors and their pooled vector."""
        if not self._aspects:
            return vector
        from omnisdk.store.base import ASPECTS, POOLED

        mean = vector.mean(axis=0)
        return {POOLED: mean / max(float(np.linalg.norm(mean)), 1e-12), ASPECTS: vector}

    def _copy(self, path: Path, modality: str, st: Any, sha: str, group: _Group, old_ids: set[str]) -> bool:
        """Points for a file whose content is stored under another path: its vectors, new ids and payloads."""
        source, indexed_at = str(path), now_iso()
        with self._timer.phase("upsert"):
            stored = self.store.retrieve(self.collection, group.ids, with_vectors=True)
        if len(stored) != group.chunks:  # deleted since the run began: embed instead
            return False
        points = []
        for point in stored:
            locator = Locator.from_dict(point.payload.get("locator"))
            payload = _payload(modality, source, locator, sha, st.st_size, st.st_mtime, group.chunks, indexed_at,
                               point.payload.get("text"))
            points.append(StoredPoint(point_id(sha, source, locator), point.vector, payload))
        self._upsert(path, points)
        self._delete(path, old_ids - {p.id for p in points})
        self._report.copied += 1
        self._event("file", path=source, status="copied", points=len(points))
        return True

    def _prune(self, roots: list[Path], present: set[str], state: dict[str, dict[str, _Group]]) -> None:
        gone = sorted(s for s in state if s not in present and under(s, roots))
        ids = [i for s in gone for g in state[s].values() for i in g.ids]
        if ids:
            kill_point("index.prune.before")
            with self._timer.phase("upsert"):
                self.store.delete(self.collection, ids)
            kill_point("index.prune.after")
            self._event("prune", files=len(gone), points=len(ids))
        self._report.pruned_files += len(gone)
        self._report.points_deleted += len(ids)

    # -- helpers ------------------------------------------------------------------------------------------
    def _record_roots(self, roots: list[Path], rules: WalkRules) -> None:
        """The roots in the collection's metadata, first: a killed run leaves a superset, never less."""
        recorded = dict(self.meta.roots)
        for root in roots:
            recorded[str(root)] = {"rules": rules.model_dump(), "indexed_at": now_iso()}
        self._save_roots(recorded)

    def _forget_roots(self, gone: list[Path]) -> None:
        if any(str(r) in self.meta.roots for r in gone):
            self._save_roots({k: v for k, v in self.meta.roots.items() if k not in {str(r) for r in gone}})

    def _save_roots(self, roots: dict[str, dict[str, Any]]) -> None:
        # From the store: another writer (score calibration, say) may have updated other fields.
        self.meta = self.store.get_meta(self.collection).model_copy(update={"roots": roots})
        self.store.update_meta(self.collection, self.meta)

    def _load_state(self) -> dict[str, dict[str, _Group]]:
        """source -> sha256 -> the group of stored points, from the payloads (the store is the truth)."""
        state: dict[str, dict[str, _Group]] = defaultdict(dict)
        for point in self.store.scroll(self.collection):
            payload = point.payload
            source, sha = payload.get("source"), payload.get("sha256")
            if not source or not sha:
                continue  # not written by the indexer: left alone
            group = state[source].setdefault(sha, _Group(int(payload.get("chunks", -1)), payload.get("size"), payload.get("mtime")))
            if (group.size, group.mtime) != (payload.get("size"), payload.get("mtime")):
                group.mtime = None  # points disagree (a touch half recorded): hash to decide
            group.ids.append(point.id)
        return state

    def _modality(self, path: Path) -> str | None:
        try:
            modality = self.model.detect(Item.of_file(path))
        except ModalityDetectionError:
            return None
        return modality if modality in self.model.plugins else None

    def _upsert(self, path: Path, points: list[StoredPoint]) -> None:
        for start in range(0, len(points), self.upsert_batch_size):
            batch = points[start : start + self.upsert_batch_size]
            kill_point("index.upsert.before")
            with self._timer.phase("upsert"):
                self.store.upsert(self.collection, batch, batch_size=self.upsert_batch_size)
            kill_point("index.upsert.after")
            self._report.points_written += len(batch)
            self._event("upsert", path=str(path), points=len(batch))

    def _delete(self, path: Path, ids: Iterable[str]) -> None:
        ids = sorted(ids)
        if ids:
            kill_point("index.delete.before")
            with self._timer.phase("upsert"):
                self.store.delete(self.collection, ids)
            kill_point("index.delete.after")
            self._report.points_deleted += len(ids)
            self._event("delete", path=str(path), points=len(ids))

    def _fail(self, error: FileError, partial: bool = False) -> None:
        if partial:
            self._report.partial += 1
        else:
            self._report.failed += 1
        self._report.errors.append(error)
        self._log.write(json.dumps({"time": now_iso(), **error.as_dict()}) + "\n")
        self._log.flush()
        kill_point("index.error_log")

    def _event(self, name: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, info)


def _same_stat(group: _Group, st: Any) -> bool:
    """Size and mtime as stored; the stored mtime is rounded to the microsecond, so within one matches."""
    return group.size == st.st_size and group.mtime is not None and abs(group.mtime - st.st_mtime) < 1e-6


def stored_mtime(mtime: float) -> float:
    """An mtime at the microsecond precision stores keep (Qdrant Edge drops digits past it), so
    the payload reads back as written."""
    return round(mtime, 6)


def _payload(
    modality: str, source: str, locator: Locator | None, sha: str, size: int, mtime: float, chunks: int, indexed_at: str,
    text: str | None = None,
) -> dict[str, Any]:
    payload = {
        "modality": modality, "source": source, "locator": locator.to_dict() if locator else None, "sha256": sha,
        "size": size, "mtime": stored_mtime(mtime), "chunks": chunks, "indexed_at": indexed_at,
    }
    if text is not None:  # a text chunk's passage, so results show it without reading the file again
        payload["text"] = text
    return payload


def read_error(source: str, exc: OSError) -> FileError:
    return FileError(source, f"cannot read the file: {exc.strerror or exc}", "read")


def chunk_cause(exc: BaseException) -> str:
    """A failed `chunk` call in words: the plugin's own cause when it gives one."""
    return getattr(exc, "cause", None) or f"{type(exc).__name__}: {exc}"


def nothing_to_embed(modality: str) -> str:
    return f"the {modality} plugin found nothing to embed in it"


def _chunk_error(job: _Job) -> FileError:
    causes = list(dict.fromkeys(job.causes.values()))
    cause = "; ".join(causes[:3]) + (f" (+{len(causes) - 3} more)" if len(causes) > 3 else "")
    located = [job.chunks[i].locator.to_dict() for i in sorted(job.causes) if job.chunks[i].locator is not None]
    return FileError(str(job.path), cause, "embed", located[:20], len(job.causes), len(job.chunks))


def _short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _progress_bar(total: int, progress: bool | Progress | None) -> Callable[[int | None], None]:
    """A function advancing the progress display by n chunks; None closes it."""
    if callable(progress):
        done = 0

        def advance(n: int | None) -> None:
            nonlocal done
            if n is not None:
                done += n
                progress(done, total)

        return advance
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=total, desc="index", unit="chunk", disable=not show or total == 0)
    return lambda n: bar.close() if n is None else bar.update(n)
