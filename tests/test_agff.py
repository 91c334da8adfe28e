"""AGFF-Embed: K aspect vectors per item from one forward pass, the learned log-sum-exp aggregation,
training with it, storage as Qdrant multivectors on both backends, search rescoring, eval."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisdk import aggregation
from omnisdk.model import OmniModel

K = 3
TEXTS = ["a red circle on the left", "a blue square on the right", "a green triangle", "two yellow stars"]


@pytest.fixture(scope="module")
def agff_dir(tmp_path_factory):
    """A tiny random text+image model with --aspects 3, through the CLI."""
    from omnisdk.cli import main

    out = tmp_path_factory.mktemp("agff") / "model"
    assert main(["init", "--preset", "tiny", "--modalities", "text,image", "--aspects", str(K), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def agff_model(agff_dir):
    return OmniModel.load(agff_dir)


# -- model --------------------------------------------------------------------------------------------
def test_aspect_vectors_have_the_right_shapes_and_the_default_stays_one_vector(agff_model):
    assert agff_model.embedding_kind == "agff" and agff_model.aspect_count == K
    single = agff_model.encode(TEXTS)
    aspects = agff_model.encode(TEXTS, aspects=True)
    assert single.shape == (len(TEXTS), agff_model.dim)
    assert aspects.shape == (len(TEXTS), K, agff_model.dim)
    np.testing.assert_allclose(np.linalg.norm(aspects, axis=-1), 1.0, atol=1e-5)
    mean = aspects.mean(axis=1)
    np.testing.assert_allclose(single, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    # the K aspects of one item differ: they come from different tokens
    assert np.abs(aspects[:, 0] - aspects[:, 1]).max() > 1e-3


def test_the_aspects_come_from_one_forward_pass(agff_model):
    calls = []
    handle = agff_model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        agff_model.encode(TEXTS[:2], aspects=True, batch_size=8)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_aspect_tokens_start_from_the_plugins_prompts(agff_dir, agff_model):
    from omnisdk.checkpoint import read_manifest
    from plugins.text import TextPlugin

    spec = read_manifest(agff_dir).backbone.aspects
    assert spec.count == K and spec.prompts["text"] == list(TextPlugin.aspect_prompts[:K])
    assert set(spec.prompts) == {"text", "image"}
    fresh = OmniModel.load(agff_dir)  # untrained: the tokens are still the prompts' mean word embeddings
    words = fresh.backbone.get_input_embeddings()
    ids = fresh.tokenizer(spec.prompts["text"][1], add_special_tokens=False)["input_ids"]
    expected = words(torch.tensor(ids)).mean(0)
    torch.testing.assert_close(fresh.aspect_tokens.tokens("text")[1].detach(), expected.detach())


def test_save_and_load_round_trip_keeps_kind_and_vectors(agff_model, tmp_path):
    before = agff_model.encode(TEXTS, aspects=True)
    agff_model.save(tmp_path / "copy")
    again = OmniModel.load(tmp_path / "copy")
    assert again.embedding_kind == "agff" and again.spec.aspects == agff_model.spec.aspects
    np.testing.assert_array_equal(again.encode(TEXTS, aspects=True), before)
    assert again.fingerprint == agff_model.fingerprint


def test_a_single_vector_model_refuses_aspects(tiny_model_factory):
    from omnisdk.errors import OmniError

    plain = tiny_model_factory(["text"])
    assert plain.embedding_kind == "single" and plain.aspect_count == 0
    with pytest.raises(OmniError, match="--aspects"):
        plain.encode(["x"], aspects=True)


def test_cli_prompt_override_and_diagonal_pairs(tmp_path):
    from omnisdk.checkpoint import read_manifest
    from omnisdk.cli import main

    out = tmp_path / "m"
    assert main(["init", "--preset", "tiny", "--modalities", "text", "--aspects", "2", "--aspect-pairs", "diagonal",
                 "--aspect-prompt", "text=gist|details", "--out", str(out)]) == 0
    spec = read_manifest(out).backbone.aspects
    assert spec.prompts["text"] == ["gist", "details"] and spec.pairs == "diagonal"
    assert OmniModel.load(out).aspect_tokens.weight_logits.shape == (2,)


# -- aggregation --------------------------------------------------------------------------------------
def test_aggregation_matches_the_hand_computation():
    sims = torch.tensor([0.9, 0.2, -0.1])
    tau, beta = 0.5, torch.tensor([0.0, 1.0, -1.0])
    w = [math.exp(b) for b in beta.tolist()]
    w = [x / sum(w) for x in w]
    expected = tau * math.log(sum(wi * math.exp(s / tau) for wi, s in zip(w, sims.tolist())))
    got = aggregation.aggregate(sims, torch.tensor([math.log(tau)]), beta)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    uniform = aggregation.aggregate(sims, torch.tensor([math.log(tau)]))
    assert uniform.item() == pytest.approx(tau * math.log(sum(math.exp(s / tau) for s in sims.tolist()) / 3), abs=1e-6)


def test_aggregation_lies_between_weighted_mean_and_max_and_glides_with_tau():
    torch.manual_seed(0)
    sims = torch.rand(50, 4) * 2 - 1
    beta = torch.randn(4)
    w = torch.softmax(beta, 0)
    for tau in (0.01, 0.1, 1.0, 5.0):
        s = aggregation.aggregate(sims, torch.tensor([math.log(tau)]), beta)
        assert (s <= sims.max(1).values + 1e-6).all()
        assert (s >= (sims * w).sum(1) - 1e-6).all()
    cold = aggregation.aggregate(sims, torch.tensor([math.log(1e-3)]), beta)
    hot = aggregation.aggregate(sims, torch.tensor([math.log(10.0)]), beta)
    assert (cold - sims.max(1).values).abs().max() < 0.01
    assert (hot - (sims * w).sum(1)).abs().max() < 0.05
    equal = aggregation.aggregate(torch.full((4,), 0.3), torch.tensor([math.log(0.1)]))
    assert equal.item() == pytest.approx(0.3, abs=1e-6)  # log-mean-exp: no tau*log|P| offset


def test_aggregation_is_smooth_every_pair_gets_gradient():
    sims = torch.tensor([0.5, 0.4, -0.2], requires_grad=True)
    log_tau = torch.tensor([math.log(0.1)], requires_grad=True)
    aggregation.aggregate(sims, log_tau).backward()
    grad = sims.grad
    assert (grad > 0).all() and grad.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert grad[0] > grad[1] > grad[2]  # softmax of s / tau
    assert log_tau.grad is not None and log_tau.grad.abs().item() > 0


def test_pairs_all_and_diagonal():
    q, d = torch.randn(2, K, 5), torch.randn(4, K, 5)
    full = aggregation.pairwise_sims(q, d, "all")
    diag = aggregation.pairwise_sims(q, d, "diagonal")
    assert full.shape == (2, 4, K * K) and diag.shape == (2, 4, K)
    torch.testing.assert_close(full[1, 2, 0 * K + 2], q[1, 0] @ d[2, 2])
    torch.testing.assert_close(diag[1, 2, 1], q[1, 1] @ d[2, 1])
    torch.testing.assert_close(aggregation.pair_sims(q[1], d[2], "all"), full[1, 2])


def test_model_similarity_uses_the_learned_aggregation(agff_model):
    a = agff_model.encode(TEXTS, aspects=True)
    module = agff_model.aspect_tokens
    sims = agff_model.similarity(a[:2], a)
    qa, da = torch.from_numpy(a[0]), torch.from_numpy(a[3])
    by_hand = aggregation.aggregate((qa @ da.T).flatten(), module.log_temperature.detach(), module.weight_logits.detach())
    assert sims.shape == (2, len(TEXTS)) and sims[0, 3].item() == pytest.approx(by_hand.item(), abs=1e-5)


# -- training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from omnisdk.datasets.omniworld.build import make_omniworld

    data = tmp_path_factory.mktemp("agff-data") / "data"
    make_omniworld(data, domains=("scenes",))
    return data


def test_a_training_step_uses_the_aggregation_and_moves_its_temperature(agff_dir, scenes, tmp_path):
    from safetensors.torch import load_file

    from omnisdk.trainers.stages import train_specialist

    settings = {"steps": 2, "batch_size": 4, "log_every": 1, "hard_negatives": 1, "learning_rate": 1e-2}
    result = train_specialist(agff_dir, "image", scenes, tmp_path / "spec", settings, show_progress=False)
    assert math.isfinite(result.final_loss)
    before, after = load_file(agff_dir / "model.safetensors"), load_file(tmp_path / "spec" / "model.safetensors")
    for name in ("backbone.aspect_tokens.log_temperature", "backbone.aspect_tokens.weight_logits",
                 "backbone.aspect_tokens.embeddings.image"):
        assert not torch.equal(before[name], after[name]), name
    assert OmniModel.load(tmp_path / "spec").embedding_kind == "agff"


def test_ega_composes_with_the_aggregation():
    from omnisdk.trainers.config import TrainConfig
    from omnisdk.trainers.losses import contrastive_loss

    torch.manual_seed(0)
    model_spec = __import__("omnisdk.aspects", fromlist=["AspectSpec"])
    module = model_spec.AspectTokens(model_spec.AspectSpec(count=K, prompts={"text": ["a"] * K}), 8)
    q = torch.nn.functional.normalize(torch.randn(4, K, 8), dim=-1)
    p = torch.nn.functional.normalize(q + 0.3 * torch.randn(4, K, 8), dim=-1)
    hard = torch.nn.functional.normalize(torch.randn(4, 1, K, 8), dim=-1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    plain = contrastive_loss(TrainConfig(), q, p, 0.05, hard, mask, aspects=module)
    amplified = contrastive_loss(TrainConfig(ega={"factor": 4.0, "rule": "topk"}), q, p, 0.05, hard, mask, aspects=module)
    assert plain.item() == pytest.approx(amplified.item(), abs=1e-6)  # EGA changes gradients, not the value
    g1 = torch.autograd.grad(plain, module.log_temperature)[0]
    g2 = torch.autograd.grad(contrastive_loss(TrainConfig(ega={"factor": 4.0, "rule": "topk"}), q, p, 0.05, hard, mask, aspects=module),
                             module.log_temperature)[0]
    assert not torch.allclose(g1, g2)


# -- storage and search -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Text files and images the tiny model can embed."""
    from PIL import Image

    root = tmp_path_factory.mktemp("agff-corpus")
    for i, text in enumerate(TEXTS * 3):
        (root / f"t{i:02d}.txt").write_text(f"{text} number {i}")
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 200, 0), (250, 250, 0)]):
        Image.new("RGB", (32, 32), colour).save(root / f"img{i}.png")
    return root


