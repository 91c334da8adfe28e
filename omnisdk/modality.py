"""The ModalityPlugin contract: preprocessing, an adapter, fusion metadata and defaults for one modality.

A subclass implements two methods, `preprocess` and `build_adapter`, and sets class attributes that
say what it accepts and how fusion treats its parameters. See docs/writing-plugins.md.
"""
from __future__ import annotations

import fnmatch
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from omnisdk.items import Item, Locator

if TYPE_CHECKING:
    import torch
    from torch import nn

    from omnisdk.model import OmniModel


class PluginConfig(BaseModel):
    """Base of every plugin's settings; saved in the checkpoint manifest."""

    model_config = ConfigDict(extra="forbid")


class Instructions(BaseModel):
    """Text prepended to an item's tokens when it is encoded as a query or as a document."""

    query: str = ""
    document: str = ""


class FusionSpec(BaseModel):
    """How fusion treats this plugin's adapter parameters.

    Patterns are fnmatch globs over parameter names relative to the adapter (e.g. `projector.*`).
    `shared` parameters are merged by task vectors like the backbone; `owned` ones are copied from
    this plugin's specialist. `recovery` says whether Projector Recovery applies after fusion.
    """

    shared: list[str] = ["*"]
    owned: list[str] = []
    recovery: bool = False

    def owner_kind(self, relative_name: str) -> str:
        if any(fnmatch.fnmatchcase(relative_name, p) for p in self.owned):
            return "owned"
        if any(fnmatch.fnmatchcase(relative_name, p) for p in self.shared):
            return "shared"
        raise ValueError(f"parameter '{relative_name}' matches neither shared {self.shared} nor owned {self.owned}")


def parameter_owner(name: str, fusion: dict[str, FusionSpec]) -> tuple[str, str]:
    """(owner, kind) of a model parameter: ("backbone", "shared") or (modality, "shared" | "owned").

    `fusion` maps each of the model's modalities to its plugin's FusionSpec; fusion uses this without
    building a model, OmniModel.parameter_owner with its own plugins.
    """
    if name.startswith("backbone."):
        return "backbone", "shared"
    if name.startswith("adapters."):
        modality, _, relative = name[len("adapters.") :].partition(".")
        if modality not in fusion:
            raise ValueError(f"parameter '{name}' belongs to modality '{modality}', which the model lacks")
        return modality, fusion[modality].owner_kind(relative)
    raise ValueError(f"parameter '{name}' belongs to neither the backbone nor an adapter")


class TrainingDefaults(BaseModel):
    """A modality's default specialist-training settings; a user config overrides any of them."""

    learning_rate: float = 5e-5
    steps: int = 200
    batch_size: int = 32
    temperature: float = 0.05
    warmup_ratio: float = 0.1
    #: train the specialist's backbone through low-rank adapters (default rank and targets; merged when
    #: training ends) instead of in full; a user's `lora` setting (a table, or none) overrides it.
    lora: bool = False


class RecoveryPlan(BaseModel):
    """What trains when a modality is repaired after fusion: full parameter names as fnmatch globs."""

    trainable: list[str]
    learning_rate: float = 1e-3
    steps: int = 200


@dataclass
class Prepared:
    """What `preprocess` returns: the batch of the good items and the cause of each bad one.

    `ok` lists the positions (in the items passed) of the rows of `batch`, in batch order;
    `errors` maps a position to its cause. Every position is in exactly one of the two.
    """

    batch: Any
    ok: list[int]
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class TokenEmbeddings:
    """An adapter's output: embeddings of the backbone's width and a mask of the real tokens.

    `framed` is True when the sequence already carries the backbone's special tokens (the text
    path tokenizes with them); otherwise the model adds them around the content.

    A vision-language backbone positions image tokens by their patch grid (M-RoPE): `mm_types`
    marks each token 0 text or 1 image, and `grids` lists, per row, the (t, h, w) patch grid of
    each image in it, in order. Both are None for every other backbone.
    """

    embeds: torch.Tensor  # [batch, tokens, hidden]
    mask: torch.Tensor  # [batch, tokens], 1 for real tokens
    framed: bool = False
    mm_types: torch.Tensor | None = None  # [batch, tokens]
    grids: list[torch.Tensor] | None = None  # per row: [images, 3]

    @staticmethod
    def cat(parts: Sequence[TokenEmbeddings]) -> TokenEmbeddings:
        """Concatenate per row, packing real tokens to the left so padding stays at the end."""
        import torch

        embeds = torch.cat([p.embeds for p in parts], dim=1)
        mask = torch.cat([p.mask.to(torch.long) for p in parts], dim=1)
        # A stable sort on "is padding" moves each row's real tokens first, keeping their order.
        order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
        embeds = torch.gather(embeds, 1, order.unsqueeze(-1).expand_as(embeds))
        mask = torch.gather(mask, 1, order)
        width = int(mask.sum(dim=1).max().item()) if mask.numel() else 0
        types, grids = None, None
        if any(p.mm_types is not None for p in parts):
            types = torch.cat([p.mm_types if p.mm_types is not None else torch.zeros_like(p.mask, dtype=torch.long)
                               for p in parts], dim=1)
            types = torch.gather(types.long(), 1, order)[:, :width]
            with_grids = [p.grids for p in parts if p.grids is not None]
            grids = [torch.cat([g[row] for g in with_grids]) for row in range(embeds.size(0))] if with_grids else None
        return TokenEmbeddings(embeds[:, :width], mask[:, :width], framed=any(p.framed for p in parts),
                               mm_types=types, grids=grids)


