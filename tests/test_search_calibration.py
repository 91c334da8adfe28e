"""Search with the per-modality calibration: stored by the indexer, used by Searcher and the CLI, switchable."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from omnisdk.cli import main
from omnisdk.search import Indexer, Searcher
from omnisdk.search.calibration import refresh_calibration, stored_calibration
from omnisdk.store import StoredPoint, ensure_collection, open_store


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(modalities=["text", "image", "audio"])


def _gapped_points(dim: int, n_per: int = 200, seed: int = 0):
    """Text vectors sit close to the query direction's cluster, image and audio ones far: a gap."""
    rng = np.random.default_rng(seed)
    centres = {m: rng.standard_normal(dim) for m in ("text", "image", "audio")}
    points = []
    for m, centre in centres.items():
        for i in range(n_per):
            v = centre * 3 + rng.standard_normal(dim)
            points.append(StoredPoint(str(uuid.uuid4()), (v / np.linalg.norm(v)).tolist(), {"modality": m, "source": f"{m}-{i}"}))
    return points, centres


@pytest.fixture
def collection(model):
    store = open_store(":memory:")
    ensure_collection(store, "mixed", dim=model.dim, fingerprint=model.fingerprint)
    points, centres = _gapped_points(model.dim)
    store.upsert("mixed", points)
    refresh_calibration(store, "mixed")
    yield store, points, centres
    store.close()


def test_calibrated_search_mixes_modalities_and_is_exact(model, collection):
    store, points, centres = collection
    query = centres["text"] * 3 + np.random.default_rng(1).standard_normal(model.dim)
    query = (query / np.linalg.norm(query)).astype(np.float32)
    raw = Searcher(store, "mixed", model, calibrate=False).search_vector(query, limit=10)
    assert {h.modality for h in raw} == {"text"} and all(h.calibrated is None for h in raw)
    fixed = Searcher(store, "mixed", model).search_vector(query, limit=10)
    assert len({h.modality for h in fixed}) >= 2  # no longer one modality first
    # exact: the same top 10 as calibrating every point by hand
    calibration = stored_calibration(store.get_meta("mixed"))
    vectors = np.array([p.vector for p in points], dtype=np.float32)
    labels = [p.payload["modality"] for p in points]
    z = calibration.apply(query[None], (vectors @ query)[None], labels)[0]
    assert [h.id for h in fixed] == [points[i].id for i in np.argsort(-z, kind="stable")[:10]]
    assert [h.calibrated for h in fixed] == sorted((h.calibrated for h in fixed), reverse=True)
    index = {p.id: i for i, p in enumerate(points)}
    assert all(abs(h.score - float(vectors[index[h.id]] @ query)) < 1e-4 for h in fixed)  # score stays the cosine


def test_one_modality_gives_the_same_hits_calibrated_or_not(model, collection):
    store, _, centres = collection
    query = (centres["image"] / np.linalg.norm(centres["image"])).astype(np.float32)
    for modality in ("text", "image", "audio"):
        on = Searcher(store, "mixed", model).search_vector(query, limit=7, modalities=[modality])
        off = Searcher(store, "mixed", model, calibrate=False).search_vector(query, limit=7, modalities=[modality])
        assert [h.id for h in on] == [h.id for h in off] and all(h.calibrated is None for h in on)
        assert np.allclose([h.score for h in on], [h.score for h in off], atol=1e-6)  # the local mode's float noise


