"""Interleaved items (a file with text in one sequence) and a vision-language backbone's chat template.

The key check builds an MMEB-style query (an image and a question, the image plugin's query
instruction as the system message) and compares omnisdk's vector with the transformers model
called directly on what the checkpoint's own processor and chat template make of the same turn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnisdk.datasets.format import load_dataset
from omnisdk.eval.runner import evaluate
from omnisdk.items import Item
from omnisdk.model import OmniModel
from omnisdk.presets import build_base
import pretrained_parts as parts
from media.eval_data import write_vqa_dataset

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "examples" / "media" / "red-circle.png"
QUESTION = "what colour is the circle?"


@pytest.fixture(scope="module")
def chat_vlm(tmp_path_factory):
    """A tiny Qwen2-VL -Instruct: its chat template on the processor only, as the hub ships it."""
    return parts.qwen2_vl(tmp_path_factory.mktemp("chat") / "qwen2_vl", "qwen2_vl", chat_template=True)


@pytest.fixture(scope="module")
def tiny():
    return build_base("tiny", modalities=["text", "image"])


def _hf_chat_vector(source: Path, image_path: Path | None, text: str | None, system: str | None) -> np.ndarray:
    """The transformers model on the processor's chat-templated turn (plus the EOS that last-token pooling reads)."""
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(str(source)).eval(), AutoProcessor.from_pretrained(str(source))
    content = ([{"type": "image"}] if image_path else []) + ([{"type": "text", "text": text}] if text else [])
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [Image.open(image_path).convert("RGB")] if image_path else None
    inputs = processor(text=[prompt], images=images, return_tensors="pt")
    ids = torch.cat([inputs["input_ids"], torch.tensor([[processor.tokenizer.eos_token_id]])], dim=1)
    extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra,
                       mm_token_type_ids=(ids == model.config.image_token_id).int()).last_hidden_state
    return torch.nn.functional.normalize(hidden[0, -1], dim=-1).numpy()


def test_an_image_with_a_question_equals_the_transformers_model_on_the_processors_chat_turn(chat_vlm, tmp_path):
    model = build_base("tiny", modalities=["text", "image"], backbone=str(chat_vlm))
    assert model.spec.chat_template and model.tokenizer.chat_template  # adopted from the processor
    instruction = model.plugins["image"].instructions.query
    items = [Item.of_interleaved(PNG, QUESTION, "image"), Item.of_file(PNG, "image"), QUESTION]
    ours = model.encode(items, role="query", errors="raise")
    np.testing.assert_allclose(ours[0], _hf_chat_vector(chat_vlm, PNG, QUESTION, instruction), atol=1e-5)
    np.testing.assert_allclose(ours[1], _hf_chat_vector(chat_vlm, PNG, None, instruction), atol=1e-5)
    # text has no instruction of its own: the template's default system message frames it
    np.testing.assert_allclose(ours[2], _hf_chat_vector(chat_vlm, None, QUESTION, None), atol=1e-5)
    no_role = model.encode([Item.of_file(PNG, "image")], errors="raise")
    np.testing.assert_allclose(no_role[0], _hf_chat_vector(chat_vlm, PNG, None, None), atol=1e-5)
    model.save(tmp_path / "ckpt")
    again = OmniModel.load(tmp_path / "ckpt")
    assert again.spec.chat_template
    np.testing.assert_allclose(again.encode(items, role="query", errors="raise"), ours, atol=1e-6)


def test_interleaved_vectors_differ_and_mixed_batches_equal_items_alone(tiny):
    items = [Item.of_interleaved(PNG, QUESTION, "image"), Item.of_file(PNG, "image"), QUESTION,
             Item.of_interleaved(PNG, "where is it?", "image"), Item(modality="image", data=_pil(), text=QUESTION)]
    for role in (None, "query"):
        vectors = tiny.encode(items, role=role, errors="raise")
        assert float(vectors[0] @ vectors[1]) < 0.999 and float(vectors[0] @ vectors[2]) < 0.999
        assert float(vectors[0] @ vectors[3]) < 0.9999  # the question matters
        np.testing.assert_allclose(vectors[4], vectors[0], atol=1e-5)  # a PIL image with text: the same item
        alone = np.stack([tiny.encode([item], role=role, errors="raise")[0] for item in items])
        np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_a_bad_file_in_an_interleaved_item_is_one_error_naming_the_item(tiny, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items = [Item.of_interleaved(PNG, QUESTION, "image"), Item.of_interleaved(broken, "is it broken?", "image"),
             Item.of_file(PNG, "image")]
    vectors, errors = tiny.encode(items, errors="ignore", return_errors=True)
    assert [e.index for e in errors] == [1]
    assert "broken.png" in str(errors[0]) and "is it broken?" in str(errors[0])
    assert np.isnan(vectors[1]).all() and np.isfinite(vectors[[0, 2]]).all()
    np.testing.assert_allclose(vectors[0], tiny.encode([items[0]])[0], atol=1e-5)


def test_interleaved_items_keep_gradients_for_training(tiny):
    prepared = tiny.prepare("image", [Item.of_interleaved(PNG, QUESTION, "image"), Item.of_file(PNG, "image")])
    assert prepared.ok == [0, 1] and prepared.batch.texts == [QUESTION, ""]
    vectors = tiny.forward_embeddings("image", prepared.batch, "query")
    vectors.sum().backward()
    assert tiny.backbone.get_input_embeddings().weight.grad is not None


def test_a_dataset_record_with_text_and_path_is_an_interleaved_query(tiny, tmp_path):
    data = write_vqa_dataset(tmp_path / "vqa")
    dataset = load_dataset(data)
    query = dataset.item(dataset.queries["q_red"])
    assert query.is_interleaved and query.path.name == "red.png"
    report = evaluate(tiny, dataset)
    (task,) = report.tasks
    assert task.task == "vqa" and task.n_queries == 3 and task.failed_queries == 0 and not report.failures
    assert 0.0 <= task.metrics["ndcg@10"] <= 1.0
    asked = tiny.encode([query], role="query")[0]
    plain = tiny.encode([Item.of_file(query.path, "image")], role="query")[0]
    assert float(asked @ plain) < 0.999


def _pil():
    from PIL import Image

    return Image.open(PNG).convert("RGB")
