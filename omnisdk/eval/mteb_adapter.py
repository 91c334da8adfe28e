"""Evaluate an OmniModel with MTEB (mteb >= 2): an encoder that speaks MTEB's EncoderProtocol.

    import mteb
    from omnisdk.eval.mteb_adapter import MtebEncoder

    results = mteb.evaluate(MtebEncoder(model), mteb.get_tasks(tasks=["..."]), cache=None)

MTEB hands `encode` a DataLoader of batches (dicts with "text", "image", "audio" columns); a row
with an image (or audio) and text is one interleaved item, the file's tokens then the text's, as
MMEB's image-plus-instruction queries are (omnisdk.interleave). This adapter turns each row into
an omnisdk `Item`, encodes everything at once (omnisdk batches by modality and length), and maps MTEB's prompt type to omnisdk's role
(query / document) so the plugins' instructions apply. Video arrives as decoded frames, which
omnisdk's video plugin does not take (it reads files), so video tasks are refused with a message.
mteb is an optional dependency: `pip install mteb`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from omnisdk.errors import OmniError
from omnisdk.items import Item

#: MTEB modality columns this adapter turns into omnisdk items.
SUPPORTED_COLUMNS = ("text", "image", "audio")


class MtebEncoder:
    """Wraps an OmniModel (or any encoder with `OmniModel.encode`'s signature) for `mteb.evaluate`."""

    def __init__(self, model: Any, *, name: str | None = None, batch_size: int | None = None):
        self.model = model
        self.batch_size = batch_size
        fingerprint = str(getattr(model, "fingerprint", "") or "")
        # MTEB wants 'organisation/model' names; the fingerprint tells checkpoints apart in its cache.
        self.name = name or f"omnisdk/omni-{fingerprint[:12] or 'model'}"
        self.revision = fingerprint[:12] or None

    @property
    def mteb_model_meta(self) -> Any:
        """MTEB's ModelMeta for this model: name, revision (the fingerprint), dimension, modalities."""
        from mteb.models.model_meta import ModelMeta

        plugins = getattr(self.model, "plugins", {})
        modalities = [m for m in ("text", "image", "audio") if m in plugins] or ["text"]
        return ModelMeta.create_empty(overwrites={
            "name": self.name, "revision": self.revision, "embed_dim": getattr(self.model, "dim", None),
            "similarity_fn_name": "cosine", "modalities": modalities, "framework": ["PyTorch"],
            "open_weights": True, "use_instructions": True,
        })

    def encode(self, inputs: Any, *, task_metadata: Any = None, hf_split: str = "", hf_subset: str = "",
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """Embed every row of MTEB's DataLoader; one float32 unit vector per row, in order.

        A row that fails to encode raises (MTEB refuses NaN scores), naming the row and the cause.
        """
        items = [item for batch in inputs for item in batch_items(batch)]
        role = _role(prompt_type)
        batch_size = self.batch_size or int(kwargs.get("batch_size") or 32)
        show = bool(kwargs.get("show_progress_bar", False))
        return self.model.encode(items, batch_size=batch_size, role=role, show_progress=show, errors="raise")

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity matrix [n1, n2] (the vectors are unit length: a dot product)."""
        a, b = _as_2d(embeddings1), _as_2d(embeddings2)
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of each row of `embeddings1` with the same row of `embeddings2`."""
        a, b = _as_2d(embeddings1), _as_2d(embeddings2)
        return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def batch_items(batch: dict[str, Any]) -> list[Item]:
    """omnisdk Items from one MTEB batch: one modality column per batch (text, image or audio)."""
    if "video" in batch:
        raise OmniError("MTEB passes video as decoded frames; omnisdk's video plugin reads video files: "
                        "evaluate video tasks with `omnisdk eval` on a dataset directory instead")
    present = [c for c in SUPPORTED_COLUMNS if c in batch and batch[c] is not None]
    files = [c for c in present if c != "text"]
    if not present or len(files) > 1:
        raise OmniError(f"expected one of the columns {', '.join(SUPPORTED_COLUMNS)} in an MTEB batch, or text with "
                        f"one of the others, got {', '.join(present) or 'none'} (keys: {', '.join(batch)})")
    if not files:
        return [Item.of_text(str(text)) for text in batch["text"]]
    column = files[0]
    objects = batch["image"] if column == "image" else [_waveform(a) if a is not None else None for a in batch["audio"]]
    texts = batch["text"] if "text" in present else [None] * len(objects)
    # An image with its instruction or question (MMEB's queries) is one interleaved item; a row
    # without text is the image alone, a row without an image the text alone.
    return [Item.of_text(str(text)) if obj is None else Item(modality=column, data=obj, text=str(text) if text else None)
            for obj, text in zip(objects, texts)]


def _waveform(audio: Any) -> tuple[np.ndarray, int]:
    """(samples [frames], rate) from MTEB's {"array", "sampling_rate"} (channels first when 2-D)."""
    samples = np.asarray(audio["array"], dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=0) if samples.shape[0] < samples.shape[1] else samples.mean(axis=1)
    return samples, int(audio["sampling_rate"])


def _role(prompt_type: Any) -> str | None:
    value = getattr(prompt_type, "value", prompt_type)
    if value in (None, ""):
        return None
    if value == "query":
        return "query"
    if value in ("document", "passage"):
        return "document"
    raise OmniError(f"unknown MTEB prompt type '{value}' (expected query or document)")


def _as_2d(embeddings: Any) -> torch.Tensor:
    tensor = embeddings if isinstance(embeddings, torch.Tensor) else torch.from_numpy(np.asarray(embeddings))
    tensor = tensor.float()
    return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor
