"""OmniModel: a shared Hugging Face backbone fed `inputs_embeds` by one adapter per modality plugin."""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence, overload

import numpy as np
import torch
from torch import nn

from omnisdk import checkpoint as ckpt
from omnisdk import aspects as agff
from omnisdk import chat, compression, interleave, vlm
from omnisdk.backbone import BackboneSpec, Pooling, build_from_spec, load_pretrained, pool, spec_of, special_token_frame
from omnisdk.backbone import decoder_setup, left_pad, restore_tokenizer
from omnisdk.errors import ItemError, ItemErrors, ModalityDetectionError, OmniError
from omnisdk.faults import kill_point
from omnisdk.items import Item, as_item
from omnisdk.modality import (
    BuildContext,
    ModalityPlugin,
    Prepared,
    RecoveryPlan,
    Runtime,
    TokenEmbeddings,
    parameter_owner,
    with_dependencies,
)
from omnisdk.plugin_manager import get_modality, get_plugin_manager, modality_classes
from omnisdk.precision import Precision, check_precision
from omnisdk.timing import PhaseTimer

if TYPE_CHECKING:
    from omnisdk.prepared import PreparedCache

log = logging.getLogger(__name__)
Role = Literal["query", "document"]
ErrorPolicy = Literal["warn", "raise", "ignore"]


class OmniModel(nn.Module):
    """Embeds text, images, videos, PDF pages and audio into one L2-normalised vector space."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        plugins: Mapping[str, ModalityPlugin],
        spec: BackboneSpec,
        lineage: ckpt.Lineage | None = None,
    ):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            # BERT-style pooler heads are never used by our pooling; dropping them keeps every
            # parameter trained (DDP insists) and out of task vectors.
            backbone.pooler = None
        compression.attach(backbone, spec.compression_tokens)  # before loading: they are backbone weights
        agff.attach(backbone, spec.aspects)  # AGFF aspect tokens and aggregation: backbone weights too
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.spec = spec
        self.plugins: dict[str, ModalityPlugin] = _dependency_order(plugins)
        self.lineage = lineage or ckpt.Lineage()
        self.runtime = Runtime(self)
        self._fingerprint: str | None = None
        self._prefix_ids, self._suffix_ids = special_token_frame(tokenizer)
        # instruction ids by modality and role; the chat template's (before, after) ids and texts
        self._instruction_cache: dict[str, Any] = {}
        self.precision = "fp32"
        self.prepared_cache: PreparedCache | None = None
        #: the checkpoint directory this model was loaded from or last saved to; None for an unsaved model.
        #: Indexer records it in the collection, so a Searcher can load the model without being told where.
        self.directory: Path | None = None
        # One fast tokenizer must not be used from two threads at once (a prefetch thread tokenises
        # text while the training thread embeds a page's text).
        self._tokenizer_lock = threading.RLock()
        self._vision_backbone = vlm.is_vision_backbone(backbone)
        build = BuildContext(hidden_size=self.hidden_size, tokenizer=tokenizer, plugins=self.plugins,
                             backbone=backbone, backbone_source=spec.source)
        self.adapters = nn.ModuleDict()
        for name, plugin in self.plugins.items():
            self.adapters[name] = plugin.build_adapter(build)
            plugin.bind(self.runtime)
        self.eval()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        backbone: str | Path | nn.Module,
        tokenizer: Any = None,
        plugins: Mapping[str, dict[str, Any] | None] | Sequence[str] | None = None,
        *,
        pooling: Pooling | None = None,
        max_length: int = 256,
        trust_remote_code: bool = False,
        seed: int | None = 0,
    ) -> OmniModel:
        """A new base model: a pretrained (or given) backbone plus freshly initialised adapters.

        `plugins` maps modality names to their config dicts; None means every available plugin
        with default settings. `pooling` None: mean for encoders, last token for decoder LLMs.
        """
        source = None
        if isinstance(backbone, (str, Path)):
            source = str(backbone)
            backbone, loaded_tokenizer = load_pretrained(backbone, trust_remote_code=trust_remote_code)
            tokenizer = tokenizer or loaded_tokenizer
        if tokenizer is None:
            raise OmniError("a backbone module needs its tokenizer: pass tokenizer=...")
        if seed is not None:
            torch.manual_seed(seed)
        instances = _instantiate_plugins(plugins)
        tokenizer, pooling, padding_side = decoder_setup(backbone, tokenizer, pooling)
        spec = spec_of(backbone, pooling, max_length, source, padding_side)
        spec.chat_template = chat.applies(backbone, tokenizer)
        return cls(backbone, tokenizer, instances, spec)

    @classmethod
    def from_preset(
        cls,
        name: str = "tiny",
        *,
        modalities: list[str] | None = None,
        backbone: str | Path | None = None,
        seed: int = 0,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> OmniModel:
        """A new base model from a named preset (`omnisdk.presets.list_presets()`: "tiny", "small").

        Args:
            name: the preset; "tiny" is a small random model that builds offline in seconds.
            modalities: the plugins to include (and those they use); None: every available plugin.
            backbone: a local Hugging Face checkpoint that replaces the preset's backbone.
            seed: seeds the fresh adapters (and the tiny preset's random backbone).
            overrides: plugin settings by modality, e.g. `{"heatmap": {"grid_rows": 16}}`.

        Returns:
            A new OmniModel, not yet saved (`model.save(directory)` writes it as a checkpoint).

        Raises:
            OmniError: for an unknown preset or an unusable backbone.
            PluginNotInstalledError: a modality whose plugin is not installed (the error names the pip command).
        """
        from omnisdk.presets import build_base

        return build_base(name, modalities=modalities, backbone=backbone, seed=seed, overrides=overrides)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device | None = None,
        modalities: Iterable[str] | None = None,
        verify: bool = True,
        precision: Precision = "fp32",
    ) -> OmniModel:
        """Load a checkpoint directory; never unpickles. The model remembers it as `model.directory`.

        Args:
            directory: a checkpoint directory (manifest.json, safetensors weights, tokenizer).
            device: where the model runs (default: CUDA if available, else the CPU).
            modalities: load only these plugins (None: every plugin the manifest names).
            verify: check the weights against the manifest's sha256 fingerprint.
            precision: how `encode` computes ("fp32", "bf16", ...; see the `precision` property); the
                weights stay float32.

        Returns:
            The OmniModel, in eval mode.

        Raises:
            CheckpointError: a missing or damaged file, or weights that do not match the fingerprint.
            PluginNotInstalledError: the manifest names a plugin that is not installed (with the pip command).
            PluginUnavailableError: a plugin whose optional libraries are missing.
        """
        from transformers import AutoTokenizer

        directory = Path(directory)
        manifest = ckpt.read_manifest(directory)
        wanted = set(modalities) if modalities is not None else None
        plugins = {}
        for entry in manifest.plugins:
            if wanted is not None and entry.name not in wanted:
                continue
            plugin_cls = get_modality(entry.name, package=entry.package, extra=entry.extra)
            plugins[entry.name] = plugin_cls(entry.config)
        tokenizer = AutoTokenizer.from_pretrained(str(directory / ckpt.TOKENIZER_DIR), trust_remote_code=False)
        if manifest.backbone.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ckpt.CheckpointError(f"{directory / ckpt.TOKENIZER_DIR} lost the chat template its manifest frames inputs with")
        restore_tokenizer(tokenizer, manifest.backbone)
        backbone = build_from_spec(manifest.backbone)
        model = cls(backbone, tokenizer, plugins, manifest.backbone, manifest.lineage)
        model.precision = precision
        state = ckpt.load_weights(directory)
        if verify and ckpt.fingerprint(state.items()) != manifest.fingerprint:
            raise ckpt.CheckpointError(
                f"{directory / ckpt.WEIGHTS} does not match the fingerprint in its manifest: the weights were "
                "changed or damaged after saving"
            )
        if wanted is not None:
            kept = tuple(["backbone."] + [f"adapters.{m}." for m in plugins])
            state = {k: v for k, v in state.items() if k.startswith(kept)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ckpt.CheckpointError(
                f"{directory} does not fit its manifest: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        model._fingerprint = manifest.fingerprint if wanted is None else None
        # A partial load is another model (another fingerprint): it has no directory of its own.
        model.directory = directory if wanted is None else None
        return model.to(device or default_device())

    def save(self, directory: str | Path, lineage: ckpt.Lineage | None = None) -> ckpt.Manifest:
        """Write the checkpoint directory: weights, tokenizer, then the manifest last (it marks completion)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if lineage is not None:
            self.lineage = lineage
        state = self.state_dict()
        ckpt.save_weights(state, directory / ckpt.WEIGHTS)
        self.tokenizer.save_pretrained(str(directory / ckpt.TOKENIZER_DIR))
        kill_point("save.weights")
        self._fingerprint = ckpt.fingerprint(state.items())
        manifest = ckpt.Manifest(
            backbone=self.spec,
            plugins=[
                ckpt.PluginEntry(name=n, version=p.version, package=p.package, extra=p.extra, config=p.config.model_dump())
                for n, p in self.plugins.items()
            ],
            fingerprint=self._fingerprint,
            lineage=self.lineage,
        )
        ckpt.write_manifest(directory, manifest)
        self.directory = directory
        return manifest

    # -- properties ---------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(vlm.text_config(self.backbone.config).hidden_size)

    @property
    def dim(self) -> int:
        """Dimension of the output vectors."""
        return self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights; identifies the model in collections and lineages."""
        if self._fingerprint is None:
            self._fingerprint = ckpt.fingerprint(self.state_dict().items())
        return self._fingerprint

    @property
    def precision(self) -> Precision:
        """How `encode` computes: "fp32" (exact, the default) or "bf16" (autocast; float32 unit vectors out)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    def inference_precision(self) -> contextlib.AbstractContextManager:
        """The context `encode`'s forward passes run in: bf16 autocast for "bf16", nothing for "fp32".

        Autocast rather than bf16 weights: the residual stream, LayerNorm and pooling stay float32,
        which keeps the vectors within 1e-4 of fp32 (bf16 weights measured 2-3x further off, and no faster).
        """
        if self._precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def parameter_owner(self, name: str) -> tuple[str, str]:
        """(owner, kind) of a parameter: ("backbone", "shared") or (modality, "shared" | "owned")."""
        return parameter_owner(name, {m: p.fusion for m, p in self.plugins.items()})

    def recovery_plan(self, modality: str) -> RecoveryPlan | None:
        """What trains when `modality` is repaired after fusion: a hook's answer, else the plugin's default."""
        plan = get_plugin_manager().hook.omnisdk_recovery_plan(modality=modality, model=self)
        if plan is not None:
            return plan
        return self.plugins[modality].recovery_plan(f"adapters.{modality}.")

    # -- detection and preparation ------------------------------------------------------------------
    def detect(self, item: Item, classes: Mapping[str, type[ModalityPlugin]] | None = None) -> str:
        """The modality of an item: the one it states, else what the plugins' detection hooks say."""
        if item.modality is not None:
            return item.modality
        classes = classes if classes is not None else modality_classes()
        found = get_plugin_manager().hook.omnisdk_detect_modality(item=item, modalities=classes)
        if found is None:
            what = f"file type '{item.path.suffix or item.path.name}'" if item.path is not None else f"type {type(item.data).__name__}"
            raise ModalityDetectionError(f"no installed plugin accepts {what} (modalities: {', '.join(sorted(classes))})")
        return found

    def use_cache(self, cache: PreparedCache | str | Path | None = "default") -> OmniModel:
        """Serve `prepare` from a prepared-input cache: a PreparedCache, a directory, "default"
        ($OMNISDK_CACHE_DIR or the user cache directory), or None to turn caching off."""
        from omnisdk.prepared import PreparedCache

        if cache is None or isinstance(cache, PreparedCache):
            self.prepared_cache = cache
        else:
            self.prepared_cache = PreparedCache(None if cache == "default" else cache)
        return self

    def prepare(self, modality: str, items: Sequence[Item], role: Role | None = None, *,
                to_device: bool = True) -> Prepared:
        """Preprocess items of one modality into a batch (on this model's device unless `to_device=False`).

        With a prepared-input cache (`use_cache`), rows prepared before are read instead of decoded.
        """
        plugin = self.plugins[modality]
        if modality == "text" and self.spec.chat_template:  # the text goes into the template as the user's turn
            before, after = self._chat_text(role)
            items = [_instructed(plugin, it, before, self.runtime, after) for it in items]
        elif modality == "text" and role is not None:
            instruction = getattr(plugin.instructions, role)
            if instruction:
                items = [_instructed(plugin, it, instruction, self.runtime) for it in items]
        # An image (or any file) with text: the plugin prepares the file, the text rides along.
        texts = None
        if modality != "text" and (found := interleave.split(items)) is not None:
            items, texts = found
        with self._tokenizer_lock if modality == "text" else contextlib.nullcontext():
            if self.prepared_cache is not None:
                prepared = self.prepared_cache.prepare(self, modality, items)
            else:
                prepared = plugin.preprocess(items, self.runtime)
        if texts is not None:
            prepared = interleave.attach(prepared, texts)
        if to_device:
            prepared.batch = _to_device(prepared.batch, self.device)
        return prepared

    def forward_batch(self, modality: str, batch: Any, role: Role | None = None) -> torch.Tensor:
        """Embed a prepared batch: adapter, framing, backbone, pooling, L2 normalisation. Keeps gradients.

        One vector per row; for an AGFF model the normalised mean of its aspect vectors."""
        if self.spec.aspects is not None:
            return agff.pooled(self.forward_aspects(modality, batch, role))
        hidden, mask, positions = self.forward_tokens(modality, batch, role)
        if positions is not None:
            pooled = compression.pool(hidden, positions)
        else:
            pooled = pool(hidden, mask, self.spec.pooling)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def forward_aspects(self, modality: str, batch: Any, role: Role | None = None) -> torch.Tensor:
        """The K unit aspect vectors (B, K, D) of a prepared batch, from one forward pass (AGFF models)."""
        module = agff.tokens_of(self.backbone)
        if module is None:
            raise OmniError("this model has no aspects: build one with `omnisdk init --aspects K`")
        tokens = self._framed(modality, batch, role)
        if self.spec.pooling == "compression":
            tokens, _ = compression.append(tokens, compression.tokens_of(self.backbone))
        tokens, positions = agff.append(tokens, module.tokens(modality))
        # Right padding even for decoders: the aspect tokens' positions are known, and a causal
        # model's states before the padding do not depend on it.
        out = self.backbone(inputs_embeds=tokens.embeds, attention_mask=tokens.mask)
        vectors = compression.gather(out.last_hidden_state, positions)
        return torch.nn.functional.normalize(vectors.float(), dim=-1)

    def forward_embeddings(self, modality: str, batch: Any, role: Role | None = None) -> torch.Tensor:
        """What training compares: (B, K, D) aspect vectors for an AGFF model, else (B, D) vectors."""
        if self.spec.aspects is not None:
            return self.forward_aspects(modality, batch, role)
        return self.forward_batch(modality, batch, role)

    def forward_tokens(self, modality: str, batch: Any, role: Role | None = None):
        """(last hidden states, mask, compression token positions or None) of a prepared batch; with
        pooling "compression" the compression tokens are appended to every row."""
        tokens = self._framed(modality, batch, role)
        positions = None
        if self.spec.pooling == "compression":
            tokens, positions = compression.append(tokens, compression.tokens_of(self.backbone))
        elif self.spec.padding_side == "left":  # decoders: the pooled last token sits at the final position
            embeds, mask, position_ids = left_pad(tokens.embeds, tokens.mask)
            if self._vision_backbone:  # the model's multimodal RoPE: image tokens by their patch grid
                position_ids = vlm.rope_positions(self.backbone, vlm.left_padded_types(tokens), mask, tokens.grids)
            out = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids)
            return out.last_hidden_state, mask, None
        extra = {}
        if self._vision_backbone:
            extra["position_ids"] = vlm.rope_positions(self.backbone, vlm.types_of(tokens), tokens.mask, tokens.grids)
        out = self.backbone(inputs_embeds=tokens.embeds, attention_mask=tokens.mask, **extra)
        return out.last_hidden_state, tokens.mask, positions

    def _framed(self, modality: str, batch: Any, role: Role | None) -> TokenEmbeddings:
        if isinstance(batch, interleave.WithText):
            tokens = interleave.tokens(self, modality, batch)
        else:
            tokens = self.adapters[modality](batch, self.runtime)
        return tokens if tokens.framed else self._frame(tokens, modality, role)

    # -- AGFF ---------------------------------------------------------------------------------------------
    @property
    def embedding_kind(self) -> str:
        """"agff" for a model with K aspect vectors per item, else "single"."""
        return "single" if self.spec.aspects is None else "agff"

    @property
    def aspect_count(self) -> int:
        """K, the aspect vectors per item; 0 for a single-vector model."""
        return 0 if self.spec.aspects is None else self.spec.aspects.count

    @property
    def aspect_tokens(self) -> agff.AspectTokens | None:
        return agff.tokens_of(self.backbone)

    def enable_aspects(self, count: int, prompts: Mapping[str, Sequence[str]] | None = None, *,
                       pairs: str = "all", learn_weights: bool = True,
                       temperature: float = agff.DEFAULT_TEMPERATURE) -> agff.AspectTokens:
        """Make this (new) model an AGFF model with `count` aspects per item; tokens start from the prompts.

        `prompts` maps modalities to prompts and overrides the plugins' `aspect_prompts`.
        """
        from omnisdk.aggregation import check_pairs

        if self.spec.aspects is not None:
            raise OmniError(f"this model already has {self.spec.aspects.count} aspects")
        spec = agff.AspectSpec(count=count, prompts=agff.resolve_prompts(self.plugins, count, prompts),
                               pairs=check_pairs(pairs), learn_weights=learn_weights, temperature=temperature)
        self.spec = self.spec.model_copy(update={"aspects": spec})
        module = agff.attach(self.backbone, spec)
        with self._tokenizer_lock:
            agff.init_from_prompts(module, self.tokenizer, self.backbone.get_input_embeddings())
        self._fingerprint = None
        return module

    def similarity(self, queries: torch.Tensor | np.ndarray, items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Every query against every item: (N, M). Dot products of single vectors (N, D) x (M, D), or
        the AGFF aggregation (omnisdk/aggregation.py) of aspect vectors (N, K, D) x (M, K, D)."""
        q, d = torch.as_tensor(queries, dtype=torch.float32), torch.as_tensor(items, dtype=torch.float32)
        module = self.aspect_tokens
        if module is None or q.dim() == 2:
            return q @ d.T
        from omnisdk.aggregation import pairwise_sims

        with torch.no_grad():
            return module.aggregate(pairwise_sims(q, d.to(q.device), module.spec.pairs).to(module.log_temperature.device)).cpu()

    def embed_text_tokens(self, texts: Sequence[str], max_length: int | None = None) -> TokenEmbeddings:
        """Text as backbone token embeddings without special tokens, for adapters that mix text in."""
        with self._tokenizer_lock:
            enc = self._tokenize_plain(texts, max_length)
        embeds = self.backbone.get_input_embeddings()(enc["input_ids"])
        return TokenEmbeddings(embeds, enc["attention_mask"])

    def _tokenize_plain(self, texts: Sequence[str], max_length: int | None):
        return self.tokenizer(
            list(texts),
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length or self.spec.max_length,
            return_tensors="pt",
        ).to(self.device)

    def _frame(self, tokens: TokenEmbeddings, modality: str, role: Role | None) -> TokenEmbeddings:
        """Wrap content tokens in the backbone's special tokens, with the plugin's instruction first
        (or in the chat template, the instruction as its system message)."""
        if self.spec.chat_template:
            before, after = self._chat_ids(modality, role)
            prefix, suffix = list(self._prefix_ids) + before, after + list(self._suffix_ids)
        else:
            prefix, suffix = list(self._prefix_ids) + self._instruction_ids(modality, role), list(self._suffix_ids)
        parts = []
        batch = tokens.embeds.size(0)
        if prefix:
            parts.append(self._constant_tokens(prefix, batch))
        parts.append(tokens)
        if suffix:
            parts.append(self._constant_tokens(suffix, batch))
        framed = TokenEmbeddings.cat(parts) if len(parts) > 1 else tokens
        framed.framed = True
        return framed

    def content_budget(self, modality: str) -> int:
        """How many content tokens fit once framing and the longest instruction are added."""
        if self.spec.chat_template:
            longest = max(sum(map(len, self._chat_ids(modality, role))) for role in ("query", "document", None))
        else:
            longest = max(len(self._instruction_ids(modality, role)) for role in ("query", "document"))
        appended = self.spec.compression_tokens if self.spec.pooling == "compression" else 0
        appended += self.aspect_count  # AGFF aspect tokens
        return self.spec.max_length - len(self._prefix_ids) - len(self._suffix_ids) - longest - appended

    def _instruction_ids(self, modality: str, role: Role | None) -> list[int]:
        if role is None:
            return []
        key = f"{modality}:{role}"
        if key not in self._instruction_cache:
            text = getattr(self.plugins[modality].instructions, role)
            self._instruction_cache[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return self._instruction_cache[key]

    def _chat_ids(self, modality: str, role: Role | None) -> tuple[list[int], list[int]]:
        key = f"chat:{modality}:{role}"
        if key not in self._instruction_cache:
            instruction = getattr(self.plugins[modality].instructions, role) if role else ""
            with self._tokenizer_lock:
                self._instruction_cache[key] = chat.frame_ids(self.tokenizer, instruction)
        return self._instruction_cache[key]

    def _chat_text(self, role: Role | None) -> tuple[str, str]:
        """The template's text before and after a text item's own text (rendered once per role, like `_chat_ids`)."""
        key = f"chat-text:{role}"
        if key not in self._instruction_cache:
            instruction = getattr(self.plugins["text"].instructions, role) if role else ""
            self._instruction_cache[key] = chat.frame_text(self.tokenizer, instruction)
        return self._instruction_cache[key]

    def _constant_tokens(self, ids: list[int], batch: int) -> TokenEmbeddings:
        id_tensor = torch.tensor(ids, device=self.device).unsqueeze(0).expand(batch, -1)
        embeds = self.backbone.get_input_embeddings()(id_tensor)
        return TokenEmbeddings(embeds, torch.ones_like(id_tensor))

    # -- encoding -------------------------------------------------------------------------------------
    @overload
    def encode(self, items: Iterable[Any], *, batch_size: int = ..., aspects: bool = ..., role: Role | None = ...,
               show_progress: bool | None = ..., errors: ErrorPolicy = ..., return_errors: Literal[False] = ...,
               timer: PhaseTimer | None = ..., decode_workers: int | None = ...) -> np.ndarray: ...

    @overload
    def encode(self, items: Iterable[Any], *, batch_size: int = ..., aspects: bool = ..., role: Role | None = ...,
               show_progress: bool | None = ..., errors: ErrorPolicy = ..., return_errors: Literal[True],
               timer: PhaseTimer | None = ..., decode_workers: int | None = ...) -> tuple[np.ndarray, list[ItemError]]: ...

    def encode(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 32,
        aspects: bool = False,
        role: Role | None = None,
        show_progress: bool | None = None,
        errors: ErrorPolicy = "warn",
        return_errors: bool = False,
        timer: PhaseTimer | None = None,
        decode_workers: int | None = None,
    ) -> np.ndarray | tuple[np.ndarray, list[ItemError]]:
        """Embed items of any mix of modalities; one float32 unit vector per item, in input order.

        A `str` is text, a `Path` a file whose modality is detected, an `Item` says it all. A failed
        item's row is NaN and its cause is reported: `errors="warn"` warns, `"raise"` raises
        ItemErrors after embedding the rest (the good rows are on the exception), `"ignore"` is quiet.
        `return_errors=True` also returns the list of ItemError. A `timer` gets the seconds spent
        preprocessing ("decode": reading and decoding files, tokenizing) and in the model ("encode").
        `aspects=True` (AGFF models) returns the K aspect vectors of each item, (N, K, D), instead.

        Args:
            items: texts (`str`), files (`Path`), in-memory objects (a PIL image, a 2-D array) or Items.
            batch_size: items per forward pass (per modality).
            aspects: return the K aspect vectors of each item (AGFF models only).
            role: "query" or "document" prepends the plugins' instruction for that role; None: none.
            show_progress: a progress bar (None: on a terminal only).
            errors: what a failed item does: "warn", "raise" (ItemErrors after the rest) or "ignore".
            return_errors: also return the list of ItemError (index, item, cause).
            timer: collects the seconds spent decoding and encoding.
            decode_workers: threads that prepare later batches while the model embeds (None: up to 4,
                or $OMNISDK_DECODE_WORKERS; 0: one after the other); the result is the same either way.

        Returns:
            float32 array (N, D) of unit vectors, NaN rows for failed items ((N, K, D) with `aspects`);
            with `return_errors`, the pair (vectors, errors).

        Raises:
            ItemErrors: with `errors="raise"`, when any item failed; `.embeddings` holds the good rows.
            OmniError: `aspects=True` on a model without aspects.
        """
        from omnisdk.encode_stream import encode_windows

        items = [as_item(x) for x in items]
        if aspects and self.spec.aspects is None:
            raise OmniError("encode(aspects=True) needs an AGFF model (`omnisdk init --aspects K`); this one makes single vectors")
        if len(items) <= batch_size:  # one batch: nothing to overlap, no pool to start
            decode_workers = 0
        progress = _progress(len(items), show_progress)
        [(out, failures)] = list(encode_windows(self, [items], batch_size=batch_size, aspects=aspects, role=role,
                                                timer=timer, decode_workers=decode_workers, on_batch=progress.update))
        progress.close()
        self._report(failures, errors, out)
        return (out, failures) if return_errors else out

    @staticmethod
    def _report(failures: list[ItemError], policy: ErrorPolicy, out: np.ndarray) -> None:
        if not failures or policy == "ignore":
            return
        if policy == "raise":
            raise ItemErrors(failures, embeddings=out)
        for failure in failures:
            warnings.warn(str(failure), stacklevel=3)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _instantiate_plugins(plugins: Mapping[str, dict[str, Any] | None] | Sequence[str] | None) -> dict[str, ModalityPlugin]:
    if plugins is None:
        names = {n: None for n, c in modality_classes().items() if not c.missing_requirements()}
    elif isinstance(plugins, Mapping):
        names = dict(plugins)
    else:
        names = {n: None for n in plugins}
    if "text" not in names:
        names = {"text": None, **names}  # the backbone's own modality is always there
    instances = {name: get_modality(name)(config) for name, config in names.items()}
    # Add what the chosen plugins use, and what those use in turn, with default settings.
    for needed in with_dependencies(instances, lambda name: get_modality(name).uses):
        if needed not in instances:
            instances[needed] = get_modality(needed)()
    return instances


def _dependency_order(plugins: Mapping[str, ModalityPlugin]) -> dict[str, ModalityPlugin]:
    """Plugins sorted so that each comes after the ones it `uses` (their adapters are built first)."""
    ordered: dict[str, ModalityPlugin] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in trail:
            raise OmniError(f"plugins use each other in a cycle: {' -> '.join(trail + (name,))}")
        if name not in plugins:
            raise OmniError(f"plugin '{trail[-1]}' uses '{name}', which this model lacks")
        for dep in plugins[name].uses:
            visit(dep, trail + (name,))
        ordered[name] = plugins[name]

    for name in sorted(plugins, key=lambda n: (n != "text", n)):
        visit(name, ())
    return ordered


def _instructed(plugin, item: Item, instruction: str, runtime, after: str = "") -> Item:
    """A text item with the role's instruction in front (and `after` behind: the chat template's end);
    a file is read here so its text keeps the instruction."""
    if item.text is not None:
        return Item.of_text(instruction + item.text + after)
    reader = getattr(plugin, "text_of", None)
    if reader is None:
        return item
    try:
        return Item.of_text(instruction + reader(item, runtime) + after)
    except (OSError, UnicodeDecodeError, ValueError):
        return item  # preprocess reads it again and reports the cause for this item


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, interleave.WithText):
        return interleave.WithText(_to_device(obj.batch, device), obj.texts)
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        moved = [_to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)
    return obj


def _progress(total: int, show: bool | None):
    from tqdm.auto import tqdm

    if show is None:
        show = sys.stderr.isatty() and total > 64
    return tqdm(total=total, desc="encode", unit="item", disable=not show)
