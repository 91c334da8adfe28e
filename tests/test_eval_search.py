"""Exact blocked search: chunking never changes results, ties are ordered deterministically."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnisdk.eval.metrics import metrics_from_scores
from omnisdk.eval.search import TIE_TOLERANCE, count_ahead, count_at_least, first_relevant_rank, top_k

CHUNKS = [(1, 1), (3, 7), (16, 5), (64, 1000), (5, 64)]


def reference_top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full sort by (score desc, index asc), computed with the same float32 products per block size 1."""
    scores = (torch.from_numpy(queries) @ torch.from_numpy(corpus).T).numpy()
    order = np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, 1), order


def reference_ahead(queries: np.ndarray, corpus: np.ndarray, relevant: np.ndarray, tol: float) -> np.ndarray:
    """Count non-relevant rows scoring >= relevant score - tol, pair by pair (slow, obvious)."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    out = np.zeros(relevant.shape, dtype=np.int64)
    for q, row in enumerate(relevant):
        rel = set(int(c) for c in row if c >= 0)
        for r, c in enumerate(row):
            if c >= 0:
                out[q, r] = sum(1 for j in range(corpus.shape[0]) if j not in rel and scores[q, j] >= scores[q, c] - tol)
    return out


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_chunked_top_k_equals_unchunked_on_random_data(query_chunk, corpus_chunk):
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((37, 24)).astype(np.float32)
    corpus = rng.standard_normal((211, 24)).astype(np.float32)
    whole = top_k(queries, corpus, 10, query_chunk=10_000, corpus_chunk=10_000)
    chunked = top_k(queries, corpus, 10, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    np.testing.assert_array_equal(chunked.indices, whole.indices)
    np.testing.assert_allclose(chunked.scores, whole.scores, atol=1e-5)
    _, ref_indices = reference_top_k(queries, corpus, 10)
    np.testing.assert_array_equal(whole.indices, ref_indices)


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_ties_list_the_lower_corpus_index_first_whatever_the_chunks(query_chunk, corpus_chunk):
    # Small integer vectors: many exactly equal scores, also across the k-th place.
    rng = np.random.default_rng(2)
    queries = rng.integers(-1, 2, (23, 3)).astype(np.float32)
    corpus = rng.integers(-1, 2, (97, 3)).astype(np.float32)
    got = top_k(queries, corpus, 12, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    ref_scores, ref_indices = reference_top_k(queries, corpus, 12)
    np.testing.assert_array_equal(got.indices, ref_indices)
    np.testing.assert_array_equal(got.scores, ref_scores)


def test_identical_corpus_rows_come_back_in_index_order():
    corpus = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (50, 1))
    got = top_k(np.array([[1.0, 0.0]], dtype=np.float32), corpus, 5, corpus_chunk=7)
    assert got.indices.tolist() == [[0, 1, 2, 3, 4]]


def test_k_larger_than_the_corpus_ranks_it_all_and_failed_rows_go_last():
    corpus = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]], dtype=np.float32)
    got = top_k(np.array([[0.2, 1.0]], dtype=np.float32), corpus, 10, corpus_chunk=2)
    assert got.indices.tolist() == [[2, 0, 1]]
    assert got.scores[0, 2] == -np.inf


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_count_ahead_matches_a_pair_by_pair_count(query_chunk, corpus_chunk):
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, (19, 4)).astype(np.float32)  # ties in plenty
    corpus = rng.integers(-2, 3, (83, 4)).astype(np.float32)
    relevant = np.full((19, 3), -1)
    for q in range(19):
        picked = rng.choice(83, size=1 + q % 3, replace=False)
        relevant[q, : len(picked)] = picked
    scores, ahead = count_ahead(queries, corpus, relevant, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    np.testing.assert_array_equal(ahead, reference_ahead(queries, corpus, relevant, TIE_TOLERANCE))
    assert np.isnan(scores[relevant < 0]).all()
    ranks = first_relevant_rank(queries, corpus, relevant, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    np.testing.assert_array_equal(ranks, 1 + np.where(relevant >= 0, ahead, 10**9).min(axis=1))


def test_search_and_dense_metrics_agree():
    # count_ahead (vectors, blocks) and metrics_from_scores (a dense matrix) must rank alike.
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    corpus = rng.standard_normal((50, 8)).astype(np.float32)
    relevant = rng.integers(0, 50, (30, 1))
    ranks = first_relevant_rank(queries, corpus, relevant, corpus_chunk=9)
    mrr = metrics_from_scores(queries @ corpus.T, [{int(r[0]): 1} for r in relevant])["mrr"]
    np.testing.assert_allclose(1.0 / ranks, mrr)


def test_failed_query_and_failed_relevant_item_rank_last():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 0.0], [0.7, 0.7]], dtype=np.float32)
    queries = np.array([[1.0, 0.0], [np.nan, np.nan]], dtype=np.float32)
    relevant = np.array([[2], [0]])
    _, ahead = count_ahead(queries, corpus, relevant, corpus_chunk=3)
    # Query 0: its relevant item failed (-inf): all 3 other items are ahead.
    # Query 1 failed: everything scores -inf, all 3 non-relevant items tie ahead of its relevant one.
    assert ahead.tolist() == [[3], [3]]


def test_sorted_and_looped_counting_agree():
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.integers(0, 5, (6, 40)).astype(np.float32))
    scores[0, :3] = float("-inf")
    thresholds = torch.from_numpy(rng.integers(-1, 6, (6, 40)).astype(np.float32))
    thresholds[1, 0], thresholds[2, 1] = float("inf"), float("-inf")
    looped = count_at_least(scores, thresholds, sort=False)
    assert torch.equal(looped, count_at_least(scores, thresholds, sort=True))
    assert torch.equal(looped, (scores[:, :, None] >= thresholds[:, None, :]).sum(1))


def test_dimension_mismatch_is_refused_with_both_sizes():
    with pytest.raises(ValueError, match="dimension 3 but the corpus has 4"):
        top_k(np.zeros((1, 3)), np.zeros((2, 4)), 1)
