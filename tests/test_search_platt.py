"""The "platt" modality calibration: fitted on judged queries, stored with the model, recorded with the
collection by the indexer, exact in Searcher, and fitted on dev / scored on test by `omnisdk eval`."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from omnisdk.cli import main
from omnisdk.eval.metrics import metrics_from_scores
from omnisdk.search import Indexer, Searcher
from omnisdk.search.calibration import fit_calibration, refresh_calibration, stored_calibration
from omnisdk.search.platt import FILE, PlattParams, fit_logistic, fit_platt, load_platt, save_platt
from omnisdk.store import StoredPoint, ensure_collection, open_store

DIM = 48


def test_fit_logistic_recovers_the_slope_and_bias_of_a_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 40_000)
    y = rng.random(40_000) < 1 / (1 + np.exp(-(8 * x - 2)))
    slope, bias = fit_logistic(x, y)
    assert slope == pytest.approx(8, rel=0.08) and bias == pytest.approx(-2, abs=0.15)
    # labels that fall with the score would give a negative slope: clamped, so the map stays increasing
    assert fit_logistic(x, x < 0)[0] > 0


def _gapped(topics: int = 80, seed: int = 0, dim: int = DIM):
    """Text queries; each topic has one relevant caption and one relevant image. Every caption leans
    on a shared direction the queries lean on too, so other topics' captions outscore the relevant
    image (a modality gap)."""
    rng = np.random.default_rng(seed)
    unit = lambda v: (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    topic = unit(rng.standard_normal((topics, dim)))
    gap = unit(rng.standard_normal(dim))
    queries = unit(topic + 2 * gap + 0.05 * rng.standard_normal((topics, dim)))
    captions = unit(topic + 2 * gap + 0.1 * rng.standard_normal((topics, dim)))
    images = unit(topic + 0.1 * rng.standard_normal((topics, dim)))
    pool = np.concatenate([captions, images])
    labels = ["text"] * topics + ["image"] * topics
    qrels = [{k: 1, topics + k: 1} for k in range(topics)]
    return queries, pool, labels, qrels


def _ndcg(scores, qrels) -> float:
    return float(np.mean(metrics_from_scores(scores, qrels)["ndcg@10"]))


def test_platt_fitted_on_dev_queries_lifts_the_gapped_modality_on_test_queries():
    queries, pool, labels, qrels = _gapped()
    dev, test = slice(0, 40), slice(40, 80)
    params = fit_platt([("text", queries[dev], pool, labels, qrels[dev])], fitted_on="synthetic dev")
    assert set(params.per_query["text"]) == {"text", "image"} and params.fitted_on == "synthetic dev"
    calibration = fit_calibration(pool, labels, method="platt", platt=params)
    raw = queries[test] @ pool.T
    fixed = calibration.apply(queries[test], raw, labels, "text")
    top = np.argsort(-fixed, axis=1, kind="stable")[:, :10]
    assert (np.array(labels)[np.argsort(-raw, axis=1)[:, :10]] == "text").all()  # raw: captions only
    assert (np.array(labels)[top] == "image").mean() > 0.3
    assert _ndcg(fixed, qrels[test]) > _ndcg(raw, qrels[test]) + 0.1
    # the map is slope * raw + bias per modality: each modality keeps its order
    for m in ("text", "image"):
        a, b = params.per_query["text"][m]
        columns = np.array(labels) == m
        assert np.allclose(fixed[:, columns], a * raw[:, columns] + b, atol=1e-4)


def test_a_modality_without_relevant_pairs_takes_the_pooled_fit_and_an_unfitted_query_modality_falls_back():
    queries, pool, labels, qrels = _gapped(topics=30)
    labels = labels + ["audio"] * 5  # audio items, never relevant
    pool = np.concatenate([pool, pool[:5]])
    params = fit_platt([("text", queries, pool, labels, qrels)])
    assert "audio" not in params.per_query["text"]
    assert np.allclose(params.coefficients("text", ["audio"])[0], params.pooled["text"])
    assert params.coefficients("image", ["audio"]) is None
    platt = fit_calibration(pool, labels, method="platt", platt=params)
    zscore = fit_calibration(pool, labels, method="zscore")
    raw = queries @ pool.T
    assert np.allclose(platt.apply(queries, raw, labels, "image"), zscore.apply(queries, raw, labels))
    with pytest.raises(ValueError, match="needs fitted parameters"):
        fit_calibration(pool, labels, method="platt")


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(modalities=["text", "image"])


@pytest.fixture
def collection(model):
    queries, vectors, labels, qrels = _gapped(dim=model.dim)
    params = fit_platt([("text", queries[:40], vectors, labels, qrels[:40])])
    store = open_store(":memory:")
    ensure_collection(store, "mixed", dim=model.dim, fingerprint=model.fingerprint)
    points = [StoredPoint(str(uuid.UUID(int=i + 1)), v.tolist(), {"modality": m, "source": f"{m}-{i}"})
              for i, (v, m) in enumerate(zip(vectors, labels))]
    store.upsert("mixed", points)
    refresh_calibration(store, "mixed", platt=params)
    yield store, points, vectors, labels, params, queries[60]
    store.close()


def test_platt_search_is_exact_and_one_modality_is_unchanged(model, collection):
    store, points, vectors, labels, params, query = collection
    calibration = stored_calibration(store.get_meta("mixed"))
    assert calibration.method == "platt" and calibration.platt == params
    hits = Searcher(store, "mixed", model).search_vector(query, limit=10, query_modality="text")
    expected = calibration.apply(query[None], (vectors @ query)[None], labels, "text")[0]
    assert [h.id for h in hits] == [points[i].id for i in np.argsort(-expected, kind="stable")[:10]]
    assert {h.modality for h in hits} == {"text", "image"}
    for h in hits:
        a, b = params.per_query["text"][h.modality]
        assert h.calibrated == pytest.approx(a * h.score + b, abs=1e-3)
    for modality in ("text", "image"):
        on = Searcher(store, "mixed", model).search_vector(query, limit=7, modalities=[modality])
        off = Searcher(store, "mixed", model, calibrate=False).search_vector(query, limit=7, modalities=[modality])
        assert [h.id for h in on] == [h.id for h in off]
    # refreshing without parameters keeps the recorded ones
    refresh_calibration(store, "mixed")
    assert stored_calibration(store.get_meta("mixed")).platt == params


def test_the_indexer_records_the_models_platt_and_search_uses_it(model, tmp_path):
    from PIL import Image

    model_dir = tmp_path / "model"
    model.save(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a red circle")
    (data / "b.txt").write_text("a blue square")
    Image.new("RGB", (24, 24), (200, 20, 20)).save(data / "red.png")
    params = PlattParams(per_query={"text": {"text": (2.0, -1.0), "image": (30.0, 5.0)}}, pooled={"text": (1.0, 0.0)})
    with open_store(tmp_path / "store") as store:
        Indexer(store, "c", model, model_dir=model_dir, progress=False).index([data])
        assert store.get_meta("c").calibration["method"] == "zscore" and load_platt(model_dir) is None
        assert save_platt(params, model_dir) == model_dir / FILE
        Indexer(store, "c", model, model_dir=model_dir, progress=False).index([data])  # nothing changed but the model's fit
        stored = stored_calibration(store.get_meta("c"))
        assert stored.method == "platt" and stored.platt == params
        hits = Searcher(store, "c", model_dir=model_dir).search("a red circle", limit=3)
        assert hits[0].modality == "image"  # the image's bias of 5 outranks any caption's at most 1
        assert all(h.calibrated == pytest.approx(params.per_query["text"][h.modality][0] * h.score
                                                 + params.per_query["text"][h.modality][1], abs=1e-3) for h in hits)


def _mixed_dataset(root, topics: int = 6):
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 200), "yellow": (230, 220, 40),
               "black": (10, 10, 10), "white": (245, 245, 245)}
    (root / "img").mkdir(parents=True)
    corpus, queries, rows = [], [], {"dev": [], "test": []}
    for i, (name, rgb) in enumerate(list(colours.items())[:topics]):
        Image.new("RGB", (24, 24), rgb).save(root / "img" / f"{name}.png")
        corpus += [{"_id": f"img_{name}", "modality": "image", "path": f"img/{name}.png"},
                   {"_id": f"cap_{name}", "modality": "text", "text": f"a plain {name} square"}]
        split = "dev" if i % 2 == 0 else "test"
        queries.append({"_id": f"q_{name}", "modality": "text", "text": f"a {name} square", "task": "t2x"})
        rows[split] += [(f"q_{name}", f"img_{name}"), (f"q_{name}", f"cap_{name}")]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir()
    for split, pairs in rows.items():
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{c}\t1\n" for q, c in pairs))
    tasks = {"t2x": {"query_modality": "text", "corpus_modality": "mixed"}}
    (root / "dataset.json").write_text(json.dumps({"name": "tiny-mixed", "version": "1", "tasks": tasks}))
    return root


def test_eval_fits_platt_on_dev_scores_test_and_saves_it_with_the_model(model, tmp_path, capsys):
    model_dir, data = tmp_path / "model", _mixed_dataset(tmp_path / "data")
    model.save(model_dir)
    out = tmp_path / "report.json"
    base = ["eval", "--model", str(model_dir), "--data", str(data), "--split", "test", "--no-progress", "--no-cache"]
    assert main([*base, "--save-calibration"]) != 0  # only with --calibrate platt
    assert "--calibrate platt" in capsys.readouterr().err and not (model_dir / FILE).exists()
    assert main([*base, "--calibrate", "platt", "--save-calibration", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["calibrate"] == "platt" and report["settings"]["platt"]["fitted_on"] == "tiny-mixed dev"
    assert report["tasks"][0]["top10_share"] and report["split"] == "test"
    assert load_platt(model_dir) == PlattParams.model_validate(report["settings"]["platt"])
    assert "calibrated: platt" in capsys.readouterr().out
    assert main([*base, "--calibrate", "platt", "--fit-split", "nope"]) != 0
    assert "split 'nope'" in capsys.readouterr().err
