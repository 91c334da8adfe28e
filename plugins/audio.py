"""Audio: soundfile decoding, torchaudio resampling, and an owned encoder plus MLP projector.

One embedding covers one *window* of audio (`window_seconds`, default 10 s):

- a file or waveform without a locator embeds its first window (the whole clip when it is shorter);
- an item with `Locator(t0=..., t1=...)` embeds exactly that span, which must fit in one window;
- `chunk(item)` splits a long clip into located windows, so indexing covers all of it.

In memory, pass `Item(modality="audio", data=Waveform(samples, sample_rate))` (detected without the
modality too), or `Item(modality="audio", data=(samples, sample_rate))`. `samples` is a numpy array or
tensor shaped (frames,) or (frames, channels), as `soundfile.read` returns; integer PCM is scaled to
[-1, 1).

The encoder and projector are *owned*: fusion copies them from the audio specialist, and recovery
retrains the projector alone (`recovery_plan`). With `encoder="hf"`, `encoder_source` names a local
directory or hub id of a Hugging Face audio model (Whisper's encoder, CLAP's audio tower, AST,
wav2vec2, HuBERT, ...), frozen by default (`freeze_encoder`); its configs are recorded in this plugin's
config on first build, so a saved checkpoint rebuilds it from the manifest and loads its weights
from model.safetensors, without the source directory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from omnisdk.hookspecs import hookimpl
from omnisdk.isolation import captured_stderr
from omnisdk.items import Item, Locator
from omnisdk.modality import (
    BuildContext,
    FusionSpec,
    Instructions,
    ModalityPlugin,
    PluginConfig,
    Prepared,
    RecoveryPlan,
    Runtime,
    TrainingDefaults,
    run_per_item,
)

#: Peak amplitude under which a clip counts as silent (-100 dBFS): it would embed as noise.
SILENCE_PEAK = 1e-5
#: Peak amplitude over which float samples are not audio (+60 dBFS; full scale is 1.0): their spectrogram's
#: power overflows float32 (samples at 1e30 gave NaN vectors, and NaN gradients that ended a training run).
LOUD_PEAK = 1e3
#: A last chunk shorter than this is dropped: too short to say anything, and it would be mostly padding.
MIN_TAIL_SECONDS = 0.1
#: Shorter clips get trailing silence up to this length: STFT and convolutional front ends need a
#: minimum input (25 ms for the log-mel window, 400 samples for wav2vec2), and one short clip must
#: not fail its whole batch inside `featurize`.
MIN_CLIP_SECONDS = 0.1
#: Slack for float arithmetic when checking that a located span fits in one window.
SPAN_TOLERANCE = 1e-3
DECODE_ERRORS = (OSError, RuntimeError, ValueError, TypeError)


class AudioConfig(PluginConfig):
    #: "builtin": the small log-mel transformer below; "hf": a Hugging Face audio encoder.
    encoder: Literal["builtin", "hf"] = "builtin"
    #: rate the built-in encoder works at; an "hf" encoder uses its feature extractor's rate.
    sample_rate: int = Field(16_000, gt=0)
    n_mels: int = Field(64, gt=0)
    #: width, depth and heads of the built-in encoder (heads None: dim // 64, at least 1).
    encoder_dim: int = Field(192, gt=0)
    encoder_layers: int = Field(2, ge=1)
    encoder_heads: int | None = None
    #: built-in encoder: standardise each clip's log-mel (one mean and deviation per clip) and
    #: layer-norm the convolutional front end's output before the positions are added. Off keeps
    #: checkpoints made before it loadable. On the small preset's dev split (scripts/align_study.py, 120 steps
    #: of 64 audio pairs, lr 3e-3) it lifted t2a hit@1 0.17 -> 0.33 and a2t 0.13 -> 0.21 (loss 2.89 -> 1.37).
    input_norm: bool = False
    #: built-in encoder's front end: "conv1d" (each mel bin its own weights) or "pitch_timbre" (shared
    #: 2-D filters max-pooled over frequency, plus coarse band energies; see PitchTimbreFront).
    front_end: Literal["conv1d", "pitch_timbre"] = "conv1d"
    #: seconds of audio per embedding; an "hf" encoder with a fixed input length (Whisper) caps it.
    window_seconds: float = Field(10.0, gt=0)
    #: longer files and waveforms are refused outright (a guard, like the image plugin's max_pixels).
    max_seconds: float = Field(4 * 3600.0, gt=0)
    #: encoder frames averaged into one backbone token (raised automatically if a window would overflow).
    token_pool: int = Field(4, ge=1)
    #: "hf" only: a local directory or Hugging Face hub id (openai/whisper-tiny, laion/clap-htsat-unfused,
    #: MIT/ast-finetuned-audioset-10-10-0.4593, facebook/wav2vec2-base, facebook/hubert-base-ls960, ...)
    #: with config.json, safetensors and preprocessor_config.json. Read once, when the model is first created.
    encoder_source: str | None = None
    #: whether training leaves the encoder as it is (only the projector learns); None: frozen for "hf"
    #: (pretrained) encoders, trained for the built-in (random) one.
    freeze_encoder: bool | None = None
    #: "hf" only, recorded at first build: the encoder's config and its feature extractor's config.
    encoder_config: dict[str, Any] | None = None
    feature_extractor_config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _hf_needs_a_source(self) -> AudioConfig:
        if self.encoder == "hf" and not self.encoder_source and not (self.encoder_config and self.feature_extractor_config):
            raise ValueError(
                "audio encoder='hf' needs encoder_source: a local directory or hub id of a Hugging Face audio model"
            )
        return self


@dataclass(frozen=True, eq=False)
class Waveform:
    """Audio in memory: samples shaped (frames,) or (frames, channels), and their sample rate in Hz."""

    samples: Any
    sample_rate: int

    @property
    def frames(self) -> int:
        shape = tuple(getattr(self.samples, "shape", None) or np.shape(self.samples))
        return int(shape[0]) if shape else 0


class AudioPlugin(ModalityPlugin):
    name = "audio"
    version = "0.1.0"
    description = "WAV, FLAC, OGG/Opus, MP3, AIFF audio through an owned encoder and MLP projector"
    extra = "audio"
    requires = ("soundfile", "torchaudio")
    # What libsndfile >= 1.1 (bundled with soundfile >= 0.12 wheels) decodes.
    extensions = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
    python_types = ("omnisdk.plugins.audio.Waveform",)
    Config = AudioConfig
    config: AudioConfig
    instructions = Instructions(query="Find audio that matches: ", document="Audio: ")
    aspect_prompts = ("the whole sound", "the sound sources in it", "their pitch, loudness and timbre", "their timing and order")
    fusion = FusionSpec(shared=[], owned=["encoder.*", "projector.*"], recovery=True)
    training = TrainingDefaults(learning_rate=1e-4, steps=300, batch_size=16)

    # -- the contract --------------------------------------------------------------------------
    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        encoder = runtime.adapter(self.name).encoder
        rate, window = self.sample_rate, self.window_seconds
        waves, ok, errors = run_per_item(items, lambda item: self.load(item, rate, window), DECODE_ERRORS)
        if not waves:
            return Prepared(batch=None, ok=[], errors=errors)
        inputs, lengths = encoder.featurize(waves)
        return Prepared(batch={"inputs": inputs, "lengths": lengths}, ok=ok, errors=errors)

    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        from omnisdk.plugins.audio_encoder import AudioAdapter, BuiltinAudioEncoder

        cfg = self.config
        if cfg.encoder == "hf":
            encoder = self._build_hf_encoder()
        else:
            encoder = BuiltinAudioEncoder(cfg.sample_rate, cfg.n_mels, cfg.encoder_dim, cfg.encoder_layers,
                                          cfg.encoder_heads, normalize=cfg.input_norm,
                                          front_end=cfg.front_end)
        return AudioAdapter(
            encoder,
            ctx.hidden_size,
            window_samples=round(self.window_seconds * self.sample_rate),
            token_pool=cfg.token_pool,
        )

    # -- optional behaviour ------------------------------------------------------------------------
    def chunk(self, item: Item) -> list[Item]:
        """Consecutive windows of `window_seconds` with Locator(t0, t1); a short clip is one chunk.

        An item that already has a locator, or whose duration cannot be read (missing, corrupt,
        too long), comes back as is, so that `preprocess` reports its cause.
        """
        if item.locator is not None:
            return [item]
        try:
            duration = self.duration(item)
        except DECODE_ERRORS:
            return [item]
        if duration > self.config.max_seconds or duration <= 0:
            return [item]
        window = self.window_seconds
        starts = [k * window for k in range(max(1, math.ceil(duration / window)))]
        if len(starts) > 1 and duration - starts[-1] < MIN_TAIL_SECONDS:
            starts.pop()
        return [item.with_locator(Locator(t0=t0, t1=min(t0 + window, duration))) for t0 in starts]

    def length_hint(self, item: Item) -> int:
        """Milliseconds of audio this item will embed; 0 when that cannot be read cheaply."""
        if item.locator is not None and item.locator.t0 is not None:
            end = item.locator.t1 if item.locator.t1 is not None else item.locator.t0 + self.window_seconds
            return max(0, int((end - item.locator.t0) * 1000))
        try:
            return int(min(self.duration(item), self.window_seconds) * 1000)
        except DECODE_ERRORS:
            return 0

    def recovery_plan(self, adapter_prefix: str) -> RecoveryPlan | None:
        """Projector Recovery: only the projector trains; the owned encoder stays as its specialist left it.

        The encoder's features do not depend on the backbone, so after fusion only the map into the
        fused backbone's input space is miscalibrated.
        """
        return RecoveryPlan(trainable=[f"{adapter_prefix}projector.*"], learning_rate=1e-3, steps=200)

    def describe_locator(self, locator: Locator | None) -> str:
        if locator is None or locator.t0 is None:
            return ""
        return f"{locator.t0:.2f}-{locator.t1:.2f} s" if locator.t1 is not None else f"from {locator.t0:.2f} s"

    # -- settings that depend on the encoder ------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The rate clips are resampled to: the HF feature extractor's, else `sample_rate`."""
        fe = self.config.feature_extractor_config
        if self.config.encoder == "hf" and fe and fe.get("sampling_rate"):
            return int(fe["sampling_rate"])
        return self.config.sample_rate

    @property
    def window_seconds(self) -> float:
        """`window_seconds`, capped by a fixed-length HF encoder's input (Whisper: chunk_length, CLAP and AST: ~10 s)."""
        from omnisdk.plugins.audio_encoder import fixed_input_seconds

        fe = self.config.feature_extractor_config
        fixed = fixed_input_seconds(fe) if self.config.encoder == "hf" and fe else None
        return min(self.config.window_seconds, fixed) if fixed else self.config.window_seconds

    def frozen(self) -> list[str]:
        """A pretrained ("hf") encoder stays as it was trained unless freeze_encoder=False; its projector trains."""
        freeze = self.config.freeze_encoder if self.config.freeze_encoder is not None else self.config.encoder == "hf"
        return ["encoder.*"] if freeze else []

    def _build_hf_encoder(self) -> nn.Module:
        from omnisdk.plugins.audio_encoder import HFAudioEncoder, build_hf_encoder, load_hf_encoder

        cfg = self.config
        if cfg.encoder_config and cfg.feature_extractor_config:
            model, fe = build_hf_encoder(cfg.encoder_config, cfg.feature_extractor_config)
        else:
            model, fe, encoder_config, fe_config = load_hf_encoder(cfg.encoder_source)
            # Recorded so the manifest can rebuild this encoder where encoder_source does not exist.
            self.config = cfg.model_copy(update={"encoder_config": encoder_config, "feature_extractor_config": fe_config})
        return HFAudioEncoder(model, fe)

    # -- decoding --------------------------------------------------------------------------------
    def duration(self, item: Item) -> float:
        """Seconds of audio in the item's source (file header or waveform), ignoring its locator."""
        if item.path is not None:
            frames, rate = _file_info(Path(item.path))
        else:
            wave = _waveform_of(item.data)
            frames, rate = wave.frames, wave.sample_rate
        return frames / rate

    def load(self, item: Item, rate: int, window: float) -> torch.Tensor:
        """The item's span as float32 mono at `rate` Hz: [samples]. Raises with the cause for a bad item."""
        if item.locator is not None and item.locator.page is not None:
            raise ValueError(f"audio has no pages (locator {item.locator})")
        if item.path is not None:
            path = Path(item.path)
            frames, source_rate = _file_info(path)
            start, stop = self._span(frames, source_rate, item.locator, window)
            samples = _read_file(path, start, stop)
        else:
            wave = _waveform_of(item.data)
            source_rate = wave.sample_rate
            start, stop = self._span(wave.frames, source_rate, item.locator, window)
            samples = to_mono(wave.samples)[start:stop]
        return _finish(samples, source_rate, rate)

    def _span(self, frames: int, rate: int, locator: Locator | None, window: float) -> tuple[int, int]:
        """First and past-the-end frame to decode: the locator's span, else the first window."""
        duration = frames / rate
        if frames <= 0:
            raise ValueError("the audio has no samples")
        if duration > self.config.max_seconds:
            raise ValueError(
                f"audio is {duration:.0f} s long, over max_seconds={self.config.max_seconds:.0f} "
                "(raise the audio plugin's max_seconds to allow it)"
            )
        if locator is None or locator.t0 is None:
            return 0, min(frames, round(window * rate))
        t0 = locator.t0
        t1 = locator.t1 if locator.t1 is not None else min(t0 + window, duration)
        if t0 < 0 or t1 <= t0:
            raise ValueError(f"locator {t0}-{t1} s is not a time span (need 0 <= t0 < t1)")
        if t0 >= duration:
            raise ValueError(f"locator starts at {t0:.2f} s, after the end of the {duration:.2f} s clip")
        if t1 - t0 > window + SPAN_TOLERANCE:
            raise ValueError(
                f"locator span {t0:.2f}-{t1:.2f} s is {t1 - t0:.2f} s, longer than one window of {window:g} s; "
                "split it with the audio plugin's chunk()"
            )
        return round(t0 * rate), min(frames, round(t1 * rate))


