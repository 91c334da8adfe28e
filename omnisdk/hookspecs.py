"""Every hook a plugin can implement. Each is documented in docs/hooks.md."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

if TYPE_CHECKING:
    import argparse

    from omnisdk.items import Item
    from omnisdk.modality import ModalityPlugin, RecoveryPlan
    from omnisdk.model import OmniModel

hookspec = pluggy.HookspecMarker("omnisdk")


class HookimplMarker(pluggy.HookimplMarker):
    """Marks a function as an implementation of one of omnisdk's hooks (`@omnisdk.hookimpl`).

    Name the function after the hook (`omnisdk_register_modalities`, ...; see docs/hooks.md) and take any
    of its arguments by name. `@omnisdk.hookimpl(tryfirst=True)` or `(trylast=True)` changes the order in
    which pluggy calls implementations. A misspelled hook name fails loudly when the plugin is registered.
    """

    __slots__ = ()


hookimpl = HookimplMarker("omnisdk")


@hookspec
def omnisdk_register_modalities(register: Callable[[type[ModalityPlugin]], None]) -> None:
    """Register modality plugin classes by calling `register(cls)` once per class."""


@hookspec(firstresult=True)
def omnisdk_detect_modality(item: Item, modalities: Mapping[str, type[ModalityPlugin]]) -> str | None:
    """Return the modality name of an input you recognise, or None to let other plugins decide."""


@hookspec(firstresult=True)
def omnisdk_recovery_plan(modality: str, model: OmniModel) -> RecoveryPlan | None:
    """Return what to train when repairing `modality` after fusion, or None for the plugin's default."""


@hookspec
def omnisdk_register_merge_methods(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register task-vector merge methods by calling `register(name, function)`."""


@hookspec
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the `omnisdk` command line."""
