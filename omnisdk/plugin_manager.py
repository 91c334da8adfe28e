"""Loads plugins from the `omnisdk` entry-point group (built-in ones too) and answers registry queries."""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from omnisdk import hookspecs
from omnisdk.errors import PluginNotInstalledError, PluginUnavailableError
from omnisdk.modality import ModalityPlugin

log = logging.getLogger(__name__)

GROUP = "omnisdk"
#: Comma-separated entry-point names to load; unset loads all. Example: OMNISDK_PLUGINS=text,image
PLUGINS_ENV = "OMNISDK_PLUGINS"
#: Where a built-in modality comes from, for error messages when its plugin is absent.
BUILTIN_EXTRAS = {"text": None, "image": "image", "video": "video", "document": "document", "audio": "audio"}
#: Modules whose `omnisdk_register_commands` adds the built-in commands, in `omnisdk --help` order. They
#: register through the same hook as a third-party package's commands (see register_builtin_commands).
BUILTIN_COMMANDS = (
    "omnisdk.commands",
    "omnisdk.fusion.commands",
    "omnisdk.datasets.commands",
    "omnisdk.trainers.commands",
    "omnisdk.demo",
    "omnisdk.pipeline.commands",
    "omnisdk.eval.commands",
    "omnisdk.search.commands",
    "omnisdk.apps.commands",
)

_pm: pluggy.PluginManager | None = None
_load_failures: dict[str, str] = {}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is None:
        _pm = _build()
    return _pm


def reset_plugin_manager() -> None:
    """Forget loaded plugins so the next call reloads them (tests; after OMNISDK_PLUGINS changes)."""
    global _pm
    _pm = None
    _load_failures.clear()


def _build() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    from omnisdk import detect, merge_registry

    pm.register(detect, name="omnisdk.detect")
    pm.register(merge_registry, name="omnisdk.merge_registry")
    wanted = _wanted_names()
    for ep in entry_points(group=GROUP):
        if wanted is not None and ep.name not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue  # a distribution installed twice (editable and wheel) lists it twice
        try:
            _register_checked(pm, ep.load(), ep.name)
        except Exception as exc:  # a broken third-party plugin must not break omnisdk
            dist = getattr(getattr(ep, "dist", None), "name", None)
            _load_failures[ep.name] = f"{type(exc).__name__}: {exc}" + (f" (package {dist})" if dist else "")
            log.warning("omnisdk plugin '%s' (%s) failed to load: %s", ep.name, ep.value, exc)
    return pm


def register_builtin_commands() -> pluggy.PluginManager:
    """Register the BUILTIN_COMMANDS modules (once) and return the plugin manager, for the command line.

    Only the CLI needs them, so a library user's plugin manager does not import them (about 0.8 s on a
    loaded 2-core machine). They register as plugins like a third party's, and the CLI builds its parser
    by calling the `omnisdk_register_commands` hook.
    """
    pm = get_plugin_manager()
    # Their hookimpls are tryfirst, and pluggy calls the last registered first: reversed, they run in order.
    for module in reversed(BUILTIN_COMMANDS):
        if pm.get_plugin(module) is None:
            pm.register(importlib.import_module(module), name=module)
    return pm


def _register_checked(pm: pluggy.PluginManager, obj: Any, name: str | None) -> None:
    """Register, then validate: a misspelled hook fails loudly and leaves nothing registered."""
    pm.register(obj, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(obj)
        raise


def _wanted_names() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def load_failures() -> dict[str, str]:
    """Entry points that raised on import, by name, with the cause (shown by `omnisdk plugins`)."""
    get_plugin_manager()
    return dict(_load_failures)


def register_plugin(obj: Any, name: str | None = None) -> None:
    """Register an in-process plugin object (a module or class with hookimpls), e.g. in a notebook."""
    _register_checked(get_plugin_manager(), obj, name)


def modality_classes() -> dict[str, type[ModalityPlugin]]:
    """Every registered modality, available or not, by name."""
    found: dict[str, type[ModalityPlugin]] = {}

    def register(cls: type[ModalityPlugin]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, ModalityPlugin)):
            raise TypeError(f"register() takes a ModalityPlugin subclass, got {cls!r}")
        if cls.name in found and found[cls.name] is not cls:
            raise ValueError(f"two plugins register the modality '{cls.name}': {found[cls.name]} and {cls}")
        found[cls.name] = cls

    get_plugin_manager().hook.omnisdk_register_modalities(register=register)
    return found


def get_modality(name: str, *, package: str | None = None, extra: str | None = None) -> type[ModalityPlugin]:
    """The plugin class for `name`, raising with the pip command when it is absent or unusable."""
    classes = modality_classes()
    if name not in classes:
        hint = extra if extra is not None else BUILTIN_EXTRAS.get(name)
        error = PluginNotInstalledError(name, hint, package)
        if name in _load_failures:
            error.args = (f"{error.args[0]} (its entry point failed to load: {_load_failures[name]})",)
        raise error
    cls = classes[name]
    missing = cls.missing_requirements()
    if missing:
        raise PluginUnavailableError(name, cls.extra, missing)
    return cls


@dataclass
class PluginInfo:
    name: str
    version: str
    package: str
    available: bool
    missing: list[str]
    install: str | None
    description: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_plugins() -> list[PluginInfo]:
    """A row per registered modality: its version, and if unusable, what is missing and how to get it."""
    rows = []
    for name, cls in sorted(modality_classes().items()):
        missing = cls.missing_requirements()
        install = None
        if missing:
            install = f"pip install 'omnisdk[{cls.extra}]'" if cls.extra else f"pip install {cls.package}"
        rows.append(PluginInfo(name, cls.version, cls.package, not missing, missing, install, cls.description))
    return rows


def merge_methods() -> dict[str, Callable[..., Any]]:
    """Every registered task-vector merge method, by name."""
    found: dict[str, Callable[..., Any]] = {}

    def register(name: str, fn: Callable[..., Any]) -> None:
        if name in found and found[name] is not fn:
            raise ValueError(f"two plugins register the merge method '{name}'")
        found[name] = fn

    get_plugin_manager().hook.omnisdk_register_merge_methods(register=register)
    return found