class Runtime:
    """What an adapter may use at forward time: the backbone's text embedding and the other adapters."""

    def __init__(self, model: OmniModel):
        self._model = model

    @property
    def hidden_size(self) -> int:
        return self._model.hidden_size

    @property
    def device(self) -> torch.device:
        return self._model.device

    @property
    def max_length(self) -> int:
        """The backbone's token budget for one sequence."""
        return self._model.spec.max_length

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def content_budget(self, modality: str) -> int:
        """Tokens an adapter may return: max_length less the special tokens and the longest instruction."""
        return self._model.content_budget(modality)

    def embed_text(self, texts: Sequence[str], max_length: int | None = None) -> TokenEmbeddings:
        """Tokenize and embed texts with the backbone's own tokenizer and input embeddings."""
        return self._model.embed_text_tokens(texts, max_length=max_length)

    def embed_token_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._model.backbone.get_input_embeddings()(input_ids)

    def adapter(self, modality: str) -> nn.Module:
        """Another modality's adapter, for plugins that reuse it (video and documents use the image tower)."""
        return self._model.adapters[modality]

    def plugin(self, modality: str) -> ModalityPlugin:
        return self._model.plugins[modality]


@dataclass
class BuildContext:
    """What `build_adapter` gets: the backbone's width and a way to reach the adapters it depends on."""

    hidden_size: int
    tokenizer: Any
    plugins: dict[str, ModalityPlugin]
    #: the backbone module: a vision-language backbone's own vision tower serves the visual plugins.
    backbone: Any = None
    #: where the backbone's weights came from (a directory or hub id), None for a rebuilt checkpoint.
    backbone_source: str | None = None


