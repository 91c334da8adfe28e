"""evaluate(): encode a dataset's queries and candidates, search exactly, score every task.

Each corpus item is encoded once (role "document") however many tasks' candidate pools hold it;
its time is charged to the first task that needs it. Queries are encoded with role "query". An item
that fails to encode never sinks the run: a failed candidate can never be retrieved (it scores
-inf), a failed query is a miss (every metric 0), and the report lists both with their causes.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from omnisdk import __version__
from omnisdk.datasets.format import Dataset, Record
from omnisdk.errors import OmniError
from omnisdk.eval.mixed import calibrated_metrics, modality_shares, raw_top
from omnisdk.eval.metrics import METRICS, Judgements, chance_hit_at_1, mean_metrics, metrics_from_positions, relevant_positions
from omnisdk.eval.report import EvalReport, Failure, TaskResult
from omnisdk.eval.search import DEFAULT_CORPUS_CHUNK, DEFAULT_QUERY_CHUNK, TIE_TOLERANCE, AspectScorer, count_ahead


@runtime_checkable
class Encoder(Protocol):
    """What evaluate() needs: `OmniModel.encode`'s signature (the baselines follow it too)."""

    def encode(
        self,
        items: Iterable[Any],
        *,
        batch_size: int,
        role: str | None,
        show_progress: bool | None,
        errors: str,
        return_errors: bool,
    ) -> Any: ...


