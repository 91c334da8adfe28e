"""A vision-language backbone's chat template around every input: instructions as its system message.

An instruction-tuned Qwen2-VL was trained on chat turns, and GME and similar embedders built on it
frame every input as one: the instruction as the system message, the item (image tokens, text, or
both) as the user's turn, then the assistant prompt, then the end token that last-token pooling
reads. omnisdk renders the checkpoint's own template once per instruction around a placeholder and
splits it there: the pieces before and after become constant token ids around any item's content,
so an image's tokens sit exactly where the processor would put `<|vision_start|><|image_pad|>...`.
Without an instruction the template's default system message stays (Qwen2-VL: "You are a helpful
assistant.").
"""
from __future__ import annotations

from typing import Any

from omnisdk.errors import CheckpointError

#: where the item goes in the rendered template; no template or text contains it.
_CONTENT = "\x00omnisdk-content\x00"


def applies(backbone: Any, tokenizer: Any) -> bool:
    """Frame inputs with the chat template: a vision-language backbone whose tokenizer has one."""
    from omnisdk import vlm

    return vlm.is_vision_backbone(backbone) and bool(getattr(tokenizer, "chat_template", None))


def adopt_processor_template(tokenizer: Any, source: str, trust_remote_code: bool = False) -> None:
    """Give the tokenizer the processor's chat template when only the processor has one (saved with the tokenizer)."""
    if getattr(tokenizer, "chat_template", None):
        return
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        return  # no processor files: the backbone frames inputs with its tokenizer's special tokens alone
    template = getattr(processor, "chat_template", None)
    if isinstance(template, str) and template:
        tokenizer.chat_template = template


def frame_text(tokenizer: Any, instruction: str) -> tuple[str, str]:
    """(text before, text after) the item in the rendered template, with `instruction` as the system message."""
    messages = [{"role": "system", "content": instruction}] if instruction else []
    messages.append({"role": "user", "content": _CONTENT})
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a Jinja error in the checkpoint's own template
        raise CheckpointError(f"the backbone's chat template failed to render a system and a user turn: {exc}") from exc
    before, found, after = rendered.partition(_CONTENT)
    if not found:
        raise CheckpointError("the backbone's chat template drops the user's message: it cannot frame an item")
    return before, after


def frame_ids(tokenizer: Any, instruction: str) -> tuple[list[int], list[int]]:
    """The token ids before and after the item (special tokens such as <|im_start|> recognised in the text)."""
    before, after = frame_text(tokenizer, instruction)
    ids = tokenizer([before, after], add_special_tokens=False)["input_ids"]
    return list(ids[0]), list(ids[1])