def _index(model, model_dir, store, corpus):
    from omnisdk.search import Indexer

    report = Indexer(store, "agff", model, model_dir=model_dir, progress=False).index([corpus])
    assert report.indexed == len(list(corpus.iterdir()))
    return report


@pytest.mark.parametrize("limit", [3, 10])
def test_index_and_search_give_the_same_top_k_on_edge_and_memory(agff_model, agff_dir, corpus, tmp_path, limit):
    from omnisdk.search import Searcher
    from omnisdk.store import open_store
    from omnisdk.store.base import ASPECTS, POOLED

    results = {}
    for name, spec in (("edge", str(tmp_path / "edge")), ("memory", ":memory:")):
        with open_store(spec) as store:
            _index(agff_model, agff_dir, store, corpus)
            meta = store.get_meta("agff")
            assert meta.embedding == "agff" and meta.aspects == K
            point = next(store.scroll("agff", with_vectors=True))
            assert np.asarray(point.vector[ASPECTS]).shape == (K, agff_model.dim)
            assert np.asarray(point.vector[POOLED]).shape == (agff_model.dim,)
            searcher = Searcher(store, "agff", agff_model)
            runs = [searcher.search(q, limit=limit) for q in ("a red circle", "two yellow stars")]
            runs.append(searcher.search("a green triangle", limit=limit, modalities=["image"]))
            results[name] = [[(h.source, round(h.score, 4)) for h in run] for run in runs]
            # plain clients: the pooled vector answers a single-vector query
            plain = store.query("agff", agff_model.encode(["a red circle"])[0], limit=3)
            assert len(plain) == 3
    assert results["edge"] == results["memory"]
    assert all(len(run) == limit for run in results["edge"][:2])
    assert all(Path(src).suffix == ".png" for src, _ in results["edge"][2])


