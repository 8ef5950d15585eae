"""The plugin system: entry-point loading, the load-limiting and strict variables, duplicate
and unknown names, and rejection of badly made components."""

from __future__ import annotations

import types

import pytest
from pydantic import ConfigDict

from rlhfx import ComponentConfig, EmptyConfig, ResponseCleaner, RewardSource, hookimpl, registry
from rlhfx.errors import PluginError, UserError

BUILTINS = {"align", "cleaners", "rankers", "rewards"}

SHOUT = '''
from rlhfx import CleanResult, EmptyConfig, ResponseCleaner, hookimpl

class Shout(ResponseCleaner):
    """Upper-case the response."""
    name = "shout"
    Config = EmptyConfig

    def clean(self, prompt, response):
        return CleanResult(response.upper(), changed=response != response.upper())

@hookimpl
def rlhfx_register_cleaners(register):
    register(Shout)
'''

DUP_REWARD = '''
from rlhfx import EmptyConfig, RewardSource, hookimpl

class Dup(RewardSource):
    name = "dup"
    Config = EmptyConfig

@hookimpl
def rlhfx_register_reward_sources(register):
    register(Dup)
'''


def plugin_module(name: str, **hooks) -> types.ModuleType:
    """A plugin object made in the test: a module with the given hook implementations."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def registers(kind_hook: str, *classes):
    return {kind_hook: lambda register: [register(c) for c in classes]}


# ------------------------------------------------------------------------------ built-ins


def test_builtins_load_through_entry_points():
    system = registry.get_plugins()
    infos = {p.name: p for p in system.listing()}
    assert set(infos) >= BUILTINS
    for name in BUILTINS:
        assert infos[name].builtin and infos[name].status == "loaded", infos[name]
        assert infos[name].distribution == "rlhfx"
    assert set(infos["cleaners"].components) == {
        "cleaner:stop_markers", "cleaner:strip", "cleaner:discard",
    }
    assert {"local", "top"} <= set(system.names("ranker"))
    assert {"length", "pattern_penalty", "weighted"} <= set(system.names("reward_source"))
    assert "align" in system.names("stage")


def test_listing_puts_builtins_first_then_sorts_by_name(rlhfx_installed_plugin):
    rlhfx_installed_plugin("aaa-first", {"aaa_mod": SHOUT}, {"aaa": "aaa_mod"})
    names = [(p.builtin, p.name) for p in registry.get_plugins().listing()]
    assert names == sorted(names, key=lambda x: (not x[0], x[1]))
    assert names[-1] == (False, "aaa")  # alphabetically first, but not built in


# ------------------------------------------------------------------------------ RLHFX_PLUGINS


@pytest.mark.parametrize(
    ("allow", "loads"),
    [
        (None, True),  # unset: everything installed loads
        ("", False),  # empty: no third-party plugin
        ("shouter", True),  # by entry-point name
        ("rlhfx-shout", True),  # by distribution name
        ("RLHFX_SHOUT", True),  # case and _/- do not matter
        ("other, shouter", True),
        ("other", False),
    ],
)
def test_load_limiting_variable(rlhfx_installed_plugin, monkeypatch, allow, loads):
    rlhfx_installed_plugin("rlhfx-shout", {"shout_mod": SHOUT}, {"shouter": "shout_mod"})
    if allow is not None:
        monkeypatch.setenv("RLHFX_PLUGINS", allow)
    system = registry.get_plugins()
    assert ("shout" in system.names("cleaner")) is loads
    assert ("shouter" in [p.name for p in system.listing()]) is loads
    everything = {p.name: p for p in system.listing(include_disabled=True)}
    assert everything["shouter"].status == ("loaded" if loads else "disabled")
    # Built-ins always load, whatever the variable says.
    assert {p.name for p in system.listing() if p.status == "loaded"} >= BUILTINS


def test_disabled_plugin_is_not_even_imported(rlhfx_installed_plugin, monkeypatch):
    rlhfx_installed_plugin(
        "rlhfx-bomb", {"bomb_mod": "raise RuntimeError('imported!')"}, {"bomb": "bomb_mod"}
    )
    monkeypatch.setenv("RLHFX_PLUGINS", "")
    monkeypatch.setenv("RLHFX_STRICT_PLUGINS", "1")
    system = registry.get_plugins()  # strict, yet no error: the module was never imported
    assert system.plugins["bomb"].status == "disabled"


# ------------------------------------------------------------------------------ failures


def test_plugin_raising_on_import_is_reported_failed(rlhfx_installed_plugin):
    rlhfx_installed_plugin(
        "rlhfx-bomb", {"bomb_mod": "raise RuntimeError('boom at import')"}, {"bomb": "bomb_mod"}
    )
    system = registry.get_plugins()
    info = system.plugins["bomb"]
    assert info.status == "failed"
    assert info.error == "RuntimeError: boom at import"
    assert info.components == []
    assert [p.name for p in system.failed()] == ["bomb"]
    # Everything else still works.
    assert system.get("cleaner", "strip").cls.name == "strip"


def test_strict_mode_makes_an_import_failure_fatal(rlhfx_installed_plugin, monkeypatch):
    rlhfx_installed_plugin(
        "rlhfx-bomb", {"bomb_mod": "raise RuntimeError('boom at import')"}, {"bomb": "bomb_mod"}
    )
    monkeypatch.setenv("RLHFX_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as caught:
        registry.get_plugins()
    message = str(caught.value)
    assert "plugin 'bomb' (rlhfx-bomb) failed to load: RuntimeError: boom at import" in message
    assert "bomb_mod.py" in message  # where it failed, for the plugin author


@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_strict_mode_off_values(rlhfx_installed_plugin, monkeypatch, value):
    rlhfx_installed_plugin("rlhfx-bomb", {"bomb_mod": "1/0"}, {"bomb": "bomb_mod"})
    monkeypatch.setenv("RLHFX_STRICT_PLUGINS", value)
    assert registry.get_plugins().plugins["bomb"].status == "failed"


def test_two_plugins_registering_one_name_name_both(rlhfx_installed_plugin):
    rlhfx_installed_plugin("rlhfx-dup-one", {"dup_one": DUP_REWARD}, {"dup1": "dup_one"})
    rlhfx_installed_plugin(
        "rlhfx-dup-two", {"dup_two": DUP_REWARD}, {"dup2": "dup_two"}, version="2.5"
    )
    with pytest.raises(PluginError) as caught:
        registry.get_plugins()
    message = str(caught.value)
    assert "reward source 'dup' is registered by two plugins" in message
    assert "plugin 'dup1' (rlhfx-dup-one 0.1.0)" in message
    assert "plugin 'dup2' (rlhfx-dup-two 2.5)" in message
    assert "RLHFX_PLUGINS" in message  # how to get out of it
    assert isinstance(caught.value, UserError)


def test_duplicate_resolved_by_leaving_one_out(rlhfx_installed_plugin, monkeypatch):
    rlhfx_installed_plugin("rlhfx-dup-one", {"dup_one": DUP_REWARD}, {"dup1": "dup_one"})
    rlhfx_installed_plugin("rlhfx-dup-two", {"dup_two": DUP_REWARD}, {"dup2": "dup_two"})
    monkeypatch.setenv("RLHFX_PLUGINS", "dup2")
    entry = registry.get_plugins().get("reward_source", "dup")
    assert entry.plugin.name == "dup2"


def test_a_third_party_plugin_cannot_shadow_a_builtin_name(rlhfx_plugins):
    class MyStrip(ResponseCleaner):
        name = "strip"

    with pytest.raises(PluginError, match=r"response cleaner 'strip' is registered by two"):
        rlhfx_plugins(plugin_module("mystrip", **registers("rlhfx_register_cleaners", MyStrip)))


# ------------------------------------------------------------------------------ unknown names


def only(*modules) -> registry.PluginSystem:
    """A plugin system holding just these modules (independent of what else is installed)."""
    system = registry.PluginSystem()
    for module in modules:
        system.add_plugin(module, registry.PluginInfo(module.__name__, "0", True, "rlhfx"))
    return system


def test_unknown_name_lists_valid_names_and_closest_match():
    from rlhfx.plugins import cleaners

    system = only(cleaners)
    with pytest.raises(registry.UnknownComponentError) as caught:
        system.get("cleaner", "strp")
    assert caught.value.short == (
        "unknown response cleaner 'strp' (did you mean 'strip'?); "
        "valid: discard, stop_markers, strip"
    )


def test_unknown_name_without_a_close_match_gives_no_guess():
    from rlhfx.plugins import rankers

    with pytest.raises(registry.UnknownComponentError) as caught:
        only(rankers).get("ranker", "zzzzzz")
    assert "did you mean" not in str(caught.value)
    assert "valid: local, top" in str(caught.value)


def test_unknown_name_of_a_kind_nobody_provides():
    with pytest.raises(registry.UnknownComponentError, match="valid: none installed"):
        registry.PluginSystem().get("data_format", "hh")


# ------------------------------------------------------------------------------ bad classes


class Good(RewardSource):
    name = "good_one"


class NoName(RewardSource):
    Config = EmptyConfig


class BlankName(RewardSource):
    name = "  "


class LaxConfig(ComponentConfig):
    model_config = ConfigDict(extra="allow")


class Lax(RewardSource):
    name = "lax"
    Config = LaxConfig


class NotPydantic(RewardSource):
    name = "notpydantic"
    Config = dict  # type: ignore[assignment]


class WrongKind(ResponseCleaner):
    name = "wrong_kind"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (NoName, "TypeError: NoName has no `name`"),
        (BlankName, "TypeError: BlankName has no `name`"),
        (Lax, "TypeError: Lax.Config must reject unknown keys (subclass rlhfx.ComponentConfig)"),
        (NotPydantic, "TypeError: NotPydantic.Config is not a pydantic model"),
        (WrongKind, "is not a subclass of rlhfx.RewardSource"),
        ("not a class", "is not a subclass of rlhfx.RewardSource"),
    ],
)
def test_badly_made_component_marks_the_plugin_failed(rlhfx_plugins, bad, message):
    plugin = plugin_module("badplug", **registers("rlhfx_register_reward_sources", Good, bad))
    system = rlhfx_plugins(plugin)
    info = system.plugins["badplug"]
    assert info.status == "failed"
    assert message in info.error
    # Nothing of a failed plugin is half-registered, not even its good component.
    assert "good_one" not in system.names("reward_source")
    assert info.components == []
    assert system.pm.get_plugin("badplug") is None


def test_badly_made_component_is_fatal_in_strict_mode(rlhfx_plugins, monkeypatch):
    monkeypatch.setenv("RLHFX_STRICT_PLUGINS", "1")
    plugin = plugin_module("badplug", **registers("rlhfx_register_reward_sources", NoName))
    with pytest.raises(PluginError, match=r"plugin 'badplug' .* failed to load: TypeError"):
        rlhfx_plugins(plugin)


def test_misspelled_hook_name_marks_the_plugin_failed(rlhfx_plugins):
    plugin = plugin_module("typo", rlhfx_register_reward=lambda register: None)
    system = rlhfx_plugins(plugin)
    assert system.plugins["typo"].status == "failed"
    assert "rlhfx_register_reward" in system.plugins["typo"].error


def test_hook_with_wrong_argument_name_marks_the_plugin_failed(rlhfx_plugins):
    plugin = plugin_module("argtypo", rlhfx_register_cleaners=lambda registr: None)
    system = rlhfx_plugins(plugin)
    assert system.plugins["argtypo"].status == "failed"
    assert "registr" in system.plugins["argtypo"].error


def test_registration_hook_raising_marks_the_plugin_failed(rlhfx_plugins):
    def hook(register):
        register(Good)
        raise ValueError("cannot find my weights")

    system = rlhfx_plugins(plugin_module("raiser", rlhfx_register_reward_sources=hook))
    assert system.plugins["raiser"].error == "ValueError: cannot find my weights"
    assert "good_one" not in system.names("reward_source")


def test_good_plugin_object_registers_its_components(rlhfx_plugins):
    plugin = plugin_module("goodplug", **registers("rlhfx_register_reward_sources", Good))
    system = rlhfx_plugins(plugin)
    info = system.plugins["goodplug"]
    assert (info.status, info.builtin, info.components) == (
        "loaded", False, ["reward_source:good_one"],
    )
    assert system.get("reward_source", "good_one").cls is Good
    assert system.get("reward_source", "good_one").plugin is info


def test_commands_hook_failure_marks_plugin_failed_but_keeps_others(rlhfx_plugins):
    import click

    def good(cli):
        @cli.command("hello")
        def hello():
            click.echo("hi")

    def bad(cli):
        raise RuntimeError("no commands today")

    system = rlhfx_plugins(
        plugin_module("cmd_good", rlhfx_register_commands=good),
        plugin_module("cmd_bad", rlhfx_register_commands=bad),
    )
    group = click.Group("g")
    system.add_commands(group)
    assert "hello" in group.commands
    assert system.plugins["cmd_bad"].status == "failed"
    assert system.plugins["cmd_bad"].error == "RuntimeError: no commands today"
    assert system.plugins["cmd_good"].status == "loaded"