def test_the_indexer_stores_statistics_and_refreshes_them_when_the_index_changes(model, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a red circle")
    Image.new("RGB", (24, 24), (200, 20, 20)).save(data / "red.png")
    with open_store(tmp_path / "store") as store:
        Indexer(store, "c", model, progress=False).index([data])
        first = store.get_meta("c").calibration
        assert set(first["modalities"]) == {"text", "image"} and first["points"] == 2
        Indexer(store, "c", model, progress=False).index([data])  # nothing changed: nothing recomputed
        assert store.get_meta("c").calibration == first
        (data / "b.txt").write_text("a blue square")
        Indexer(store, "c", model, progress=False).index([data])
        assert store.get_meta("c").calibration["points"] == 3
    with open_store(tmp_path / "store") as store:  # persisted with the collection
        assert store.get_meta("c").calibration["points"] == 3


def test_search_cli_calibrates_by_default_and_no_calibrate_turns_it_off(model, tmp_path, capsys):
    from PIL import Image

    model.save(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(["a red circle", "a green square", "three beeps"]):
        (data / f"{i}.txt").write_text(text)
    for name, rgb in {"red": (220, 30, 30), "green": (30, 180, 60)}.items():
        Image.new("RGB", (24, 24), rgb).save(data / f"{name}.png")
    store = tmp_path / "store"
    assert main(["index", str(data), "--model", str(tmp_path / "model"), "--collection", "c", "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    base = ["search", "a red circle", "--collection", "c", "--store", str(store), "--json"]
    assert main(base) == 0
    on = json.loads(capsys.readouterr().out)["hits"]
    assert main([*base, "--no-calibrate"]) == 0
    off = json.loads(capsys.readouterr().out)["hits"]
    assert all("calibrated" in h for h in on) and not any("calibrated" in h for h in off)
    assert sorted(h["id"] for h in on) == sorted(h["id"] for h in off)  # 5 points, limit 10: all of them
    assert main([*base, "--modality", "image"]) == 0
    image_on = json.loads(capsys.readouterr().out)["hits"]
    assert main([*base, "--modality", "image", "--no-calibrate"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == image_on
    assert main(base[:-1]) == 0
    assert "| rank | calibrated | cosine |" in capsys.readouterr().out


def test_statistics_of_another_collection_size_are_not_used(model, collection):
    store, points, centres = collection
    query = (centres["audio"] / np.linalg.norm(centres["audio"])).astype(np.float32)
    assert Searcher(store, "mixed", model).search_vector(query, limit=3)[0].calibrated is not None
    extra = np.random.default_rng(5).standard_normal(model.dim)
    store.upsert("mixed", [StoredPoint(str(uuid.uuid4()), (extra / np.linalg.norm(extra)).tolist(), {"modality": "text"})])
    stale = Searcher(store, "mixed", model).search_vector(query, limit=3)  # written outside the indexer
    assert all(h.calibrated is None for h in stale)
    refresh_calibration(store, "mixed")
    assert Searcher(store, "mixed", model).search_vector(query, limit=3)[0].calibrated is not None
    # a filter naming a modality the collection lacks still calibrates the others
    hits = Searcher(store, "mixed", model).search_vector(query, limit=5, modalities=["text", "image", "video"])
    assert {h.modality for h in hits} <= {"text", "image"} and hits[0].calibrated is not None


def _reference_top(query: np.ndarray, points, calibration, limit: int) -> list[tuple[str, float]]:
    """(id, calibrated) best first, the straightforward way: every point scored, each modality's
    statistics applied by their definition (mean q.mu, variance q'Cq with C = sum v_k c_k c_k' +
    residual on the rest), sorted."""
    zs = []
    for p in points:
        stats = calibration.modalities[p.payload["modality"]]
        mean, components, variances = (a.astype(np.float64) for a in stats.arrays(calibration.dim))
        q = query.astype(np.float64)
        along = components @ q
        variance = float(variances @ along**2 + stats.residual * max(q @ q - along @ along, 0.0))
        raw = float(np.asarray(p.vector, np.float64) @ q)
        zs.append((p.id, (raw - q @ mean) / max(np.sqrt(max(variance, 0.0)), 1e-4)))
    return sorted(zs, key=lambda row: -row[1])[:limit]


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_calibrated_search_equals_scoring_every_point_by_the_definition(model, tmp_path, backend):
    """Exact on both stores, with full payloads, whether or not the wide query needs per-modality fetches."""
    store = open_store(tmp_path / "store" if backend == "edge" else ":memory:")
    ensure_collection(store, "mixed", dim=model.dim, fingerprint=model.fingerprint)
    points, centres = _gapped_points(model.dim, n_per=150, seed=3)
    for i, p in enumerate(points):
        p.payload.update({"locator": {"page": i % 7 + 1}, "sha256": f"{i:064x}"})
    store.upsert("mixed", points)
    calibration = refresh_calibration(store, "mixed")
    by_id = {p.id: p for p in points}
    searcher = Searcher(store, "mixed", model)
    rng = np.random.default_rng(4)
    for i in range(6):  # queries near one modality's cluster (a gap: fetches needed) and random ones
        centre = centres[("text", "image", "audio")[i % 3]] if i < 3 else np.zeros(model.dim)
        query = (centre * 3 + rng.standard_normal(model.dim)).astype(np.float32)
        query /= np.linalg.norm(query)
        for limit in (1, 10, 25):
            hits = searcher.search_vector(query, limit=limit)
            reference = _reference_top(query, points, calibration, limit)
            assert [h.id for h in hits] == [pid for pid, _ in reference], (i, limit)
            assert np.allclose([h.calibrated for h in hits], [z for _, z in reference], atol=1e-4)
            assert all(h.payload == by_id[h.id].payload for h in hits)  # the whole payload, not only the modality
            assert all(abs(h.score - float(np.asarray(by_id[h.id].vector) @ query)) < 1e-4 for h in hits)
    store.close()