def _file_info(path: Path) -> tuple[int, int]:
    """(frames, sample rate) from the header, with causes a user can act on."""
    import soundfile

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise ValueError("the file is empty (0 bytes)")
    try:
        with captured_stderr() as chatter:  # libsndfile's mpg123 prints to fd 2 on random bytes
            info = soundfile.info(str(path))
    except soundfile.LibsndfileError as exc:
        raise ValueError(_decode_cause(path, exc, chatter)) from exc
    return int(info.frames), int(info.samplerate)


def _read_file(path: Path, start: int, stop: int) -> np.ndarray:
    import soundfile

    try:
        with captured_stderr() as chatter:
            samples, _ = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ValueError(_decode_cause(path, exc, chatter)) from exc
    return samples.mean(axis=1)


def _decode_cause(path: Path, exc: Exception, chatter: Sequence[str] = ()) -> str:
    reason = getattr(exc, "error_string", None) or str(exc)
    if "possibly a pipe" in reason:  # libsndfile's guess when no format matched; special files never get here
        reason = "no audio format recognised"
    cause = f"cannot decode {path.name} as audio: {reason} (truncated, corrupt, or not audio)"
    if chatter:
        cause += f" [decoder log: {'; '.join(chatter)}]"
    if path.suffix.lower() == ".mp3":
        cause += "; MP3 needs libsndfile >= 1.1 (soundfile >= 0.12 wheels bundle it)"
    return cause


