"""Retrieval metrics on examples worked out by hand (the arithmetic is in the comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from omnisdk.eval.metrics import (
    METRICS,
    Judgements,
    chance_hit_at_1,
    mean_metrics,
    metrics_from_positions,
    metrics_from_scores,
)


def one(scores, qrels, **kw) -> dict[str, float]:
    """Metrics of a single query as plain floats."""
    out = metrics_from_scores(np.array([scores], dtype=np.float32), [qrels], **kw)
    return {name: float(values[0]) for name, values in out.items()}


def test_two_graded_relevant_items_at_positions_2_and_4():
    m = one([0.9, 0.8, 0.7, 0.6, 0.5], {1: 2, 3: 1})
    # Ranking: 0, 1*, 2, 3*, 4 -> relevant at positions 2 (grade 2) and 4 (grade 1).
    assert m["hit@1"] == 0.0
    assert m["recall@1"] == 0.0  # 0 of 2 in the top 1
    assert m["recall@5"] == 1.0 and m["recall@10"] == 1.0  # 2 of 2
    # DCG  = 2/log2(3) + 1/log2(5) = 1.261860 + 0.430677 = 1.692537
    # IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.630930 = 2.630930  ->  nDCG = 1.692537 / 2.630930 = 0.643322
    assert m["ndcg@10"] == pytest.approx(0.643322, abs=1e-6)
    assert m["mrr"] == 0.5  # first relevant at position 2


def test_top_hit_with_several_relevant_items():
    m = one([0.1, 0.9, 0.4, 0.8], {1: 1, 3: 1, 0: 1})
    # Ranking: 1*, 3*, 2, 0* -> positions 1, 2, 4; n_rel = 3.
    assert m["hit@1"] == 1.0 and m["mrr"] == 1.0
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@5"] == 1.0
    # DCG  = 1/log2(2) + 1/log2(3) + 1/log2(5) = 1 + 0.630930 + 0.430677 = 2.061606
    # IDCG = 1 + 1/log2(3) + 1/log2(4) = 1 + 0.630930 + 0.5 = 2.130930  ->  2.061606 / 2.130930 = 0.967468
    assert m["ndcg@10"] == pytest.approx(0.967468, abs=1e-6)


def test_all_tied_scores_rank_the_relevant_item_last():
    m = one([0.5, 0.5, 0.5, 0.5], {2: 1})
    # Pessimistic ties: the 3 non-relevant items come first -> position 4.
    assert m["hit@1"] == 0.0 and m["recall@1"] == 0.0
    assert m["recall@5"] == 1.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(5))  # 0.430677
    assert m["mrr"] == 0.25


def test_ties_only_cost_the_items_tied_with_the_relevant_one():
    m = one([0.9, 0.7, 0.7, 0.7, 0.1], {2: 1})
    # Ahead of item 2: item 0 (0.9, higher) and items 1, 3 (tied) -> position 4; item 4 stays behind.
    assert m["mrr"] == 0.25 and m["recall@1"] == 0.0


def test_tied_relevant_items_put_the_lower_grade_first():
    m = one([0.8, 0.8, 0.3], {0: 1, 1: 3})
    # Both relevant items tie: grade 1 at position 1, grade 3 at position 2.
    # DCG  = 1/log2(2) + 3/log2(3) = 1 + 1.892789 = 2.892789
    # IDCG = 3/log2(2) + 1/log2(3) = 3 + 0.630930 = 3.630930  ->  2.892789 / 3.630930 = 0.796708
    assert m["ndcg@10"] == pytest.approx(0.796708, abs=1e-6)
    assert m["hit@1"] == 1.0 and m["recall@1"] == 0.5 and m["mrr"] == 1.0


def test_scores_within_the_tie_tolerance_count_as_ties():
    # The relevant item leads by 4e-6, less than the tolerance (1e-5): a tie, so it goes second.
    assert one([0.500004, 0.5, 0.0], {0: 1})["mrr"] == 0.5
    assert one([0.500004, 0.5, 0.0], {0: 1}, tie_tolerance=0.0)["mrr"] == 1.0
    assert one([0.5001, 0.5, 0.0], {0: 1})["mrr"] == 1.0  # a real lead of 1e-4


def test_qrels_score_zero_is_not_relevant():
    m = one([0.9, 0.5, 0.4], {0: 0, 2: 1})
    # Item 0 is judged but not relevant: it ranks ahead -> the relevant item is at position 3.
    assert m["hit@1"] == 0.0 and m["mrr"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx(0.5)  # 1/log2(4) over an ideal of 1
    assert Judgements.from_qrels([{0: 0, 2: 1}]).n_relevant.tolist() == [1]


def test_cutoffs_at_10_but_mrr_over_the_full_ranking():
    scores = np.linspace(1.0, 0.0, 12)
    m = one(scores, {10: 1})
    # Position 11: outside the top 10 for recall and nDCG, but MRR = 1/11.
    assert m["recall@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 11)


def test_failed_items_never_rank_ahead_of_anything():
    # NaN marks an item that failed to encode: it scores -inf.
    m = one([np.nan, 0.2, 0.1], {0: 1})  # the relevant item failed: after both others -> position 3
    assert m["mrr"] == pytest.approx(1 / 3)
    m = one([np.nan, np.nan, 0.1], {0: 1})  # failed relevant and failed non-relevant tie: relevant last
    assert m["mrr"] == pytest.approx(1 / 3)
    m = one([np.nan, 0.2, 0.1], {2: 1})  # a failed non-relevant item stays behind
    assert m["mrr"] == 0.5


def test_a_constant_model_scores_below_chance_not_on_a_lucky_value():
    rng = np.random.default_rng(0)
    n_queries, n_candidates = 50, 10
    qrels = [{int(rng.integers(n_candidates)): 1} for _ in range(n_queries)]
    out = mean_metrics(metrics_from_scores(np.full((n_queries, n_candidates), 0.3), qrels))
    # Every relevant item is behind the 9 non-relevant ones: position 10 for every query.
    assert out["hit@1"] == 0.0 and out["recall@5"] == 0.0
    assert out["mrr"] == pytest.approx(0.1)
    assert out["ndcg@10"] == pytest.approx(1 / math.log2(11))
    assert chance_hit_at_1(np.ones(n_queries), n_candidates) == pytest.approx(0.1)


def test_metrics_from_positions_directly():
    positions = np.array([[1, 3, 0], [2, 0, 0], [0, 0, 0]])
    grades = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    m = metrics_from_positions(positions, grades)
    assert m["hit@1"].tolist() == [1.0, 0.0, 0.0]
    assert m["recall@1"].tolist() == [0.5, 0.0, 0.0]
    assert m["mrr"].tolist() == [1.0, 0.5, 0.0]  # a query without relevant items scores 0
    assert set(m) == set(METRICS)


def test_chance_is_the_mean_relevant_fraction():
    # Two queries over 8 candidates with 1 and 3 relevant: (1/8 + 3/8) / 2 = 0.25.
    assert chance_hit_at_1(np.array([1, 3]), 8) == 0.25
    assert math.isnan(chance_hit_at_1(np.array([]), 8))


def test_mean_metrics_of_no_queries_is_nan():
    out = mean_metrics({"hit@1": np.zeros(0)})
    assert math.isnan(out["hit@1"])