class ModalityPlugin(ABC):
    """One modality: what it accepts, how it turns inputs into a batch, and the adapter that embeds it.

    A subclass sets `name` and writes `preprocess` and `build_adapter`; everything else has a default.
    Register it with the `omnisdk_register_modalities` hook (docs/writing-plugins.md).

    Attributes:
        name: the modality's name ("image", "heatmap"), unique among installed plugins.
        version, description, package: what `omnisdk plugins` shows and checkpoints record.
        extra, requires: the pip extra (or package) and the importable modules it needs.
        extensions, fallback_extensions, python_types: what detection routes to it (see `accepts_path`,
            `accepts_object`).
        uses: other modalities whose adapters this one calls; they are built first.
        Config: its pydantic settings (a PluginConfig subclass); an instance is `self.config`.
        instructions: text put before an item encoded as a query or as a document.
        fusion: which adapter parameters fusion merges (shared) and which it copies (owned).
        training: default specialist-training settings.
        aspect_prompts: AGFF aspect prompts, by aspect index.

    Args:
        config: the plugin's settings: a Config instance, a dict validated into one, or None for defaults.

    Raises:
        pydantic.ValidationError: settings that `Config` refuses.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    #: pip extra (of omnisdk) or package that provides the libraries in `requires`.
    extra: ClassVar[str | None] = None
    package: ClassVar[str] = "omnisdk"
    #: importable modules it needs; "a|b" means either will do.
    requires: ClassVar[tuple[str, ...]] = ()
    #: file extensions it claims (lower case, with the dot); see `accepts_path`.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: extensions it also reads, claimed only when no plugin lists them in `extensions` (the text
    #: plugin reads .csv as text, but a plugin made for tables wins it).
    fallback_extensions: ClassVar[tuple[str, ...]] = ()
    #: dotted names of Python types it takes in memory, matched against the MRO without importing.
    python_types: ClassVar[tuple[str, ...]] = ()
    #: other modalities whose adapters this one calls; they are built first.
    uses: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    instructions: ClassVar[Instructions] = Instructions()
    fusion: ClassVar[FusionSpec] = FusionSpec()
    training: ClassVar[TrainingDefaults] = TrainingDefaults()
    #: AGFF aspect prompts (omnisdk/aspects.py): what each of an item's K aspect vectors is about,
    #: by index; aspect k means the same kind of thing in every modality (k=1 the item as a whole).
    aspect_prompts: ClassVar[tuple[str, ...]] = (
        "the whole item", "the objects in it", "their attributes: colour, size and shape", "their layout and relations",
    )

    def __init__(self, config: PluginConfig | dict[str, Any] | None = None):
        if isinstance(config, PluginConfig):
            self.config = config
        else:
            self.config = self.Config.model_validate(config or {})
        #: the runtime of the model that owns this plugin (see `bind`); None for a plugin on its own.
        self.runtime: Runtime | None = None

    def bind(self, runtime: Runtime) -> None:
        """Called by the model that owns this plugin once it is built: `chunk` may then size windows
        by the model's tokenizer and content budget.

        Args:
            runtime: the owning model's runtime; kept as `self.runtime`.
        """
        self.runtime = runtime

    # -- the two methods a plugin must write ------------------------------------------------
    @abstractmethod
    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        """Decode and prepare items; a bad item goes to `errors`, never raises for the batch.

        Args:
            items: items of this modality (files with their locators, or in-memory objects).
            runtime: the owning model's runtime (tokenizer, device, other adapters).

        Returns:
            Prepared: the batch of the good items (whatever the adapter takes), their indices in `ok`, and
            the cause of each bad one in `errors` (`run_per_item` builds both).
        """

    @abstractmethod
    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        """Build the module mapping a prepared batch to TokenEmbeddings: `adapter(batch, runtime)`.

        Args:
            ctx: the backbone's width (`hidden_size`), its tokenizer, the other plugins and the backbone.

        Returns:
            A torch module; its parameters are saved, trained and fused under `adapters.<name>.`.
        """

    # -- optional behaviour with sensible defaults -----------------------------------------------
    @classmethod
    def missing_requirements(cls) -> list[str]:
        """Modules in `requires` that cannot be imported here.

        Returns:
            One entry per missing requirement ("decord or av" for "decord|av"); empty when usable.
        """
        missing = []
        for need in cls.requires:
            options = need.split("|")
            if not any(importlib.util.find_spec(o) is not None for o in options):
                missing.append(" or ".join(options))
        return missing

    @classmethod
    def accepts_path(cls, path: Path) -> bool:
        """Whether detection may route this file here; default: its extension is in `extensions` or
        `fallback_extensions`. Override to claim files by name or content; a file no plugin accepts is
        then matched by its first bytes (magic numbers) against `extensions`.

        Args:
            path: the file (it may not exist, or be unreadable: return False rather than raise).

        Returns:
            Whether this plugin takes the file.
        """
        return path.suffix.lower() in cls.extensions + cls.fallback_extensions

    @classmethod
    def accepts_object(cls, obj: Any) -> bool:
        """Whether detection may route this in-memory object here; default: a class in its MRO is named in
        `python_types`. Of several plugins that accept it, the one naming the most specific class wins.

        Args:
            obj: an in-memory input (a PIL image, an array, a waveform).

        Returns:
            Whether this plugin takes the object.
        """
        names = {f"{t.__module__}.{t.__qualname__}" for t in type(obj).__mro__}
        return any(n in names for n in cls.python_types)

    def chunk(self, item: Item) -> list[Item]:
        """Split a long input into located chunks (pages, time windows); default: the item itself.

        Args:
            item: a file of this modality, perhaps already located (then return it as it is).

        Returns:
            Items with locators (`item.with_locator(...)`), in reading order. A file that cannot be read
            is returned whole, so that `preprocess` reports the cause.
        """
        return [item]

    def length_hint(self, item: Item) -> int:
        """A cheap size estimate used to sort a batch and limit padding.

        Args:
            item: an item of this modality.

        Returns:
            A relative size (tokens, frames); items of similar size are batched together.
        """
        return len(item.text or "")

    def length_hints(self, items: Sequence[Item], runtime: Runtime) -> list[int]:
        """Size estimates for many items at once; override when one batched call is cheaper.

        Args:
            items: items of this modality.
            runtime: the owning model's runtime.

        Returns:
            One `length_hint` per item, in order.
        """
        return [self.length_hint(item) for item in items]

    def frozen(self) -> list[str]:
        """Adapter parameter patterns (fnmatch, relative to the adapter) that no training stage changes.

        A pretrained encoder a plugin keeps as it is goes here; default: none.

        Returns:
            fnmatch patterns such as "encoder.*".
        """
        return []

    def recovery_plan(self, adapter_prefix: str) -> RecoveryPlan | None:
        """Default recovery after fusion: train the owned parameters in full, freeze all else.

        Args:
            adapter_prefix: the adapter's parameter prefix in the model ("adapters.audio.").

        Returns:
            The parameters to train and optional settings, or None when nothing needs recovering (no owned
            parameters, or `fusion.recovery` is off). The `omnisdk_recovery_plan` hook can override it.
        """
        if not self.fusion.recovery or not self.fusion.owned:
            return None
        return RecoveryPlan(trainable=[f"{adapter_prefix}{p}" for p in self.fusion.owned])

    def describe_locator(self, locator: Locator | None) -> str:
        """A chunk's place in words for result lists ("page 3", "rows 512-1023"); "" for a whole file.

        Args:
            locator: a chunk's locator, or None.

        Returns:
            A short phrase in this modality's own terms.
        """
        return str(locator) if locator else ""

    def preview(self, item: Item, side: int) -> Any | None:
        """A picture of `item` for the search app's result card; default None: this modality has none.

        The app (`omnisdk app`) shows it on the card of every hit of this modality that has no player of
        its own, so a third-party modality gets a preview card. It runs in the app's preview child
        process (a decoder may crash or hang on a hostile file): no torch here.

        Args:
            item: the hit's file (`item.path`) with its `locator` (the page or time span the hit covers).
            side: the longest side the card needs, in pixels; a larger picture is shrunk to it.

        Returns:
            A PIL image, or a uint8 numpy array [height, width, 3] (RGB) or [height, width] (grey); None
            when there is nothing to show.

        Raises:
            Exception: any, for a file that cannot be read; the card then shows no picture.
        """
        return None

    # -- rows, for the prepared-input cache ------------------------------------------------------
    def split_rows(self, batch: Any, count: int) -> list[dict[str, Any]]:
        """Cut a `preprocess` batch into one row per item; override to drop per-batch padding.

        Args:
            batch: what `preprocess` put in `Prepared.batch`.
            count: how many items it holds.

        Returns:
            One dict of tensors (or plain values) per item, for the prepared-input cache.
        """
        from omnisdk.batching import split_rows

        return split_rows(batch, count)

    def collate_rows(self, rows: Sequence[dict[str, Any]], runtime: Runtime) -> Any:
        """Assemble rows (possibly prepared at different times) into a batch `preprocess` could have made.

        Args:
            rows: rows from `split_rows`, in batch order.
            runtime: the owning model's runtime.

        Returns:
            A batch the adapter takes.
        """
        from omnisdk.batching import collate_rows

        return collate_rows(rows)


def with_dependencies(names: Iterable[str], uses_of: Callable[[str], Iterable[str]]) -> list[str]:
    """`names`, then every modality they use, transitively (video and document use image), each once.

    The one walk over plugins' `uses`: `uses_of(name)` gives a modality's `uses` (from a plugin instance,
    or a class looked up by name), so models, presets and training stages follow the same rule.
    """
    out: list[str] = []
    pending = list(names)
    while pending:
        current = pending.pop(0)
        if current not in out:
            out.append(current)
            pending += list(uses_of(current))
    return out


def dependencies_of(plugins: Mapping[str, ModalityPlugin], name: str) -> list[str]:
    """`name` and every plugin it uses, transitively (video uses image's tower), `name` first."""
    return with_dependencies([name], lambda current: plugins[current].uses)


def run_per_item(
    items: Sequence[Item], load: Callable[[Item], Any], errors_of: tuple[type[BaseException], ...] = (Exception,)
) -> tuple[list[Any], list[int], dict[int, str]]:
    """Apply `load` to every item, collecting results of the good ones and the cause of each bad one."""
    loaded, ok, errors = [], [], {}
    for i, item in enumerate(items):
        try:
            loaded.append(load(item))
            ok.append(i)
        except errors_of as exc:  # one bad item never sinks the batch
            errors[i] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return loaded, ok, errors
