"""`omnisdk index --engine ray`: the Indexer's contract, with decoding and embedding spread over a Ray cluster.

    with omnisdk.open_store("http://qdrant:6333") as store:
        report = RayIndexer(store, "corpus", model, ray=RayOptions(address="auto", actors=8)).index(["/data"])

The driver (this process) does what must see the whole collection, exactly as `Indexer` does it,
through the same methods: it walks the roots, reads the collection's state, detects each file's
modality, skips files whose size and mtime are stored, and at the end writes every file's points
(same ids, same payloads), deletes stale ones, prunes, logs errors and flushes. In between, Ray Data
runs two stages (omnisdk.search.ray_workers):

1. tasks hash each file, chunk it and prepare its chunks (reading and decoding: the CPU-heavy part);
   content the collection already holds is not decoded, the driver reuses its vectors;
2. an actor pool (one GPU per actor where the cluster has GPUs) embeds the prepared chunks.

A killed decode task is retried (`max_retries`), a killed actor restarted and its batch retried
(`max_restarts`, `max_task_retries`); the driver keys chunks by (file, chunk index), so a chunk that
comes back twice is counted once. If the driver itself dies, a re-run resumes like the local one.

Workers must see the files and the model directory at the same paths as the driver (a shared
file system), and have omnisdk installed. Ray is imported only here, when this engine runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from omnisdk.errors import OmniError
from omnisdk.items import Item, Locator
from omnisdk.search.indexer import FileError, Indexer, _Group, _Job, _progress_bar

RAY_EXTRA = "pip install 'omnisdk[ray]'"


class RayOptions(BaseModel):
    """How `RayIndexer` uses the cluster."""

    model_config = ConfigDict(extra="forbid")

    #: None: a local cluster started for this run (or the one `ray.init` already joined); "auto" or ray://HOST:PORT
    address: str | None = None
    #: embedding actors (each loads the model once)
    actors: int = Field(1, ge=1)
    #: GPUs per embedding actor; None: 1 when the cluster has GPUs, else 0
    gpus_per_actor: float | None = Field(None, ge=0)
    #: files per decode task (a task is the unit of retry)
    files_per_task: int = Field(8, ge=1)
    #: how often a killed decode task is run again (3: Ray's default)
    max_retries: int = Field(3, ge=0)
    #: how often a dead actor is restarted, and its batch retried (-1: without limit, Ray Data's default)
    max_restarts: int = -1
    max_task_retries: int = -1
    #: for tests: the first actor that claims this file kills its own process (see ray_workers.Embedder)
    fault_file: str | None = None


class RayIndexer(Indexer):
    """`Indexer` whose decoding and embedding run on Ray Data; see the module docstring.

    Takes Indexer's arguments plus `ray` (RayOptions). The model's directory (`model_dir`, by default
    `model.directory`) is where the workers load it from, so the model must be saved.
    """

    def __init__(self, store, collection: str, model, *, ray: RayOptions | None = None, **kwargs: Any):
        model_dir = kwargs.get("model_dir") or getattr(model, "directory", None)
        if not model_dir or not Path(model_dir).is_dir():  # checked before the collection is created
            raise OmniError(f"the Ray engine loads the model on every worker from its directory, and there is none "
                            f"({model_dir!r}): save the model and pass model_dir (--model DIR)")
        super().__init__(store, collection, model, **kwargs)
        self.options = ray or RayOptions()
        self.model_dir = str(model_dir)

    def _index_files(self, files: list[Path], state: dict[str, dict[str, _Group]], reusable: dict[str, _Group]) -> None:
        todo: dict[str, tuple[str, os.stat_result, set[str], dict[str, _Group]]] = {}
        for path in files:
            groups = state.get(str(path), {})
            checked = self._precheck(path, groups)
            if checked is not None:
                todo[str(path)] = (*checked, groups)
        if not todo:
            return
        with ray_session(self.options.address) as ray:
            dataset = self._dataset(ray, todo, reusable)
            self._collect(dataset, todo, reusable)

    def _dataset(self, ray, todo: dict[str, tuple], reusable: dict[str, _Group]):
        from omnisdk.search.ray_workers import Embedder, decode_files

        options = self.options
        known = ray.put(np.array(sorted(s.encode() for s in reusable), dtype="S64"))
        gpus = options.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        items = [{"path": p, "modality": entry[0]} for p, entry in sorted(todo.items(), key=lambda kv: (kv[1][0], kv[0]))]
        blocks = max(1, -(-len(items) // options.files_per_task))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        with warnings.catch_warnings():
            # max_retries is always passed: with remote arguments equal to the actors', Ray Data fuses the
            # decode step into the actors, and decoding would run there, one file at a time per actor,
            # instead of in tasks on every free CPU. Ray 2.60 warns that extra remote arguments are deprecated.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = dataset.map_batches(
                decode_files, batch_size=options.files_per_task, batch_format="numpy", num_cpus=1,
                max_retries=options.max_retries,
                fn_kwargs={"model_dir": self.model_dir, "precision": self.model.precision, "known": known,
                           "batch_size": self.batch_size},
            )
        return dataset.map_batches(
            Embedder, batch_size=self.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=1, num_gpus=gpus,
            **_retries(max_restarts=(options.max_restarts, -1), max_task_retries=(options.max_task_retries, -1)),
            fn_constructor_kwargs={"model_dir": self.model_dir, "precision": self.model.precision,
                                   "batch_size": self.batch_size, "aspects": bool(self._aspects),
                                   "fault_file": options.fault_file},
        )

    def _collect(self, dataset, todo: dict[str, tuple], reusable: dict[str, _Group]) -> None:
        """Rows as they come: a file's points are written once all its chunks are in (Indexer._write)."""
        from omnisdk.search.ray_workers import CHUNK, CHUNK_FAILED, KNOWN, READ_FAILED

        jobs: dict[str, _Job] = {}
        fallback: list[_Job] = []
        progress = _progress_bar(len(todo), self.progress)
        for batch in _timed(self._timer, iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))):
            for i in range(len(batch["path"])):
                path = str(batch["path"][i])
                if path not in todo:  # settled already: a retried task's repeat
                    continue
                modality, st, old_ids, groups = todo[path]
                kind, sha = str(batch["kind"][i]), str(batch["sha256"][i])
                if kind == CHUNK:
                    if path not in jobs:
                        jobs[path] = _new_job(path, modality, st, sha, old_ids, batch, i, self._vector_shape())
                    job = jobs[path]
                    if not self._take_chunk(job, batch, i):
                        continue
                    if job.done < len(job.chunks):
                        continue
                    self._write(job)
                    del jobs[path]
                elif kind == READ_FAILED:
                    self._fail(FileError(path, str(batch["cause"][i]), "read"))
                elif kind == CHUNK_FAILED:
                    self._chunk_failed(Path(path), old_ids, str(batch["cause"][i]))
                elif kind == KNOWN and not self._settle(Path(path), modality, st, sha, groups, reusable, old_ids):
                    job = self._decode(Path(path), modality, st, sha, old_ids)  # its copy went away: embed it here
                    fallback.extend([job] if job is not None else [])
                del todo[path]
                progress(1)
        progress(None)
        if todo:  # Ray lost rows without raising: say so rather than report a complete run
            raise OmniError(f"the Ray pipeline ended without {len(todo)} files (first: {next(iter(todo))}); run the "
                            "same command again: it resumes")
        self._embed(fallback)

    def _take_chunk(self, job: _Job, batch: dict[str, np.ndarray], i: int) -> bool:
        """Record one chunk's vector or cause; False for a chunk seen already (a retried batch's repeat)."""
        index = int(batch["index"][i])
        if job.chunks[index] is not None:
            return False
        meta = json.loads(str(batch["meta"][i]))
        job.chunks[index] = Item(modality=meta["modality"], text=meta["text"], path=job.path,
                                 locator=Locator.from_dict(meta["locator"]))
        cause = str(batch["cause"][i])
        if cause:
            job.causes[index] = cause
        else:
            job.vectors[index] = np.frombuffer(bytes(batch["vector"][i]), dtype=np.float32).reshape(job.vectors.shape[1:])
        job.done += 1
        return True

    def _vector_shape(self) -> tuple[int, ...]:
        return (self._aspects, self.model.dim) if self._aspects else (self.model.dim,)


