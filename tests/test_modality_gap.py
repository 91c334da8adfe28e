"""The modality gap (issue 16): OmniWorld's mixed-corpus tasks, their modality shares, and the
per-modality score calibration that eval, the indexer, the store and search share."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from omnisdk.datasets.format import MIXED, load_dataset
from omnisdk.eval.baselines import OracleEncoder
from omnisdk.eval.runner import evaluate
from omnisdk.search.calibration import fit_calibration, merge_top

MODALITIES = ("text", "image", "video", "document", "audio")


@pytest.fixture(scope="module")
def omniworld(tmp_path_factory):
    from omnisdk.datasets.omniworld.build import make_omniworld

    root = tmp_path_factory.mktemp("ow") / "tiny"
    make_omniworld(root, size="tiny")
    return root


class GappedEncoder:
    """The oracle with a modality gap: every vector leans toward its modality's own direction.

    Same-modality pairs then gain `gap` on top of their oracle score, so a mixed pool ranks the
    query's own modality first, which is what a real model with a modality gap does.
    """

    def __init__(self, dataset, split: str, gap: float = 0.6, seed: int = 0):
        self.oracle = OracleEncoder(dataset, split)
        rng = np.random.default_rng(seed)
        self.extra = len(MODALITIES) + 8
        self.directions = {m: rng.standard_normal(self.extra) for m in MODALITIES}
        self.gap = gap
        self.dim = self.oracle.dim + self.extra
        self.name, self.fingerprint = "gapped-oracle", "gapped"

    def encode(self, items, *, role=None, return_errors=False, **kwargs):
        items = list(items)
        base, errors = self.oracle.encode(items, role=role, return_errors=True, errors="ignore")
        lean = np.stack([self.directions[i.modality] / np.linalg.norm(self.directions[i.modality]) for i in items])
        out = np.concatenate([base, np.sqrt(self.gap) * lean], axis=1)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return (out.astype(np.float32), errors) if return_errors else out.astype(np.float32)


# -- the benchmark tasks -------------------------------------------------------------------------------
def test_mixed_tasks_rank_the_whole_corpus_and_judge_items_of_several_modalities(omniworld):
    data = load_dataset(omniworld)
    for task, query_modality in (("t2x", "text"), ("a2x", "audio")):
        assert data.tasks[task].corpus_modality == MIXED and data.tasks[task].query_modality == query_modality
        assert len(data.candidates(task)) == len(data.corpus)
        pool_paths = {r.path for r in data.corpus.values() if r.path}
        judged = set()
        for split in ("dev", "test"):
            queries = data.task_queries(task, split)
            assert queries
            for q in queries:
                assert q.path not in pool_paths or q.path is None  # a query never finds itself
                judged |= {data.corpus[c].modality for c in data.qrels[split][q.id]}
        assert len(judged) >= (5 if task == "t2x" else 2), (task, judged)
    # a scene's paraphrase finds its picture and its caption, exactly (grade 2)
    q = next(q for q in data.task_queries("t2x", "test") if q.id.startswith("t2x-scenes"))
    grades = data.qrels["test"][q.id]
    scene = q.id.removeprefix("t2x-").rsplit("-", 1)[0]
    assert grades[scene] == 2 and [g for c, g in grades.items() if c.startswith("caption-")] == [2]


def test_mixed_tasks_only_append_to_the_single_modality_files(omniworld, tmp_path, monkeypatch):
    from omnisdk.datasets.omniworld import build

    monkeypatch.setattr(build, "add_mixed_tasks", lambda *args: None)
    build.make_omniworld(tmp_path / "before", size="tiny")
    old, new = tmp_path / "before", omniworld
    assert (old / "corpus.jsonl").read_bytes() == (new / "corpus.jsonl").read_bytes()
    for name in ("queries.jsonl", "qrels/dev.tsv", "qrels/test.tsv"):
        before, after = (old / name).read_bytes(), (new / name).read_bytes()
        assert after.startswith(before) and len(after) > len(before), name
    files_old = json.loads((old / "dataset.json").read_text())["files"]
    files_new = json.loads((new / "dataset.json").read_text())["files"]
    changed = {f for f in files_old if files_old[f] != files_new[f]}
    assert changed == {"queries.jsonl", "qrels/dev.tsv", "qrels/test.tsv"}


# -- eval: shares, and the correction chosen on dev ---------------------------------------------------
def test_eval_reports_modality_shares_and_calibration_closes_a_gap(omniworld):
    data = load_dataset(omniworld)
    encoder = GappedEncoder(data, "dev", gap=1.5)
    raw = evaluate(encoder, data, split="dev", tasks=["t2x", "a2x", "t2i"], show_progress=False)
    fixed = evaluate(encoder, data, split="dev", tasks=["t2x", "a2x", "t2i"], show_progress=False, calibrate="zscore")
    by_raw, by_fixed = {t.task: t for t in raw.tasks}, {t.task: t for t in fixed.tasks}
    t2x = by_raw["t2x"]
    assert t2x.top10_share["text"] > t2x.relevant_share["text"] + 0.3  # the gap: text fills the top 10
    assert abs(sum(t2x.relevant_share.values()) - 1) < 1e-3 and not by_raw["t2i"].top10_share
    for task in ("t2x", "a2x"):
        assert by_fixed[task].metrics["ndcg@10"] > by_raw[task].metrics["ndcg@10"] + 0.1, task
        worst = max(abs(by_fixed[task].top10_share.get(m, 0) - s) for m, s in by_fixed[task].relevant_share.items())
        assert worst < max(abs(by_raw[task].top10_share.get(m, 0) - s) for m, s in by_raw[task].relevant_share.items())
    # a one-modality pool is untouched by the correction
    assert by_fixed["t2i"].metrics == by_raw["t2i"].metrics
    markdown = fixed.to_markdown()
    assert "modality share of the top 10" in markdown and "calibrated: zscore" in markdown
    assert raw.macro["ndcg@10"] == pytest.approx(by_raw["t2i"].metrics["ndcg@10"])  # mixed tasks kept out of the macro


# -- the correction itself ----------------------------------------------------------------------------
def _gapped_vectors(n_per: int = 60, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = ["text", "image", "audio"]
    offsets = {m: rng.standard_normal(dim) * s for m, s in zip(names, (2.0, 0.5, 1.0))}
    rows, labels = [], []
    for m in names:
        block = rng.standard_normal((n_per, dim)) + offsets[m]
        rows.append(block / np.linalg.norm(block, axis=1, keepdims=True))
        labels += [m] * n_per
    return np.concatenate(rows).astype(np.float32), labels


def test_zscore_is_each_modalitys_exact_standardisation_and_keeps_its_order():
    vectors, labels = _gapped_vectors()
    calibration = fit_calibration(vectors, labels, rank=24, prior=0)
    queries = vectors[:5]
    raw = queries @ vectors.T
    z = calibration.apply(queries, raw, labels)
    for m in set(labels):
        cols = np.asarray(labels) == m
        assert np.allclose(z[:, cols].mean(axis=1), 0, atol=1e-4) and np.allclose(z[:, cols].std(axis=1), 1, atol=1e-3)
        assert (np.argsort(-z[:, cols], axis=1, kind="stable") == np.argsort(-raw[:, cols], axis=1, kind="stable")).all()


def test_merging_each_modalitys_top_k_is_the_exact_calibrated_top_k():
    vectors, labels = _gapped_vectors()
    for method in ("zscore", "center"):
        calibration = fit_calibration(vectors, labels, method=method, rank=4, prior=8)
        query = vectors[7] + 0.3 * vectors[100]
        raw = vectors @ query
        z = calibration.apply(query[None], raw[None], labels)[0]
        per_modality = {}
        for m in ("text", "image", "audio"):
            idx = [i for i in np.argsort(-raw, kind="stable") if labels[i] == m][:10]
            per_modality[m] = [(float(raw[i]), int(i)) for i in idx]
        merged = merge_top(per_modality, query, calibration, 10)
        assert [hit for _, _, hit in merged] == list(np.argsort(-z, kind="stable")[:10])
        assert np.allclose([c for c, _, _ in merged], np.sort(z)[::-1][:10], atol=1e-5)


def test_calibration_survives_its_json_round_trip():
    from omnisdk.search.calibration import Calibration

    vectors, labels = _gapped_vectors()
    calibration = fit_calibration(vectors, labels)
    again = Calibration.model_validate(json.loads(calibration.model_dump_json()))
    assert np.array_equal(again.apply(vectors[:3], vectors[:3] @ vectors.T, labels),
                          calibration.apply(vectors[:3], vectors[:3] @ vectors.T, labels))
    assert len(calibration.model_dump_json()) < 60_000  # small enough for any store's metadata


def test_dataset_hash_covers_the_mixed_rows(omniworld):
    meta = json.loads((omniworld / "dataset.json").read_text())
    assert {"t2x", "a2x"} <= set(meta["tasks"])
    digest = hashlib.sha256((omniworld / "queries.jsonl").read_bytes()).hexdigest()
    assert meta["files"]["queries.jsonl"] == digest


def test_a_modality_of_one_item_is_shrunk_toward_the_pooled_statistics():
    vectors, labels = _gapped_vectors()
    lone = vectors[:1]  # one text item among many images and sounds: its own spread is zero
    vectors, labels = np.concatenate([lone, vectors[60:]]), ["text"] + labels[60:]
    for prior in (32.0, 0.0):
        calibration = fit_calibration(vectors, labels, prior=prior)
        z = calibration.apply(lone, lone @ vectors.T, labels)[0]
        # with the prior, searching for the item itself finds it first; without, it sits at z = 0
        assert (int(np.argmax(z)) == 0) == (prior > 0), prior


def test_one_wide_query_plus_needed_fetches_is_the_exact_calibrated_top_k():
    from omnisdk.search.calibration import calibrated_top

    vectors, labels = _gapped_vectors(n_per=200)
    calibration = fit_calibration(vectors, labels, rank=4)
    order_of = {}
    for seed in range(5):
        query = vectors[seed * 97] + 0.5 * np.random.default_rng(seed).standard_normal(vectors.shape[1])
        raw = vectors @ query
        ranked = np.argsort(-raw, kind="stable")
        fetched = []

        def fetch(m):
            fetched.append(m)
            return [(float(raw[i]), int(i)) for i in ranked if labels[i] == m][:10]

        for pool in (10, 40, 1000):
            fetched.clear()
            first = [(float(raw[i]), labels[i], int(i)) for i in ranked[:pool]]
            got = [hit for _, _, hit in calibrated_top(query, first, pool, calibration, 10, fetch)]
            z = calibration.apply(query[None], raw[None], labels)[0]
            assert got == list(np.argsort(-z, kind="stable")[:10]), (seed, pool)
            order_of[(seed, pool)] = len(fetched)
    assert all(order_of[(s, 1000)] == 0 for s in range(5))  # the whole collection came back: no fetch
    assert any(order_of[(s, 10)] > 0 for s in range(5))  # a narrow first query needs the fallback
