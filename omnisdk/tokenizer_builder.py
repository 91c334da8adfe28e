"""A small WordPiece tokenizer built offline, for the tiny preset and for tests."""
from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words that captions, questions and instructions use often; everything else falls back to word pieces.
COMMON_WORDS = """
a an the and or of on in at to for with from by is are was be this that these those it its as not no
what which who where when how many much one two three four five six seven eight nine ten zero
red green blue yellow purple orange black white gray grey pink brown color colour
circle square triangle star shape small large big tiny left right top bottom center middle
moving move moves growing shrinking up down image picture photo video clip document page pdf
audio sound sounds tone tones beep beeps short long low medium high pitched pure buzzy bright
steady rising falling noise burst spoken word digit handwritten number query represent retrieve
text caption scene object objects background question answer about describe
""".split()


def build_wordpiece_tokenizer(out_dir: Path, extra_words: Iterable[str] = ()) -> Path:
    """Write a BERT-style fast tokenizer (vocab of characters, word pieces and common words) to `out_dir`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = SPECIAL + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    for word in [*COMMON_WORDS, *extra_words]:
        if word not in vocab_list:
            vocab_list.append(word)
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    core = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_bpe_tokenizer(out_dir: Path, *, bos_token: str | None = None, eos_token: str = "<|endoftext|>") -> Path:
    """Write a byte-level BPE tokenizer like the Qwen2 and Llama 3 ones, trained offline on the common words.

    Like Qwen2's it adds no special tokens by itself and has no pad token; with `bos_token` it puts
    that token first, like Llama's. Tests build decoder LLM backbones with it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [eos_token] + ([bos_token] if bos_token else [])
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([" ".join(COMMON_WORDS)] * 4, trainer=trainer)
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    if bos_token:
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B:1", special_tokens=[(bos_token, core.token_to_id(bos_token))]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos_token, bos_token=bos_token, model_max_length=512)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
