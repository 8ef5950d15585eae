"""Loading plugins and building the name -> component tables.

Built-in plugins and third-party ones load the same way: from the `rlhfx` entry-point group
(rlhfx's own pyproject lists the built-ins there). A plugin that fails to import is recorded as
failed and skipped, so one broken package never takes the CLI down; `RLHFX_STRICT_PLUGINS=1`
makes such a failure fatal, which is what a plugin author wants while developing.
"""

from __future__ import annotations

import difflib
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from pydantic import BaseModel

from rlhfx import hookspecs
from rlhfx.components import KIND_LABELS, KINDS, Component
from rlhfx.errors import PluginError, UserError

ENTRY_POINT_GROUP = "rlhfx"
#: Comma-separated names (entry point or distribution) of third-party plugins to load.
#: Unset: load all. Empty: load none. Built-ins always load.
ENV_LOAD = "RLHFX_PLUGINS"
#: Set to 1 to make a plugin that fails to load a fatal error.
ENV_STRICT = "RLHFX_STRICT_PLUGINS"
BUILTIN_DISTRIBUTION = "rlhfx"

REGISTER_HOOKS: dict[str, str] = {
    "stage": "rlhfx_register_stages",
    "algorithm": "rlhfx_register_algorithms",
    "reward_source": "rlhfx_register_reward_sources",
    "cleaner": "rlhfx_register_cleaners",
    "ranker": "rlhfx_register_rankers",
    "data_format": "rlhfx_register_data_formats",
    "rollout_engine": "rlhfx_register_rollout_engines",
    "environment": "rlhfx_register_environments",
}


@dataclass
class PluginInfo:
    name: str
    version: str
    builtin: bool
    distribution: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None
    components: list[str] = field(default_factory=list)  # "kind:name"

    def provider(self) -> str:
        return f"plugin '{self.name}' ({self.distribution} {self.version})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "status": self.status,
            "error": self.error,
            "components": sorted(self.components),
        }


@dataclass
class ComponentEntry:
    kind: str
    name: str
    cls: type[Component]
    plugin: PluginInfo

    @property
    def config_model(self) -> type[BaseModel]:
        return self.cls.Config


class UnknownComponentError(UserError):
    def __init__(
        self, kind: str, name: str, valid: list[str], left_out: list[PluginInfo] | None = None
    ):
        label = KIND_LABELS.get(kind, kind)
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        choices = ", ".join(valid) if valid else "none installed"
        self.short = f"unknown {label} '{name}'{hint}; valid: {choices}"
        if left_out:
            names = ", ".join(f"'{p.name}' ({p.distribution})" for p in left_out)
            self.short += (
                f"; {ENV_LOAD} left out the installed plugin{'s' if len(left_out) > 1 else ''} "
                f"{names}: add it to {ENV_LOAD} if it provides '{name}'"
            )
        super().__init__(self.short)