def _waveform_of(data: Any) -> Waveform:
    if isinstance(data, Waveform):
        wave = data
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], (int, np.integer)):
        wave = Waveform(data[0], int(data[1]))
    else:
        raise TypeError(
            f"expected an audio file, a Waveform(samples, sample_rate) or a (samples, sample_rate) tuple, "
            f"got {type(data).__name__}"
        )
    if wave.sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {wave.sample_rate}")
    return wave


def to_mono(samples: Any) -> np.ndarray:
    """float32 [frames] from a numpy array or tensor shaped (frames,) or (frames, channels)."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().to("cpu").numpy()
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise ValueError(f"audio samples must be shaped (frames,) or (frames, channels), got shape {array.shape}")
    if array.ndim == 2 and array.shape[0] <= 32 < array.shape[1]:
        raise ValueError(
            f"audio samples have shape {array.shape}, which looks like (channels, frames); "
            "pass (frames, channels) as soundfile returns, e.g. samples.T"
        )
    if np.issubdtype(array.dtype, np.integer):
        # Integer PCM: scale to [-1, 1) the way soundfile does when it reads a file as float.
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    array = array.astype(np.float32, copy=False)
    return array.mean(axis=1) if array.ndim == 2 else array


def _finish(samples: np.ndarray, source_rate: int, rate: int) -> torch.Tensor:
    """Resample to `rate` and refuse what would embed as noise: no samples, NaN/inf, silence, absurd peaks."""
    import torchaudio

    if samples.size == 0:
        raise ValueError("the requested span holds no audio samples")
    if not np.isfinite(samples).all():
        raise ValueError("the audio holds NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak < SILENCE_PEAK:
        raise ValueError(f"the audio is silent (peak amplitude {peak:.1e}, below {SILENCE_PEAK:.0e})")
    if peak > LOUD_PEAK:
        raise ValueError(f"the samples reach {peak:.1e}, far outside full scale (1.0): not audio, or float samples "
                         "that need scaling to [-1, 1] first")
    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if source_rate != rate:
        wave = torchaudio.functional.resample(wave, source_rate, rate)
    shortfall = math.ceil(MIN_CLIP_SECONDS * rate) - wave.numel()
    return nn.functional.pad(wave, (0, shortfall)) if shortfall > 0 else wave


@hookimpl
def omnisdk_register_modalities(register):
    register(AudioPlugin)