def test_search_scores_are_the_exact_aggregation_and_rank_the_whole_collection(agff_model, agff_dir, corpus):
    from omnisdk.search import Searcher
    from omnisdk.store import open_store

    with open_store(":memory:") as store:
        _index(agff_model, agff_dir, store, corpus)
        hits = Searcher(store, "agff", agff_model).search("a blue square", limit=5)
        files = sorted(corpus.iterdir())
        items = agff_model.encode(files, aspects=True, role="document")
        query = agff_model.encode(["a blue square"], aspects=True, role="query")
        truth = agff_model.similarity(query, items)[0].numpy()
        best = np.argsort(-truth, kind="stable")[:5]
        assert [h.source for h in hits] == [str(files[i]) for i in best]
        np.testing.assert_allclose([h.score for h in hits], truth[best], atol=1e-5)


def test_a_model_of_the_other_kind_is_refused(agff_model, agff_dir, corpus, tmp_path, tiny_model_factory):
    from omnisdk.search import Indexer, Searcher
    from omnisdk.store import EmbeddingKindMismatchError, open_store

    plain = tiny_model_factory(["text", "image"])
    plain_dir = tmp_path / "plain"
    plain.save(plain_dir)
    with open_store(str(tmp_path / "store")) as store:
        _index(agff_model, agff_dir, store, corpus)
        with pytest.raises(EmbeddingKindMismatchError, match="holds AGFF embeddings .3 aspect vectors"):
            Indexer(store, "agff", plain)
        with pytest.raises(EmbeddingKindMismatchError, match="the model makes single vectors"):
            Searcher(store, "agff", model_dir=plain_dir)
        Indexer(store, "single", plain, progress=False).index([corpus])
        with pytest.raises(EmbeddingKindMismatchError, match="holds single vectors"):
            Searcher(store, "single", agff_model)


