"""The audio adapter: an encoder (built-in log-mel transformer, or any Hugging Face audio encoder) and an MLP projector.

Both halves are *owned* by the audio plugin (see `AudioPlugin.fusion`). Every encoder here has the
same two-step interface, so the plugin and the adapter need not know which one they hold:

    featurize(waves)        -> (inputs, lengths)   on the CPU, in `preprocess`
    forward(inputs, lengths) -> (frames, lengths)  on the model's device

`lengths` always counts the real (unpadded) steps per row, so padding never leaks into an embedding.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from omnisdk.errors import CheckpointError
from omnisdk.modality import Instructions, Runtime, TokenEmbeddings

#: Config keys that describe where a config came from rather than the architecture; they must not
#: be passed back when the encoder is rebuilt from the manifest.
_CONFIG_NOISE = {
    "model_type", "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype",
    "id2label", "label2id", "output_hidden_states", "output_attentions", "return_dict",
}  # fmt: skip


def lengths_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] long mask, 1 where a step is real."""
    return (torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).long()


def conv_out_length(length: int | torch.Tensor, stride: int = 2) -> int | torch.Tensor:
    """Output length of a kernel-3, padding-1 convolution with this stride."""
    return (length - 1) // stride + 1


def sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sinusoidal positions [length, dim]: no parameters, and any clip length works."""
    half = dim // 2
    scale = math.log(10_000) / max(half - 1, 1)
    freqs = torch.exp(-scale * torch.arange(half, device=device, dtype=torch.float32))
    angles = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    pos = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(pos, (0, dim - pos.size(1)))


class LogMel:
    """Log-mel features with Whisper's fixed normalisation: log10, an 80 dB floor below the peak, (x + 4) / 4.

    A plain object, not an nn.Module: the mel filterbank is derived from the config, so keeping it
    out of the state dict keeps checkpoints and task vectors free of constants.
    """

    def __init__(self, sample_rate: int, n_mels: int):
        from torchaudio.transforms import MelSpectrogram

        # 25 ms windows every 10 ms, the usual speech and audio-tagging front end.
        self.hop_length = round(sample_rate * 0.010)
        self.transform = MelSpectrogram(
            sample_rate=sample_rate, n_fft=round(sample_rate * 0.025), hop_length=self.hop_length, n_mels=n_mels
        )

    def frames(self, samples: int) -> int:
        return 1 + samples // self.hop_length

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """[samples] float32 at the configured rate -> [n_mels, frames]."""
        with torch.no_grad():
            log_mel = self.transform(wave).clamp(min=1e-10).log10()
        log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
        return (log_mel + 4.0) / 4.0


def standardize(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, n_mels, frames] -> each row at zero mean and unit variance over its real frames; padding stays 0.

    One mean and one deviation per clip (not per mel bin), so pitch (which bins are loud) and
    loudness over time (onsets, gaps between beeps) survive.
    """
    mask = lengths_mask(lengths.to(features.device), features.size(-1)).unsqueeze(1).to(features.dtype)
    count = (mask.sum((1, 2)) * features.size(1)).clamp(min=1)
    mean = (features * mask).sum((1, 2)) / count
    centred = (features - mean[:, None, None]) * mask
    std = (centred.pow(2).sum((1, 2)) / count).sqrt().clamp(min=1e-5)
    return centred / std[:, None, None]


