"""Every hook is documented in docs/hooks.md and tested somewhere; the hook machinery fails loudly.

In the style of datasette's test_docs.py: adding a hookspec without a doc section or a test fails here.
"""
from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import pluggy
import pytest

from omnisdk import hookspecs
from omnisdk.hookspecs import hookimpl
from omnisdk.plugin_manager import PLUGINS_ENV, modality_classes, register_plugin, reset_plugin_manager

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "hooks.md"
HOOKS = sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "omnisdk_spec"))


def doc_sections() -> dict[str, str]:
    """The text of each `## heading` section of docs/hooks.md, by heading."""
    parts = re.split(r"^## (.+?)\s*$", HOOKS_DOC.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_hookspecs_are_found():
    assert len(HOOKS) >= 5 and "omnisdk_register_modalities" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    sections = doc_sections()
    assert hook in sections, f"docs/hooks.md has no '## {hook}' section"
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({params})" in sections[hook], f"the '## {hook}' section does not show {hook}({params})"
    assert "@hookimpl" in sections[hook], f"the '## {hook}' section has no example"
    if getattr(hookspecs, hook).omnisdk_spec.get("firstresult"):
        assert "firstresult" in sections[hook], f"'## {hook}' does not say it is firstresult"


def test_every_hook_section_is_a_hook():
    documented = [h for h in doc_sections() if h.startswith("omnisdk_")]
    assert sorted(documented) == HOOKS, "docs/hooks.md documents a hook that omnisdk.hookspecs lacks"
    assert "register_plugin: plugins without a package" in doc_sections()


def hook_uses(source: str) -> set[str]:
    """Hooks a test module implements (a function of that name decorated with a hookimpl) or calls
    (`....hook.NAME(...)`); a mention in a comment or a string does not count."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
            "hookimpl" in ast.unparse(decorator) for decorator in node.decorator_list
        ):
            used.add(node.name)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
            node.func.value, ast.Attribute
        ) and node.func.value.attr == "hook":
            used.add(node.func.attr)
    return used


def test_hook_uses_ignore_comments_and_strings():
    source = ("# omnisdk_register_commands in a comment\nNOTE = 'omnisdk_recovery_plan'\n"
              "@hookimpl\ndef omnisdk_register_modalities(register): ...\n"
              "pm.hook.omnisdk_detect_modality(item=None, modalities={})\n")
    assert hook_uses(source) == {"omnisdk_register_modalities", "omnisdk_detect_modality"}


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_used_by_a_test(hook):
    others = [p for p in (REPO / "tests").rglob("*.py") if p.resolve() != Path(__file__).resolve()]
    assert any(hook in hook_uses(p.read_text()) for p in others), (
        f"no test under tests/ (other than this file) implements or calls {hook}"
    )


def plugin_module(name: str, **functions) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, fn in functions.items():
        setattr(module, attr, fn)
    return module


def test_misspelled_hook_fails_loudly():
    @hookimpl
    def omnisdk_register_modalitys(register):
        """One letter too many: pluggy knows no such hook."""

    typo = plugin_module("typo_plugin", omnisdk_register_modalitys=omnisdk_register_modalitys)
    with pytest.raises(pluggy.PluginValidationError, match="omnisdk_register_modalitys"):
        register_plugin(typo, name="typo")


def test_hook_with_a_wrong_argument_name_fails_loudly():
    @hookimpl
    def omnisdk_register_modalities(regster):
        """An argument the hook does not pass."""

    typo = plugin_module("typo_argument", omnisdk_register_modalities=omnisdk_register_modalities)
    with pytest.raises(pluggy.PluginValidationError, match="regster"):
        register_plugin(typo, name="typo-argument")


def test_plugins_env_limits_the_loaded_entry_points(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "text")
    reset_plugin_manager()
    assert set(modality_classes()) == {"text"}
    monkeypatch.setenv(PLUGINS_ENV, " text , image ")
    reset_plugin_manager()
    assert set(modality_classes()) == {"text", "image"}
    monkeypatch.delenv(PLUGINS_ENV)
    reset_plugin_manager()
    assert {"text", "image"} <= set(modality_classes())


def test_builtin_commands_register_through_the_hook_before_third_party_ones():
    from omnisdk.cli import build_parser
    from omnisdk.plugin_manager import BUILTIN_COMMANDS, register_builtin_commands

    class Extra:
        @hookimpl
        def omnisdk_register_commands(self, subparsers):
            subparsers.add_parser("extra-command")

    register_plugin(Extra(), name="extra")
    pm = register_builtin_commands()
    implementers = {impl.plugin_name for impl in pm.hook.omnisdk_register_commands.get_hookimpls()}
    assert set(BUILTIN_COMMANDS) | {"extra"} == implementers
    commands = list(next(a for a in build_parser()._actions if a.dest == "command").choices)
    assert commands[:4] == ["plugins", "init", "embed", "info"] and commands[-1] == "extra-command"
    assert {"fuse", "datasets", "train", "demo", "pipeline", "eval", "index", "search", "app"} <= set(commands)