class PluginSystem:
    """The loaded plugins and their components, one table per kind."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentEntry]] = {k: {} for k in KINDS}
        self.strict = os.environ.get(ENV_STRICT, "").strip() not in ("", "0", "false", "no")
        self.allow: set[str] | None = None  # RLHFX_PLUGINS, as loaded

    # ---------------------------------------------------------------- loading
    def load_entry_points(self) -> None:
        allow = self.allow = _allow_list()
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_sort_key):
            dist_name = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            builtin = _canonical(dist_name) == BUILTIN_DISTRIBUTION
            key = f"{dist_name}:{ep.name}"
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            info = PluginInfo(ep.name, version, builtin, dist_name)
            if not builtin and allow is not None and not (
                _canonical(ep.name) in allow or _canonical(dist_name) in allow
            ):
                info.status = "disabled"
                self.plugins[ep.name] = info
                continue
            try:
                module = ep.load()
            except Exception as exc:  # any import-time failure: report, do not crash
                self._fail(info, exc)
                continue
            self.add_plugin(module, info)

    def warnings(self) -> list[str]:
        """Problems worth a warning that fail no plugin (the CLI prints them once a command)."""
        if not self.allow:
            return []
        known = {_canonical(p.name) for p in self.plugins.values()}
        known |= {_canonical(p.distribution) for p in self.plugins.values()}
        missing = sorted(name for name in self.allow if name not in known)
        if not missing:
            return []
        installed = sorted(p.name for p in self.plugins.values() if not p.builtin)
        return [
            f"{ENV_LOAD} names {', '.join(repr(m) for m in missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; installed third-party "
            f"plugins: {', '.join(installed) or 'none'}"
        ]

    def add_plugin(self, plugin: object, info: PluginInfo) -> None:
        """Register one plugin object (module, class or instance) and collect its components."""
        if info.name in self.plugins and self.plugins[info.name].status == "loaded":
            other = self.plugins[info.name]
            raise PluginError(
                f"two plugins are named '{info.name}': {other.provider()} and {info.provider()}"
            )
        self.plugins[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
            self.pm.check_pending()
            _check_hook_arguments(self.pm, info.name)
        except Exception as exc:
            self._unregister(info.name)
            self._fail(info, exc)
            return
        pending: list[ComponentEntry] = []
        try:
            for kind, hook_name in REGISTER_HOOKS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name != info.name:
                        continue
                    call_impl(impl, register=self._collector(kind, info, pending))
        except UserError:
            raise
        except Exception as exc:
            self._unregister(info.name)
            self._fail(info, exc)
            return
        for entry in pending:
            self._add_component(entry)
            info.components.append(f"{entry.kind}:{entry.name}")

    def _collector(self, kind: str, info: PluginInfo, pending: list[ComponentEntry]):
        base = KINDS[kind]

        def register(cls: Any) -> None:
            if not isinstance(cls, type) or not issubclass(cls, base):
                raise TypeError(f"{cls!r} is not a subclass of rlhfx.{base.__name__}")
            component: type[Component] = cls
            name = component.name
            if not isinstance(name, str) or not name.strip():
                raise TypeError(f"{cls.__name__} has no `name` (the name recipes use)")
            model = component.Config
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"{cls.__name__}.Config is not a pydantic model")
            if model.model_config.get("extra") != "forbid":
                raise TypeError(
                    f"{cls.__name__}.Config must reject unknown keys "
                    "(subclass rlhfx.ComponentConfig)"
                )
            pending.append(ComponentEntry(kind, name, component, info))

        return register

    def _add_component(self, entry: ComponentEntry) -> None:
        table = self.components[entry.kind]
        if entry.name in table:
            first = table[entry.name].plugin
            label = KIND_LABELS[entry.kind]
            raise PluginError(
                f"{label} '{entry.name}' is registered by two plugins: {first.provider()} and "
                f"{entry.plugin.provider()}; uninstall one or leave it out with {ENV_LOAD}"
            )
        table[entry.name] = entry

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.status = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        self.plugins[info.name] = info
        if self.strict:
            raise PluginError(
                f"plugin '{info.name}' ({info.distribution}) failed to load: {info.error}\n"
                + "".join(traceback.format_exception(exc)[-3:]).rstrip()
            ) from exc

    def _unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin=plugin, name=name)

    def add_commands(self, group: Any) -> None:
        """Let each loaded plugin add CLI commands; a plugin whose hook fails is marked failed."""
        for impl in self.pm.hook.rlhfx_register_commands.get_hookimpls():
            info = self.plugins.get(impl.plugin_name)
            before = set(getattr(group, "commands", {}))
            try:
                call_impl(impl, cli=group)
            except Exception as exc:
                if info is not None:
                    self._fail(info, exc)
                continue
            if info is not None:  # listed as `command:NAME` beside the plugin's components
                for name in sorted(set(getattr(group, "commands", {})) - before):
                    entry = f"command:{name}"
                    if entry not in info.components:
                        info.components.append(entry)

    # ---------------------------------------------------------------- lookup
    def get(self, kind: str, name: str) -> ComponentEntry:
        table = self.components[kind]
        if name not in table:
            left_out = [p for p in self.listing(include_disabled=True) if p.status == "disabled"]
            raise UnknownComponentError(kind, name, sorted(table), left_out)
        return table[name]

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.listing() if p.status == "failed"]

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def listing(self, include_disabled: bool = False) -> list[PluginInfo]:
        infos = [
            p for p in self.plugins.values() if include_disabled or p.status != "disabled"
        ]
        return sorted(infos, key=lambda p: (not p.builtin, p.name))


class HookRuleError(TypeError):
    """A hook implementation pluggy would call wrongly (it fails the plugin, named)."""


def _check_hook_arguments(pm: pluggy.PluginManager, plugin_name: str) -> None:
    """pluggy passes a hook only the arguments without a default value; an implementation
    with `register=None` would be called without it and fail far from its cause."""
    for hook in pm.get_hookcallers(pm.get_plugin(plugin_name)) or []:
        for impl in hook.get_hookimpls():
            if impl.plugin_name != plugin_name or not impl.kwargnames:
                continue
            names = ", ".join(f"'{n}'" for n in impl.kwargnames)
            raise HookRuleError(
                f"hook {hook.name} gives {names} a default value; pluggy never passes an "
                "argument with a default, so remove the default (write "
                f"`def {hook.name}({', '.join(impl.argnames + impl.kwargnames)})`)"
            )


def call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it asks for (pluggy's rule: a subset)."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ENV_LOAD)
    if raw is None:
        return None
    return {_canonical(n) for n in raw.split(",") if n.strip()}


def _ep_sort_key(ep: metadata.EntryPoint) -> tuple[int, str]:
    dist = ep.dist.name if ep.dist is not None else ""
    return (0 if _canonical(dist) == BUILTIN_DISTRIBUTION else 1, ep.name)


_SYSTEM: PluginSystem | None = None


def get_plugins(extra: Iterable[tuple[object, str]] = ()) -> PluginSystem:
    """The process-wide plugin system, loaded on first use.

    `extra` adds plugin objects (modules) that are not installed, as `(plugin, name)` pairs;
    tests use it. A name already present is not added twice.
    """
    global _SYSTEM
    if _SYSTEM is None:
        system = PluginSystem()
        system.load_entry_points()
        _SYSTEM = system
    for plugin, name in extra:
        if name not in _SYSTEM.plugins:
            _SYSTEM.add_plugin(plugin, PluginInfo(name, "0", False, name))
    return _SYSTEM


def reset_plugins() -> None:
    """Forget the loaded plugins (tests, or after installing a package in-process)."""
    global _SYSTEM
    _SYSTEM = None