def evaluate(
    encoder: Encoder,
    dataset: Dataset,
    *,
    split: str = "test",
    tasks: Sequence[str] | str | None = None,
    batch_size: int = 32,
    show_progress: bool | None = None,
    chunk_size: int = DEFAULT_CORPUS_CHUNK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    tie_tolerance: float = TIE_TOLERANCE,
    label: str | None = None,
    device: str | torch.device | None = None,
    calibrate: str | None = None,
    decode_workers: int | None = None,
    fit_split: str = "dev",
    platt: Any = None,
) -> EvalReport:
    """Score `encoder` on every task (or `tasks`) of `dataset` on `split`; see the module docstring.

    A task whose pool holds several modalities also reports the modality share of its top 10 and of
    its relevant items; `calibrate` ("zscore", "center", "platt": omnisdk.search.calibration) scores
    those tasks with the query-time modality correction, fitted on the pool's vectors. "platt" also
    needs slopes and biases fitted on judged queries: `platt` (omnisdk.search.platt.PlattParams), or
    else they are fitted on the mixed tasks' queries of `fit_split` (the dev split: choose on dev,
    report on test; the report's `platt` field holds them). One-modality pools are unaffected (the
    correction keeps any one modality's order).

    `chunk_size` and `query_chunk` bound the score blocks of the exact search (memory, not results).
    `label` names the model in the report (default: the encoder's `name`, else its class name).
    `decode_workers` goes to `encoder.encode` when set (OmniModel: threads decoding the next batches
    while the model embeds; 0 decodes and embeds in turn); unset, the encoder's default.
    """
    started = time.perf_counter()
    if calibrate is not None:
        from omnisdk.search.calibration import METHODS

        if calibrate not in METHODS:
            raise OmniError(f"unknown calibration '{calibrate}'; choose one of: {', '.join(METHODS)}")
    names = select_tasks(dataset, split, tasks)
    cache = _VectorCache(encoder, dataset, batch_size, decode_workers)
    if calibrate == "platt" and platt is None and cache.scorer is None:
        platt = fit_platt_on(cache, dataset, names, fit_split)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    with _progress(len(names), show_progress) as bar:
        for name in names:
            bar.set_postfix_str(name)
            results.append(_evaluate_task(cache, dataset, name, split, show_progress, chunk_size, query_chunk, tie_tolerance,
                                          device, calibrate, platt))
            bar.update(1)
    report = EvalReport(
        omnisdk_version=__version__,
        model=label or str(getattr(encoder, "name", type(encoder).__name__)),
        model_fingerprint=_fingerprint(encoder),
        dataset=dataset.name,
        dataset_hash=dataset.content_hash(),
        split=split,
        tasks=results,
        timings={
            "encode_s": round(sum(r.encode_s for r in results), 3),
            "search_s": round(sum(r.search_s for r in results), 3),
            "total_s": round(time.perf_counter() - started, 3),
        },
        failures=cache.failure_list(),
        settings={"batch_size": batch_size, "tie_tolerance": tie_tolerance, "device": str(device),
                  "precision": getattr(encoder, "precision", "fp32"),
                  **({"calibrate": calibrate} if calibrate else {}),
                  **({"platt": platt.model_dump()} if calibrate == "platt" and platt is not None else {})},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return report


def select_tasks(dataset: Dataset, split: str, tasks: Sequence[str] | str | None = None) -> list[str]:
    """The tasks to run: those named (checked), else every task with judged queries in `split`."""
    if split not in dataset.qrels:
        raise OmniError(f"dataset {dataset.name} has no split '{split}' (splits: {', '.join(dataset.splits) or 'none'})")
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks:
        found = [t for t in dataset.tasks if dataset.task_queries(t, split)]
        if not found:
            raise OmniError(f"dataset {dataset.name} has no judged queries in split '{split}'")
        return found
    for task in tasks:
        if task not in dataset.tasks:
            raise OmniError(f"unknown task '{task}' in dataset {dataset.name}; valid tasks: {', '.join(dataset.tasks)}")
        if not dataset.task_queries(task, split):
            raise OmniError(f"task '{task}' has no judged queries in split '{split}' of dataset {dataset.name}")
    return list(dict.fromkeys(tasks))


def _judged(dataset: Dataset, task: str, split: str, pool: Sequence[Record]) -> tuple[list[Record], list[dict[int, int]]]:
    """The task's queries of `split` with a relevant item in the pool, and their qrels keyed by pool index."""
    position = {record.id: i for i, record in enumerate(pool)}
    judged = dataset.qrels[split]
    queries, qrels = [], []
    for query in dataset.task_queries(task, split):
        row = {position[c]: g for c, g in judged[query.id].items() if g > 0 and c in position}
        if row:  # no relevant item in the pool: nothing to find, so it is skipped and counted
            queries.append(query)
            qrels.append(row)
    return queries, qrels


def fit_platt_on(cache: _VectorCache, dataset: Dataset, tasks: Sequence[str], split: str):
    """omnisdk.search.platt parameters fitted on the judged queries of `split` of the mixed tasks among `tasks`."""
    from omnisdk.search.platt import fit_platt

    if split not in dataset.qrels:
        raise OmniError(f"calibration 'platt' is fitted on split '{split}', which dataset {dataset.name} lacks "
                        f"(splits: {', '.join(dataset.splits) or 'none'}): pass another fit split")
    groups = []
    for task in tasks:
        pool = dataset.candidates(task)
        if len({r.modality for r in pool}) < 2:
            continue
        queries, qrels = _judged(dataset, task, split, pool)
        if queries:
            corpus, _ = cache.vectors(pool, "document", False)
            vectors, _ = cache.vectors(queries, "query", False)
            groups.append((dataset.tasks[task].query_modality, vectors, corpus, [r.modality for r in pool], qrels))
    if not groups:
        raise OmniError(f"calibration 'platt' needs judged queries of a mixed-modality task in split '{split}'; "
                        f"none of {', '.join(tasks)} has any")
    return fit_platt(groups, fitted_on=f"{dataset.name} {split}")


def _evaluate_task(cache: _VectorCache, dataset: Dataset, task: str, split: str, show_progress: bool | None,
                   chunk_size: int, query_chunk: int, tie_tolerance: float, device: Any,
                   calibrate: str | None = None, platt: Any = None) -> TaskResult:
    spec = dataset.tasks[task]
    started = time.perf_counter()
    pool = dataset.candidates(task)
    judged_queries = dataset.task_queries(task, split)
    queries, qrels = _judged(dataset, task, split, pool)
    # Inner encode bars only where they can redraw in place (a terminal) and only for big pools.
    inner = False if show_progress is False else None
    corpus, corpus_ok = cache.vectors(pool, "document", inner)
    query_vectors, query_ok = cache.vectors(queries, "query", inner)
    encoded = time.perf_counter()
    truth = Judgements.from_qrels(qrels)
    pool_modalities = [r.modality for r in pool]
    mixed = len(set(pool_modalities)) > 1
    scorer = cache.scorer  # AGFF: the model's aggregation; its scores have no single-vector calibration
    if scorer is not None:
        calibrate = None
    shares: tuple[dict[str, float], dict[str, float]] = ({}, {})
    if queries and mixed and calibrate:
        per_query, top = _calibrated(query_vectors, corpus, corpus_ok, pool_modalities, qrels, calibrate, tie_tolerance, device,
                                     platt, spec.query_modality)
        metrics = mean_metrics({name: np.where(query_ok, values, 0.0) for name, values in per_query.items()})
        shares = modality_shares(top, pool_modalities, qrels, query_ok)
    elif queries:
        rel_scores, ahead = count_ahead(
            query_vectors, corpus, truth.relevant, tie_tolerance=tie_tolerance,
            query_chunk=query_chunk, corpus_chunk=chunk_size, device=device, scorer=scorer,
        )
        per_query = metrics_from_positions(relevant_positions(rel_scores, ahead, truth.grades), truth.grades)
        # Search already ranks a failed query's relevant items last; zeroing makes "a miss" exact.
        metrics = mean_metrics({name: np.where(query_ok, values, 0.0) for name, values in per_query.items()})
        if mixed:
            shares = modality_shares(raw_top(query_vectors, corpus, device, scorer), pool_modalities, qrels, query_ok)
    else:
        metrics = mean_metrics({name: np.zeros(0) for name in METRICS})
    return TaskResult(
        task=task, modality=spec.credited_modality(), kind=spec.kind, query_modality=spec.query_modality,
        corpus_modality=spec.corpus_modality, n_queries=len(queries), n_candidates=len(pool),
        skipped_queries=len(judged_queries) - len(queries),
        failed_queries=int((~query_ok).sum()), failed_candidates=int((~corpus_ok).sum()),
        metrics=metrics, chance=chance_hit_at_1(truth.n_relevant, len(pool)),
        encode_s=round(encoded - started, 3), search_s=round(time.perf_counter() - encoded, 3),
        top10_share=shares[0], relevant_share=shares[1],
    )


def _calibrated(query_vectors, corpus, corpus_ok, pool_modalities, qrels, method: str, tie_tolerance: float, device,
                platt=None, query_modality: str | None = None):
    from omnisdk.search.calibration import fit_calibration

    calibration = fit_calibration(corpus[corpus_ok], [m for m, ok in zip(pool_modalities, corpus_ok) if ok], method=method,
                                  platt=platt)
    return calibrated_metrics(query_vectors, corpus, pool_modalities, qrels, calibration,
                              tie_tolerance=tie_tolerance, device=device, query_modality=query_modality)


class _VectorCache:
    """Encodes each (record, role) once across tasks and remembers what failed and why."""

    def __init__(self, encoder: Encoder, dataset: Dataset, batch_size: int, decode_workers: int | None = None):
        self.encoder = encoder
        # Only an encoder that takes it (OmniModel) is given it: baselines keep the plain signature.
        self.extra = {"decode_workers": decode_workers} if decode_workers is not None else {}
        self.dataset = dataset
        self.batch_size = batch_size
        self.rows: dict[tuple[str, str], np.ndarray] = {}
        self.failures: dict[tuple[str, str], Failure] = {}
        self.dim: int | None = None
        # AGFF models: rows are the K aspect vectors flattened, scored by the model's aggregation
        module = getattr(encoder, "aspect_tokens", None)
        self.scorer = AspectScorer(module) if module is not None else None

    def vectors(self, records: Sequence[Record], role: str, show_progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
        """[n, dim] float32 rows (NaN where the item failed) and a boolean mask of the good rows."""
        missing = [r for r in records if (r.id, role) not in self.rows]
        if missing:
            self._encode(missing, role, show_progress)
        if self.dim is None:
            return np.zeros((len(records), 1), dtype=np.float32), np.zeros(len(records), dtype=bool)
        matrix = np.stack([self.rows[(r.id, role)] for r in records]) if records else np.zeros((0, self.dim), np.float32)
        return matrix, np.isfinite(matrix).all(axis=1)

    def _encode(self, records: list[Record], role: str, show_progress: bool | None) -> None:
        items = [self.dataset.item(r) for r in records]
        aspects = {"aspects": True} if self.scorer is not None else {}
        out = self.encoder.encode(items, batch_size=self.batch_size, role=role, show_progress=show_progress,
                                  errors="ignore", return_errors=True, **aspects, **self.extra)
        vectors, errors = out if isinstance(out, tuple) else (out, [])
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 3:  # AGFF: (N, K, D) -> (N, K * D)
            vectors = vectors.reshape(vectors.shape[0], vectors.shape[1] * vectors.shape[2])
        if vectors.shape[0] != len(records):
            raise OmniError(f"the encoder returned {vectors.shape[0]} vectors for {len(records)} items: it must return one row per item")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise OmniError(f"the encoder returned dimension {vectors.shape[1]} after {self.dim}: one encoder must use one dimension")
        self.dim = vectors.shape[1]
        causes = {e.index: getattr(e, "cause", str(e)) for e in errors}
        for i, record in enumerate(records):
            row = vectors[i]
            if i in causes or not np.isfinite(row).all():
                row = np.full(self.dim, np.nan, dtype=np.float32)
                self.failures[(record.id, role)] = Failure(
                    id=record.id, role=role, modality=record.modality, path=record.path,
                    cause=causes.get(i, "the encoder returned a non-finite vector"),
                )
            self.rows[(record.id, role)] = row

    def failure_list(self) -> list[Failure]:
        return list(self.failures.values())


def _fingerprint(encoder: Any) -> str | None:
    try:
        value = getattr(encoder, "fingerprint", None)
    except Exception:  # a fingerprint that cannot be computed must not cost the report
        return None
    return str(value) if value is not None else None


def _progress(total: int, show: bool | None):
    from tqdm.auto import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, desc="eval", unit="task", disable=not show, file=sys.stderr)