def test_cli_index_search_and_eval_work_with_an_agff_model(agff_dir, corpus, scenes, tmp_path, capsys):
    import json

    from omnisdk.cli import main

    store = str(tmp_path / "store")
    assert main(["index", "--model", str(agff_dir), "--store", store, "--collection", "c", str(corpus)]) == 0
    capsys.readouterr()
    assert main(["search", "--store", store, "--collection", "c", "--limit", "3", "--json", "a red circle"]) == 0
    found = json.loads(capsys.readouterr().out)
    hits = next(v for v in found.values() if isinstance(v, list)) if isinstance(found, dict) else found
    assert len(hits) == 3 and all("score" in h for h in hits)
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(agff_dir), "--data", str(scenes), "--out", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["tasks"] if "tasks" in data else data


def test_eval_scores_with_the_aggregation(agff_model, scenes):
    """The evaluator's AGFF path ranks by the aggregation: its hit@1 equals a hand ranking by model.similarity."""
    from omnisdk.datasets.format import load_dataset
    from omnisdk.eval import evaluate
    from omnisdk.eval.search import AspectScorer, count_ahead

    dataset = load_dataset(scenes)
    report = evaluate(agff_model, dataset, show_progress=False)
    assert report.tasks and all(math.isfinite(t.metrics["ndcg@10"]) for t in report.tasks)
    # the scorer against the model's own similarity, on a few rows
    rows = agff_model.encode(TEXTS, aspects=True)
    flat = rows.reshape(len(rows), -1)
    scorer = AspectScorer(agff_model.aspect_tokens)
    torch.testing.assert_close(scorer.matrix(torch.from_numpy(flat), torch.from_numpy(flat)),
                               agff_model.similarity(rows, rows), atol=1e-5, rtol=0)
    scores, ahead = count_ahead(flat, flat, np.arange(len(rows))[:, None], scorer=scorer)
    np.testing.assert_allclose(scores[:, 0], np.diag(agff_model.similarity(rows, rows).numpy()), atol=1e-5)
    truth = agff_model.similarity(rows, rows).numpy()
    assert (ahead[:, 0] == [(np.delete(truth[i], i) >= truth[i, i] - 1e-5).sum() for i in range(len(rows))]).all()


def test_fusion_merges_the_aspect_tokens_of_two_agff_specialists(agff_dir, tmp_path):
    """Aspect tokens and the aggregation are shared backbone parameters: task arithmetic adds both deltas."""
    from safetensors.torch import load_file

    from omnisdk import checkpoint as ckpt
    from omnisdk.fusion import fuse

    base_fp = ckpt.read_manifest(agff_dir).fingerprint
    for seed, plugin in enumerate(("text", "image"), start=1):
        model = OmniModel.load(agff_dir, device="cpu")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.startswith(("backbone.", f"adapters.{plugin}.")):
                    param.add_(0.02 * torch.randn(param.shape, generator=g))
        model.save(tmp_path / plugin, lineage=ckpt.Lineage(stage="specialist", parents=[base_fp], method="contrastive",
                                                           settings={"plugin": plugin}))
    fuse(agff_dir, [tmp_path / "text", tmp_path / "image"], method="task_arithmetic", out=tmp_path / "fused",
         progress=False)
    fused = OmniModel.load(tmp_path / "fused")
    assert fused.embedding_kind == "agff" and fused.aspect_count == K
    base, a, b, out = (load_file(p / "model.safetensors") for p in (agff_dir, tmp_path / "text", tmp_path / "image",
                                                                   tmp_path / "fused"))
    for name in ("backbone.aspect_tokens.log_temperature", "backbone.aspect_tokens.embeddings.image",
                 "backbone.aspect_tokens.weight_logits"):
        torch.testing.assert_close(out[name], base[name] + (a[name] - base[name]) + (b[name] - base[name]))
    assert fused.encode(TEXTS, aspects=True).shape == (len(TEXTS), K, fused.dim)