def _retries(**wanted: tuple[int, int]) -> dict[str, int]:
    """The actor retry settings that differ from Ray Data's defaults (restarted and retried without limit):
    Ray 2.60 takes them only as deprecated extra remote arguments, so the defaults pass none."""
    return {name: value for name, (value, default) in wanted.items() if value != default}


def _new_job(path: str, modality: str, st: os.stat_result, sha: str, old_ids: set[str], batch, i: int,
             shape: tuple[int, ...]) -> _Job:
    count = int(batch["chunks"][i])
    job = _Job(Path(path), modality, st.st_size, st.st_mtime, sha, [None] * count, old_ids)  # type: ignore[list-item]
    job.vectors = np.full((count, *shape), np.nan, dtype=np.float32)
    return job


def _timed(timer, batches: Iterator) -> Iterator:
    """Batches from the pipeline; the driver's wait for each counts as "encode" (decode and encode overlap on the cluster)."""
    while True:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            timer.seconds["encode"] += time.perf_counter() - started
        yield batch


@contextlib.contextmanager
def ray_session(address: str | None):
    """Ray, connected: the cluster `ray.init` already joined, else `address`, else a local one for this run."""
    try:
        import ray
    except ImportError:
        raise OmniError(f"--engine ray needs Ray: {RAY_EXTRA}") from None
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        ray.shutdown()

