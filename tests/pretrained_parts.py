"""Tiny random Hugging Face checkpoints, saved with save_pretrained the way the hub stores them.

Each builder writes a directory that `from_pretrained` reads: config, safetensors weights and the
processor, feature extractor or tokenizer, all made offline. `hub_cache` lays such a directory out as
a Hugging Face cache entry, so a hub id resolves with HF_HUB_OFFLINE=1 through the same code path a
user with internet takes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from media.audio import write_wav

SEED = 0


def clip(directory: Path) -> Path:
    """A whole CLIP (text and vision towers) with its image processor: the image plugin takes the vision half."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(SEED)
    text = dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(str(directory))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(directory))
    return directory


def siglip(directory: Path) -> Path:
    """A whole SigLIP (text and vision towers) with its image processor, as google/siglip-* checkpoints are."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(SEED)
    text = dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(str(directory))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(directory))
    return directory


def dinov2(directory: Path) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(SEED)
    config = Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(str(directory))
    BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(str(directory))
    return directory


def timm_dir(directory: Path) -> Path:
    """A timm model in timm's own hub format: config.json with architecture and pretrained_cfg, model.safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    args = dict(patch_size=8, embed_dim=16, depth=1, num_heads=2, img_size=32)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **args)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 0, "num_features": 16, "model_args": args,
              "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                 "num_classes": 0, "fixed_input_size": True}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def whisper(directory: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(SEED)
    config = WhisperConfig(vocab_size=100, num_mel_bins=16, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=100, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
    WhisperModel(config).save_pretrained(str(directory))
    # 100 source positions take 200 mel frames: 2 s of audio at 10 ms hops.
    WhisperFeatureExtractor(feature_size=16, chunk_length=2, sampling_rate=16_000, hop_length=160).save_pretrained(str(directory))
    return directory


def clap(directory: Path) -> Path:
    """A whole CLAP (text and HTSAT audio towers) with its feature extractor: the audio plugin takes the audio half."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(SEED)
    text = dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                projection_hidden_act="relu")
    audio = dict(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                 patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=16,
                 enable_fusion=False)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(str(directory))
    ClapFeatureExtractor(feature_size=16, sampling_rate=16_000, hop_length=160, max_length_s=1, fft_window_size=400,
                         frequency_max=8000, truncation="rand_trunc").save_pretrained(str(directory))
    return directory


def ast(directory: Path) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(SEED)
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       patch_size=16, frequency_stride=16, time_stride=16, max_length=100, num_mel_bins=32)
    ASTModel(config).save_pretrained(str(directory))
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(str(directory))
    return directory


def wav2vec2(directory: Path, model_type: str = "wav2vec2") -> Path:
    """A tiny wav2vec2 or HuBERT (model_type="hubert"), loaded through AutoModel."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(SEED)
    config = AutoConfig.for_model(model_type, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=10)
    AutoModel.from_config(config).save_pretrained(str(directory))
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(str(directory))
    return directory


def hub_cache(cache: Path, repo_id: str, source: Path, revision: str = "0" * 40) -> Path:
    """Lay out `source` as the Hugging Face cache entry of `repo_id` (refs/main -> snapshots/REVISION)."""
    entry = cache / ("models--" + repo_id.replace("/", "--"))
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(revision)
    shutil.copytree(source, entry / "snapshots" / revision, dirs_exist_ok=True)
    return entry


def decoder_llm(directory: Path, model_type: str = "qwen2") -> Path:
    """A tiny random Qwen2, Qwen3 or Llama with an offline byte-level BPE tokenizer (Llama's puts a BOS first)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from omnisdk.tokenizer_builder import build_bpe_tokenizer

    bos = "<|begin_of_text|>" if model_type == "llama" else None
    build_bpe_tokenizer(directory, bos_token=bos)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    torch.manual_seed(SEED)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    AutoModel.from_config(config).save_pretrained(str(directory))
    return directory


def qwen2_vl(directory: Path, model_type: str = "qwen2_vl", chat_template: bool = False) -> Path:
    """A tiny random Qwen2-VL or Qwen2.5-VL (language model and vision tower), its image processor and a tokenizer
    holding the vision special tokens (<|vision_start|>, <|image_pad|>, ...), as the hub checkpoints do.

    `chat_template`: as an -Instruct checkpoint, the chat tokens and Qwen2-VL's chat template, on the
    processor only (chat_template.json), as the hub's Qwen2-VL-2B-Instruct ships it."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, Qwen2VLImageProcessor

    from omnisdk.tokenizer_builder import build_bpe_tokenizer

    build_bpe_tokenizer(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    chat = list(CHAT_TOKENS) if chat_template else []
    tokenizer.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS.values()) + chat})
    tokenizer.save_pretrained(str(directory))
    ids = {f"{name}_id": tokenizer.convert_tokens_to_ids(token) for name, token in VISION_TOKENS.items()}
    torch.manual_seed(SEED)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
    if model_type == "qwen2_5_vl":  # its tower has an MLP width, window attention and an output width of its own
        vision = dict(depth=2, hidden_size=16, intermediate_size=32, out_hidden_size=32, num_heads=2, patch_size=4,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
    config = AutoConfig.for_model(model_type, text_config=text, vision_config=vision, **ids)
    AutoModel.from_config(config).save_pretrained(str(directory))
    # Pixels bounds of a few merged patches: test images give 4 to 64 image tokens.
    Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2,
                          size={"shortest_edge": 8 * 8, "longest_edge": 64 * 64}).save_pretrained(str(directory))
    if chat_template:
        (directory / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_VL_CHAT_TEMPLATE}))
    return directory


CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
#: Qwen2-VL-2B-Instruct's chat template (its chat_template.json).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


VISION_TOKENS = {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
                 "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}


#: Training settings for a few steps on the pairs below.
FAST = {"batch_size": 4, "log_every": 1, "hard_negatives": 0, "steps": 3}


def write_pairs_dataset(root: Path) -> Path:
    """Text <-> image and text <-> audio pairs of real files: coloured squares and tones."""
    from PIL import Image

    (root / "media").mkdir(parents=True)
    corpus, queries, qrels, train = [], [], ["query-id\tcorpus-id\tscore"], []
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20)}
    for i, (word, rgb) in enumerate(colours.items()):
        Image.new("RGB", (40, 30), rgb).save(root / "media" / f"{word}.png")
        write_wav(root / "media" / f"{word}.wav", 0.5, 16_000, 200 + 400 * i)
        for modality, suffix in (("image", "png"), ("audio", "wav")):
            doc, query = f"{modality}-{word}", f"q-{modality}-{word}"
            corpus.append({"_id": doc, "modality": modality, "path": f"media/{word}.{suffix}"})
            queries.append({"_id": query, "modality": "text", "text": f"a {word} {modality}", "task": f"t2{modality[0]}"})
            qrels.append(f"{query}\t{doc}\t1")
            train.append({"query": {"modality": "text", "text": f"a {word} {modality}"},
                          "positive": {"modality": modality, "path": f"media/{word}.{suffix}"}, "negatives": [],
                          "task": f"t2{modality[0]}"})
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    for name, rows in (("corpus", corpus), ("queries", queries), ("train", train)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
