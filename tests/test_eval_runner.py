"""evaluate() on a tiny hand-written dataset: ceiling, chance, degenerate and real encoders, failures."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from media.eval_data import N_T2T_DOCS, write_eval_dataset
from omnisdk.datasets.format import load_dataset
from omnisdk.errors import ItemError, OmniError
from omnisdk.eval.baselines import OracleEncoder, RandomEncoder, item_key
from omnisdk.eval.metrics import METRICS
from omnisdk.eval.report import EvalReport
from omnisdk.eval.runner import Encoder, evaluate


@pytest.fixture
def dataset(tmp_path):
    return load_dataset(write_eval_dataset(tmp_path / "data"))


@pytest.fixture
def broken_dataset(tmp_path):
    return load_dataset(write_eval_dataset(tmp_path / "broken", corrupt_image=True))


class ConstantEncoder:
    """A collapsed model: every item gets the same vector."""

    name = "constant"

    def encode(self, items, *, batch_size=32, role=None, show_progress=None, errors="warn", return_errors=False):
        out = np.full((len(list(items)), 8), 1 / math.sqrt(8), dtype=np.float32)
        return (out, []) if return_errors else out


class FailingOracle(OracleEncoder):
    """The oracle, except that files named broken.png fail the way a real decoder reports it."""

    def encode(self, items, **kwargs):
        items = list(items)
        out, errors = super().encode(items, **{**kwargs, "return_errors": True})
        for i, item in enumerate(items):
            if item.path is not None and item.path.name == "broken.png":
                out[i] = np.nan
                errors.append(ItemError(i, item, "cannot identify image file"))
        return out, errors


def test_the_oracle_reaches_every_ceiling(dataset):
    report = evaluate(OracleEncoder(dataset), dataset)
    for task in report.tasks:
        for name in METRICS:
            expected = 1.0
            if task.task == "t2i" and name == "recall@1":
                # The red query has 2 relevant images, so its best R@1 is 1/2: (1/2 + 5 * 1) / 6 = 11/12.
                expected = 11 / 12
            assert task.metrics[name] == expected, (task.task, name)
    assert report.macro["hit@1"] == 1.0 and report.modalities["image"]["ndcg@10"] == 1.0
    assert report.model == "oracle" and report.failures == []


def test_counts_skips_and_chance(dataset):
    report = evaluate(RandomEncoder(), dataset)
    tasks = {t.task: t for t in report.tasks}
    assert [t.task for t in report.tasks] == ["t2i", "i2t", "t2t"]
    assert (tasks["t2i"].n_queries, tasks["t2i"].n_candidates) == (6, 6)
    assert tasks["i2t"].skipped_queries == 1 and tasks["i2t"].n_queries == 6  # the orphan query
    # t2i chance: the red query has 2 relevant of 6, the others 1 of 6: (2/6 + 5/6) / 6 = 7/36.
    assert tasks["t2i"].chance == pytest.approx(7 / 36)
    assert tasks["t2t"].chance == pytest.approx(1 / N_T2T_DOCS)
    assert {t.modality for t in report.tasks} == {"image", "text"}  # i2t is credited to image
    assert report.macro["chance"] == pytest.approx(np.mean([t.chance for t in report.tasks]))
    assert report.modalities["image"]["hit@1"] == pytest.approx((tasks["t2i"].metrics["hit@1"] + tasks["i2t"].metrics["hit@1"]) / 2)


def test_random_vectors_score_near_chance(dataset):
    t2t = {t.task: t for t in evaluate(RandomEncoder(dim=64, seed=3), dataset).tasks}["t2t"]
    # 120 queries, chance 0.05: the standard error of hit@1 is about 0.02, so 0.1 is a loose bound.
    assert abs(t2t.metrics["hit@1"] - t2t.chance) < 0.1
    assert t2t.metrics["hit@1"] < 0.2 and t2t.metrics["mrr"] < 0.4


def test_a_constant_model_gets_nothing_from_ties(dataset):
    tasks = {t.task: t for t in evaluate(ConstantEncoder(), dataset).tasks}
    assert all(t.metrics["hit@1"] == 0.0 for t in tasks.values())
    # t2t: all 20 candidates tie, the relevant one goes last: MRR = 1/20.
    assert tasks["t2t"].metrics["mrr"] == pytest.approx(1 / 20)
    # t2i: 6 candidates; the red query's 2 relevant items take places 5 and 6, the others place 6:
    # MRR = (1/5 + 5 * 1/6) / 6.
    assert tasks["t2i"].metrics["mrr"] == pytest.approx((1 / 5 + 5 / 6) / 6)


def test_each_item_is_encoded_once_per_role(tmp_path):
    dataset = load_dataset(write_eval_dataset(tmp_path / "shared", shared_captions=True))
    calls: Counter = Counter()

    class Counting(RandomEncoder):
        def encode(self, items, **kwargs):
            items = list(items)
            calls.update((item_key(item), kwargs["role"]) for item in items)
            return super().encode(items, **kwargs)

    assert isinstance(Counting(), Encoder)
    report = evaluate(Counting(), dataset)
    assert max(calls.values()) == 1
    tasks = {t.task: t for t in report.tasks}
    assert tasks["t2t"].n_candidates == N_T2T_DOCS + 6  # the captions serve i2t and t2t
    assert sum(1 for _, role in calls if role == "document") == len(dataset.corpus)


def test_failed_items_are_listed_and_cost_only_themselves(broken_dataset):
    report = evaluate(FailingOracle(broken_dataset), broken_dataset)
    tasks = {t.task: t for t in report.tasks}
    # t2i: 7 queries; the broken query's only relevant image failed, so it can never be found: 6/7.
    assert tasks["t2i"].metrics["hit@1"] == pytest.approx(6 / 7)
    assert tasks["t2i"].failed_candidates == 1
    # i2t: 7 queries; the broken image query failed, a miss: 6/7.
    assert tasks["i2t"].metrics["mrr"] == pytest.approx(6 / 7) and tasks["i2t"].failed_queries == 1
    assert tasks["t2t"].metrics["hit@1"] == 1.0
    failed = {(f.id, f.role): f for f in report.failures}
    assert set(failed) == {("img_broken", "document"), ("q_i2t_broken", "query")}
    assert failed[("img_broken", "document")].path == "img/broken.png"
    assert "cannot identify" in failed[("img_broken", "document")].cause
    assert "2 item(s) failed to encode" in report.to_markdown()


def test_a_tiny_model_survives_a_corrupt_image(broken_dataset, tiny_model_factory):
    model = tiny_model_factory(["text", "image"])
    report = evaluate(model, broken_dataset, batch_size=4, label="tiny")
    assert {(f.id, f.role) for f in report.failures} == {("img_broken", "document"), ("q_i2t_broken", "query")}
    assert all("broken.png" in f.path for f in report.failures)
    for task in report.tasks:
        assert all(0.0 <= task.metrics[m] <= 1.0 for m in METRICS), task
    assert report.model == "tiny" and report.model_fingerprint == model.fingerprint
    assert report.timings["total_s"] >= report.timings["encode_s"] > 0


def test_report_round_trips_through_json(dataset, tmp_path):
    report = evaluate(RandomEncoder(), dataset, tasks="t2i,t2t")
    again = EvalReport.from_json(report.to_json(tmp_path / "r.json"))
    assert again == EvalReport.from_json(tmp_path / "r.json")
    assert again.model_dump() == report.model_dump()
    assert [t.task for t in again.tasks] == ["t2i", "t2t"]
    assert again.dataset == "tiny-eval" and again.dataset_hash == dataset.content_hash()


def test_unknown_task_and_split_name_the_valid_ones(dataset):
    with pytest.raises(OmniError, match=r"unknown task 'x2y'.*valid tasks: t2i, i2t, t2t"):
        evaluate(RandomEncoder(), dataset, tasks=["x2y"])
    with pytest.raises(OmniError, match=r"no split 'dev' \(splits: test\)"):
        evaluate(RandomEncoder(), dataset, split="dev")
