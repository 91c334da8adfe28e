"""The MTEB adapter on a tiny local text-to-image task, cross-checked against omnisdk's own evaluator."""
from __future__ import annotations

import json

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from media.eval_data import VQA_COLOURS, write_vqa_dataset  # noqa: E402

from omnisdk.datasets.format import load_dataset  # noqa: E402
from omnisdk.eval.mteb_adapter import MtebEncoder, batch_items  # noqa: E402
from omnisdk.eval.runner import evaluate  # noqa: E402
from omnisdk.errors import OmniError  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (235, 220, 40),
           "black": (10, 10, 10)}


def tiny_task():
    """A retrieval task defined in memory (no hub download): colour captions -> colour squares."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata
    from PIL import Image

    class TinyColoursT2I(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="OmnisdkTinyColoursT2I", description="captions find colour squares", reference=None,
            dataset={"path": "NA", "revision": "NA"}, type="Any2AnyRetrieval", category="t2i",
            modalities=["text", "image"], eval_splits=["test"], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
            date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None, dialect=None,
            sample_creation=None, bibtex_citation="",
        )

        def load_data(self, num_proc=None, **kwargs):
            split = RetrievalSplitData(
                queries=Dataset.from_dict({"id": [f"q_{c}" for c in COLOURS], "text": [f"a {c} square" for c in COLOURS]}),
                corpus=Dataset.from_dict({"id": [f"d_{c}" for c in COLOURS],
                                          "image": [Image.new("RGB", (24, 24), rgb) for rgb in COLOURS.values()]}),
                relevant_docs={f"q_{c}": {f"d_{c}": 1} for c in COLOURS},
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return TinyColoursT2I()


def same_task_as_omnisdk_dataset(root):
    from PIL import Image

    (root / "img").mkdir(parents=True)
    corpus, queries = [], []
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (24, 24), rgb).save(root / "img" / f"{colour}.png")
        corpus.append({"_id": f"d_{colour}", "modality": "image", "path": f"img/{colour}.png"})
        queries.append({"_id": f"q_{colour}", "modality": "text", "text": f"a {colour} square", "task": "t2i"})
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q_{c}\td_{c}\t1\n" for c in COLOURS))
    return load_dataset(root)


def test_mteb_scores_match_omnisdk_eval(tiny_model_factory, tmp_path):
    model = tiny_model_factory(["text", "image"])
    encoder = MtebEncoder(model)
    assert isinstance(encoder, mteb.models.models_protocols.EncoderProtocol)
    assert encoder.mteb_model_meta.name.startswith("omnisdk/") and encoder.mteb_model_meta.embed_dim == model.dim
    result = mteb.evaluate(encoder, tiny_task(), cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 2})
    scores = result.task_results[0].scores["test"][0]
    ours = {t.task: t for t in evaluate(model, same_task_as_omnisdk_dataset(tmp_path / "data")).tasks}["t2i"].metrics
    # MTEB rounds to 5 decimals; with random tiny weights there are no exact ties to order differently.
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["recall_at_1"] == pytest.approx(ours["recall@1"], abs=1e-4)
    assert scores["recall_at_5"] == pytest.approx(ours["recall@5"], abs=1e-4)
    assert scores["mrr_at_1000"] == pytest.approx(ours["mrr"], abs=1e-4)


def test_batches_become_items_and_unsupported_ones_are_refused():
    items = batch_items({"id": ["a", "b"], "text": ["one", "two"]})
    assert [i.text for i in items] == ["one", "two"] and items[0].modality == "text"
    wave = batch_items({"audio": [{"array": np.zeros((2, 800)), "sampling_rate": 8000}]})[0]
    assert wave.modality == "audio" and wave.data[0].shape == (800,) and wave.data[1] == 8000
    with pytest.raises(OmniError, match="video"):
        batch_items({"video": [np.zeros((2, 3, 8, 8))]})
    with pytest.raises(OmniError, match="text with one of the others"):
        batch_items({"image": [object()], "audio": [{"array": np.zeros(8), "sampling_rate": 8000}]})
    image, text = batch_items({"text": ["what colour?", ""], "image": [object(), None]})
    assert image.modality == "image" and image.text == "what colour?" and image.is_interleaved
    assert text.modality == "text" and text.text == ""


def tiny_vqa_task():
    """An MMEB-style it2t task in memory: an image with a question retrieves the answer text."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata
    from PIL import Image

    class TinyColoursVQA(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="OmnisdkTinyColoursVQA", description="an image and a question find the answer", reference=None,
            dataset={"path": "NA", "revision": "NA"}, type="Any2AnyRetrieval", category="it2t",
            modalities=["text", "image"], eval_splits=["test"], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
            date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None, dialect=None,
            sample_creation=None, bibtex_citation="",
        )

        def load_data(self, num_proc=None, **kwargs):
            split = RetrievalSplitData(
                queries=Dataset.from_dict({"id": [f"q_{c}" for c in VQA_COLOURS],
                                           "image": [Image.new("RGB", (24, 24), rgb) for rgb in VQA_COLOURS.values()],
                                           "text": ["What colour is the square?"] * len(VQA_COLOURS)}),
                corpus=Dataset.from_dict({"id": [f"a_{c}" for c in VQA_COLOURS], "text": list(VQA_COLOURS)}),
                relevant_docs={f"q_{c}": {f"a_{c}": 1} for c in VQA_COLOURS},
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return TinyColoursVQA()


def test_mteb_image_with_question_queries_match_omnisdk_eval(tiny_model_factory, tmp_path):
    model = tiny_model_factory(["text", "image"])
    seen = []

    class Recording:  # the model, noting the items MTEB's rows became
        fingerprint, dim, plugins = model.fingerprint, model.dim, model.plugins

        def encode(self, items, **kwargs):
            seen.extend(items)
            return model.encode(items, **kwargs)

    result = mteb.evaluate(MtebEncoder(Recording()), tiny_vqa_task(), cache=None, show_progress_bar=False,
                           encode_kwargs={"batch_size": 2})
    asked = [item for item in seen if item.is_interleaved]
    assert len(asked) == 3 and {item.text for item in asked} == {"What colour is the square?"}
    scores = result.task_results[0].scores["test"][0]
    ours = {t.task: t for t in evaluate(model, load_dataset(write_vqa_dataset(tmp_path / "vqa"))).tasks}["vqa"].metrics
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["mrr_at_1000"] == pytest.approx(ours["mrr"], abs=1e-4)