class PitchTimbreFront(nn.Module):
    """log-mel [B, n_mels, T] -> [B, dim, T/4]: what a sound is apart from where its pitch lies.

    Two 2-D convolutions slide the same filters over every frequency, and a max over frequency keeps
    what they found wherever it lies (the timbre, the glide); pooling the log-mel into a few frequency
    bands keeps where the energy lies (the pitch). One linear map adds the two, so a pitch-timbre
    pair never seen in training is built from parts that were: the Conv1d front end, which reads each
    mel bin with its own weights, learns a timbre separately at each pitch.
    """

    def __init__(self, n_mels: int, dim: int, channels: int = 64, bands: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels // 2, kernel_size=3, stride=(1, 2), padding=1)
        self.conv2 = nn.Conv2d(channels // 2, channels, kernel_size=3, stride=(2, 2), padding=1)
        self.bands = bands
        self.mix = nn.Linear(channels + bands, dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.unsqueeze(1)
        for conv in (self.conv1, self.conv2):
            h = nn.functional.gelu(conv(h))
            lengths = conv_out_length(lengths)
            h = h * lengths_mask(lengths, h.size(-1))[:, None, None, :].to(h.dtype)
        timbre = h.amax(dim=2)  # [B, C, T/4]
        # band energies, pooled over time as the convolutions stride (padding past a clip's end is 0)
        place = nn.functional.adaptive_avg_pool2d(x.unsqueeze(1), (self.bands, x.size(-1))).squeeze(1)
        for _ in range(2):
            place = nn.functional.avg_pool1d(place, kernel_size=3, stride=2, padding=1)
        place = place * lengths_mask(lengths, place.size(-1)).unsqueeze(1).to(place.dtype)
        return self.mix(torch.cat([timbre, place], 1).transpose(1, 2)).transpose(1, 2), lengths


class BuiltinAudioEncoder(nn.Module):
    """log-mel -> a front end with x4 fewer frames -> sinusoidal positions -> TransformerEncoder.

    The front end is two stride-2 Conv1d over the mel bins ("conv1d"), or `PitchTimbreFront`.
    """

    def __init__(self, sample_rate: int, n_mels: int, dim: int, layers: int, heads: int | None = None,
                 *, normalize: bool = False, front_end: str = "conv1d"):
        super().__init__()
        heads = heads or _default_heads(dim)
        if dim % heads:
            raise ValueError(f"audio encoder_dim={dim} is not divisible by encoder_heads={heads}")
        self.log_mel = LogMel(sample_rate, n_mels)
        if front_end == "pitch_timbre":
            self.front = PitchTimbreFront(n_mels, dim)
        else:
            self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, stride=2, padding=1)
            self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        # normalize: each clip's log-mel is standardised over its real frames, and the convolutions'
        # output is layer-normed before the positions are added. Without it a fresh encoder's content
        # signal enters the transformer ~10x weaker than the unit-scale sinusoids, so every clip
        # starts out looking alike (see `input_norm` in AudioConfig).
        self.normalize = normalize
        self.front_norm = nn.LayerNorm(dim) if normalize else None
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def featurize(self, waves: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        feats = [self.log_mel(w) for w in waves]
        lengths = torch.tensor([f.size(1) for f in feats])
        batch = torch.zeros(len(feats), feats[0].size(0), int(lengths.max()))
        for row, f in enumerate(feats):
            batch[row, :, : f.size(1)] = f
        return {"features": batch}, lengths

    def output_length(self, samples: int) -> int:
        return conv_out_length(conv_out_length(self.log_mel.frames(samples)))

    def forward(self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs["features"]
        if self.normalize:
            x = standardize(x, lengths)
        if hasattr(self, "front"):
            x, lengths = self.front(x, lengths)
        else:
            for conv in (self.conv1, self.conv2):
                x = nn.functional.gelu(conv(x))
                lengths = conv_out_length(lengths)
                # Zero the steps past each row's end, so a clip embeds the same alone or beside a longer one.
                x = x * lengths_mask(lengths, x.size(-1)).unsqueeze(1).to(x.dtype)
        x = x.transpose(1, 2)
        if self.front_norm is not None:
            x = self.front_norm(x)
        x = x + sinusoids(x.size(1), x.size(2), x.device).to(x.dtype)
        padding = lengths_mask(lengths, x.size(1)) == 0
        x = self.transformer(x, src_key_padding_mask=padding)
        return self.norm(x), lengths


def _default_heads(dim: int) -> int:
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    return heads


#: Encoders that take one fixed-size input, clip padded (AST: 1024 fbank frames, CLAP: 10 s fused mel views);
#: all their output tokens count, since the padding is part of what they were trained on.
FIXED_INPUT_TYPES = ("audio-spectrogram-transformer", "clap_audio_model")


def fixed_input_seconds(fe_config: dict[str, Any]) -> float | None:
    """Seconds of audio a fixed-length feature extractor takes (Whisper, CLAP, AST); None when any length goes."""
    rate = fe_config.get("sampling_rate")
    if not rate:
        return None
    if fe_config.get("n_samples"):  # Whisper
        return fe_config["n_samples"] / rate
    if fe_config.get("nb_max_samples"):  # CLAP
        return fe_config["nb_max_samples"] / rate
    if fe_config.get("feature_extractor_type") == "ASTFeatureExtractor":
        return fe_config.get("max_length", 1024) * 0.010  # Kaldi fbank frames every 10 ms
    return None


class HFAudioEncoder(nn.Module):
    """A Hugging Face audio encoder (Whisper's encoder, CLAP's audio tower, AST, wav2vec2, HuBERT, ...) and its feature extractor."""

    def __init__(self, model: nn.Module, feature_extractor: Any):
        super().__init__()
        self.model = model
        self.feature_extractor = feature_extractor
        config = model.config
        self.model_type = config.model_type
        if self.model_type == "clap_audio_model":  # HTSAT's last stage: the patch width doubled per stage after the first
            self.output_dim = int(config.patch_embeds_hidden_size * 2 ** (len(config.depths) - 1))
        else:
            self.output_dim = int(getattr(config, "hidden_size", None) or config.d_model)
        fe = feature_extractor
        # Whisper-style extractors pad every clip to a fixed length that the encoder insists on.
        self.fixed_length = getattr(fe, "n_samples", None)
        self.fixed_output = self.model_type in FIXED_INPUT_TYPES
        # Models trained without attention masks (e.g. wav2vec2-base) expect zero padding and no mask.
        self.pass_mask = bool(getattr(fe, "return_attention_mask", False))
        self._fixed_width: int | None = None

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def featurize(self, waves: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        arrays = [w.numpy() for w in waves]
        if self.fixed_output:  # AST and CLAP pad (or repeat) to their own fixed input; no mask
            kwargs = {}
            if self.model_type == "clap_audio_model":
                # An unfused CLAP takes one mel view; "fusion" makes four. Clips never exceed the window,
                # so "rand_trunc" never actually crops at random here.
                kwargs["truncation"] = "fusion" if self.model.config.enable_fusion else "rand_trunc"
            out = self.feature_extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt", **kwargs)
            inputs = {k: (v.float() if v.is_floating_point() else v) for k, v in out.items() if k != "attention_mask"}
            return inputs, torch.full((len(waves),), -1, dtype=torch.long)  # -1: every output token is real
        padding = "max_length" if self.fixed_length else "longest"
        out = self.feature_extractor(
            arrays, sampling_rate=self.sample_rate, padding=padding, return_attention_mask=True, return_tensors="pt"
        )
        key = "input_features" if "input_features" in out else "input_values"
        inputs = {key: out[key].float()}
        lengths = out["attention_mask"].sum(-1) if "attention_mask" in out else torch.full((len(waves),), out[key].size(-1))
        if self.pass_mask and "attention_mask" in out:
            inputs["attention_mask"] = out["attention_mask"]
        return inputs, lengths.long()

    def output_length(self, samples: int) -> int:
        """Encoder frames for a clip of `samples`; used once to size the token budget."""
        inputs, lengths = self.featurize([torch.zeros(samples)])
        if self.fixed_output:
            return self._probe_width(inputs)
        return int(self._out_lengths(lengths, lengths, None)[0])

    def forward(self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._frames(self.model(**inputs))
        if self.fixed_output:
            return frames, torch.full((frames.size(0),), frames.size(1), dtype=torch.long, device=frames.device)
        in_width = next(v for k, v in inputs.items() if k != "attention_mask").size(-1)
        return frames, self._out_lengths(lengths, torch.tensor(in_width), frames.size(1))

    @staticmethod
    def _frames(out: Any) -> torch.Tensor:
        frames = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if frames.dim() == 4:  # CLAP/HTSAT: [B, C, freq, time] -> average the frequency bins, time as tokens
            frames = frames.mean(2).transpose(1, 2)
        return frames

    def _probe_width(self, inputs: dict[str, torch.Tensor]) -> int:
        # Fixed-input encoders give a fixed number of tokens; one forward pass counts them.
        if self._fixed_width is None:
            device = next(self.model.parameters()).device
            with torch.no_grad():
                self._fixed_width = int(self._frames(self.model(**{k: v.to(device) for k, v in inputs.items()})).size(1))
        return self._fixed_width

    def _out_lengths(self, lengths: torch.Tensor, in_width: torch.Tensor, out_width: int | None) -> torch.Tensor:
        convert = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if convert is not None:
            result = convert(lengths)
        elif out_width is not None:  # no formula: assume the encoder keeps time proportional
            result = torch.ceil(lengths * out_width / in_width)
        else:
            result = lengths
        result = torch.as_tensor(result).long().clamp(min=1)
        return result if out_width is None else result.clamp(max=out_width)


def load_hf_encoder(source: str) -> tuple[nn.Module, Any, dict[str, Any], dict[str, Any]]:
    """Load an encoder and its feature extractor from a local directory or hub id, safetensors only, no remote code.

    Returns them with the two config dicts that rebuild them later without `source`.
    """
    from transformers import AutoFeatureExtractor, AutoModel

    from omnisdk import hub

    hub.check_local_dir(source, "audio encoder")
    try:
        model = AutoModel.from_pretrained(str(source), use_safetensors=True, trust_remote_code=False)
        feature_extractor = AutoFeatureExtractor.from_pretrained(str(source), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise hub.load_error("audio encoder", source, exc) from exc
    encoder = _encoder_part(model)
    return encoder, feature_extractor, hub.clean_config(encoder.config.to_dict()), feature_extractor.to_dict()


def build_hf_encoder(encoder_config: dict[str, Any], feature_extractor_config: dict[str, Any]) -> tuple[nn.Module, Any]:
    """Rebuild an encoder from recorded config dicts; its weights come from the omnisdk checkpoint."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.feature_extraction_auto import feature_extractor_class_from_name

    kwargs = {k: v for k, v in encoder_config.items() if k not in _CONFIG_NOISE}
    if encoder_config["model_type"] == "clap_audio_model":  # not in AutoModel's mapping
        from transformers import ClapAudioConfig, ClapAudioModel

        model = ClapAudioModel(ClapAudioConfig(**kwargs))
    else:
        model = AutoModel.from_config(AutoConfig.for_model(encoder_config["model_type"], **kwargs))
    fe_type = feature_extractor_config.get("feature_extractor_type")
    fe_class = feature_extractor_class_from_name(fe_type) if fe_type else None
    if fe_class is None:
        raise CheckpointError(f"the audio feature extractor type {fe_type!r} is not one this transformers version knows")
    fe_kwargs = {k: v for k, v in feature_extractor_config.items() if k != "feature_extractor_type"}
    return _encoder_part(model), fe_class(**fe_kwargs)


def _encoder_part(model: nn.Module) -> nn.Module:
    # Only true encoder-decoders (Whisper) split; wav2vec2's `.encoder` is its transformer stack alone,
    # which takes hidden states rather than audio. CLAP checkpoints hold a text tower too: keep the audio one.
    if getattr(model.config, "is_encoder_decoder", False):
        return model.get_encoder()
    if model.config.model_type == "clap":
        return model.audio_model
    return model


def pool_frames(frames: torch.Tensor, lengths: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every `factor` consecutive real frames into one token; padding never enters a mean."""
    if factor == 1:
        return frames, lengths
    batch, width, dim = frames.shape
    mask = lengths_mask(lengths, width).to(frames.dtype)
    extra = (-width) % factor
    frames = nn.functional.pad(frames * mask.unsqueeze(-1), (0, 0, 0, extra))
    mask = nn.functional.pad(mask, (0, extra))
    sums = frames.view(batch, -1, factor, dim).sum(2)
    counts = mask.view(batch, -1, factor).sum(2).clamp(min=1)
    return sums / counts.unsqueeze(-1), (lengths + factor - 1) // factor


class AudioAdapter(nn.Module):
    """encoder -> masked frame pooling -> MLP projector (Linear-GELU-Linear) to the backbone width."""

    def __init__(
        self,
        encoder: BuiltinAudioEncoder | HFAudioEncoder,
        hidden_size: int,
        *,
        window_samples: int,
        token_pool: int,
    ):
        super().__init__()
        self.encoder = encoder
        dim = encoder.output_dim
        self.projector = nn.Sequential(nn.Linear(dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        self.window_tokens = encoder.output_length(window_samples)
        self.token_pool = token_pool

    def pool_factor(self, budget: int) -> int:
        """Frames per token: at least `token_pool`, more when a full window would overflow the backbone."""
        if budget < 1:
            raise ValueError(f"the backbone's max_length leaves no room for audio tokens (budget {budget})")
        return max(self.token_pool, math.ceil(self.window_tokens / budget))

    def forward(self, batch: dict[str, Any], runtime: Runtime) -> TokenEmbeddings:
        frames, lengths = self.encoder(batch["inputs"], batch["lengths"])
        budget = runtime.content_budget("audio")
        tokens, lengths = pool_frames(frames, lengths.to(frames.device), self.pool_factor(budget))
        # A last guard for encoders whose frame rate we could only estimate: never exceed the budget.
        tokens, lengths = tokens[:, :budget], lengths.clamp(max=budget)
        embeds = self.projector(tokens)
        return TokenEmbeddings(embeds, lengths_mask(lengths, embeds.size(1)))

