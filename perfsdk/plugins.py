"""Plugin manager: registration, discovery, validation and isolated hook calls.

Built-in plugins (``DEFAULT_PLUGINS``) and third-party plugins (the ``perfsdk`` entry-point group)
are registered the same way, as modules of :data:`perfsdk.hookspecs.hookimpl` functions.

Core code never calls a hook by its string name: it calls the typed :class:`Hooks` facade
(``manager.hooks.collectors(config)``), which calls every implementation on its own. An
implementation that raises is logged once per (plugin, hook), counted in
:attr:`PluginManager.errors`, and skipped; the other plugins' answers still arrive, and nothing
raises into the application.

Environment variables, read when a manager is created:

``PERFSDK_DISABLE_PLUGIN_AUTOLOAD``
    a boolean (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``); when true, entry
    points are not loaded (built-ins still are).
``PERFSDK_DISABLED_PLUGINS``
    comma-separated plugin names (as listed by ``perfsdk plugins``) never to register; a built-in
    may also be named by its short module name (``runtime_collector``).

Nothing here runs at import time: :func:`get_plugin_manager` builds the default manager on first
use, and tests build fresh ones with ``PluginManager(load_entrypoints=False, env={})``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import pluggy

from perfsdk import hookspecs
from perfsdk.errors import ConfigError, PluginError
from perfsdk.protocols import AlertAction, Collector, Exporter, Technique

if TYPE_CHECKING:
    from perfsdk.records import Snapshot

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRYPOINT_GROUP",
    "ENV_DISABLED_PLUGINS",
    "ENV_DISABLE_PLUGIN_AUTOLOAD",
    "Hooks",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "set_plugin_manager",
]

logger = logging.getLogger("perfsdk.plugins")

#: Built-in plugins, registered under their module name, in this order.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "perfsdk.builtin.runtime_collector",
    "perfsdk.builtin.process_collector",
    "perfsdk.builtin.system_collector",
    "perfsdk.builtin.prometheus_exporter",
    "perfsdk.builtin.jsonl_exporter",
    "perfsdk.builtin.multiprocess_exporter",
    "perfsdk.builtin.sqlite_store",
)

#: Entry-point group third-party distributions declare their plugins in.
ENTRYPOINT_GROUP = "perfsdk"

ENV_DISABLE_PLUGIN_AUTOLOAD = "PERFSDK_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLED_PLUGINS = "PERFSDK_DISABLED_PLUGINS"

_BUILTIN_PREFIX = "perfsdk.builtin."
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered plugin, as listed by ``perfsdk plugins``.

    :param name: the name it is registered (and can be disabled) under.
    :param source: ``"builtin"``, ``"entrypoint:<distribution>==<version>"`` or ``"registered"``
        (passed to :meth:`PluginManager.register` by code).
    :param module: the module that holds the hook implementations.
    :param version: the distribution's version (perfsdk's for built-ins), when known.
    :param hooks: names of the hooks it implements, sorted.
    """

    name: str
    source: str
    module: str
    version: str | None
    hooks: tuple[str, ...]


def _env_flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    accepted = ", ".join(sorted(_TRUE) + sorted(_FALSE - {""}))
    raise ConfigError(
        f"{key}={raw!r} (environment variable) is not a boolean; use one of {accepted}"
    )


def _env_names(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in env.get(key, "").split(",") if name.strip())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class PluginManager:
    """Registers perfsdk plugins and calls their hooks in isolation.

    :param builtins: module names of built-in plugins to register; ``()`` for none.
    :param load_entrypoints: load third-party plugins from the ``perfsdk`` entry-point group
        (unless ``PERFSDK_DISABLE_PLUGIN_AUTOLOAD`` is true).
    :param env: where to read the ``PERFSDK_*`` variables; defaults to ``os.environ``.
    :raises ConfigError: an environment variable has an invalid value.

    A built-in or entry point that fails to import or register is logged, recorded in
    :attr:`load_errors` and skipped. Call :meth:`check_pending` to reject implementations of
    hooks that do not exist.
    """

    def __init__(
        self,
        *,
        builtins: Iterable[str] = DEFAULT_PLUGINS,
        load_entrypoints: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ: Mapping[str, str] = os.environ if env is None else env
        self.pluggy_manager = pluggy.PluginManager(ENTRYPOINT_GROUP)
        self.pluggy_manager.add_hookspecs(hookspecs)
        self.hooks = Hooks(self)
        #: (plugin name, hook name) -> number of failed calls.
        self.errors: dict[tuple[str, str], int] = {}
        #: Failed calls over all plugins and hooks.
        self.errors_total = 0
        #: Plugin name -> why it could not be loaded.
        self.load_errors: dict[str, str] = {}
        #: Names disabled through ``PERFSDK_DISABLED_PLUGINS``.
        self.disabled: tuple[str, ...] = _env_names(environ, ENV_DISABLED_PLUGINS)
        #: Whether entry points were (or will be) loaded.
        self.autoload = load_entrypoints and not _env_flag(environ, ENV_DISABLE_PLUGIN_AUTOLOAD)

        self._lock = threading.RLock()
        self._history: dict[str, list[dict[str, object]]] = {}
        self._builtin_names: set[str] = set()

        builtin_names = tuple(builtins)
        for name in self.disabled:
            self.pluggy_manager.set_blocked(name)
            if _BUILTIN_PREFIX + name in builtin_names:
                self.pluggy_manager.set_blocked(_BUILTIN_PREFIX + name)
        for module_name in builtin_names:
            self._load_builtin(module_name)
        if self.autoload:
            self.load_entrypoints()

    # -- registration ------------------------------------------------------------------------

    def _load_builtin(self, module_name: str) -> None:
        if self.pluggy_manager.is_blocked(module_name):
            return
        try:
            module = importlib.import_module(module_name)
            self.pluggy_manager.register(module, name=module_name)
        except Exception as exc:
            self._record_load_error(module_name, exc)
            return
        self._builtin_names.add(module_name)
        self._replay_history(module)

    def load_entrypoints(self, group: str = ENTRYPOINT_GROUP) -> int:
        """Load the plugins declared in the entry-point ``group``; return how many were loaded.

        Each entry point is loaded on its own, so one that fails to import is recorded in
        :attr:`load_errors` without stopping the others. Blocked and already registered names
        are skipped.
        """
        names = dict.fromkeys(ep.name for ep in importlib.metadata.entry_points(group=group))
        loaded = 0
        for name in names:
            try:
                count = self.pluggy_manager.load_setuptools_entrypoints(group, name=name)
            except Exception as exc:
                self._record_load_error(name, exc)
                continue
            if count:
                loaded += count
                self._replay_history(self.pluggy_manager.get_plugin(name))
        return loaded

    def _record_load_error(self, name: str, exc: Exception) -> None:
        self.load_errors[name] = _describe(exc)
        logger.error("perfsdk plugin %r could not be loaded and is skipped", name, exc_info=exc)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` (a module or an object with hook implementations).

        :param name: the name to register it under; defaults to the module's name, or an id.
        :returns: the name it was registered under, or ``None`` if that name is disabled.
        :raises PluginError: the name is taken, or an implementation does not match its spec.

        The plugin is immediately given the calls already made to the historic hooks
        (``perfsdk_addoption``, ``perfsdk_configure``).
        """
        try:
            registered = self.pluggy_manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            plugin_name = name or self.pluggy_manager.get_canonical_name(plugin)
            raise PluginError(
                f"plugin {plugin_name!r} does not match the perfsdk hook specifications: {exc}",
                plugin=plugin_name,
            ) from exc
        except ValueError as exc:
            plugin_name = name or self.pluggy_manager.get_canonical_name(plugin)
            raise PluginError(
                f"plugin {plugin_name!r} cannot be registered: it or its name is already "
                "registered; pass a different name=",
                plugin=plugin_name,
            ) from exc
        if registered is not None:
            self._replay_history(plugin)
        return registered

    def unregister(self, name: str) -> object | None:
        """Unregister the plugin registered as ``name``; return it (``None`` if there was none)."""
        plugin: object | None = self.pluggy_manager.get_plugin(name)
        if plugin is None:
            return None
        self.pluggy_manager.unregister(plugin, name=name)
        self._builtin_names.discard(name)
        return plugin

    def get_plugin(self, name: str) -> object | None:
        """Return the plugin registered as ``name``, or ``None``."""
        plugin: object | None = self.pluggy_manager.get_plugin(name)
        return plugin

    def check_pending(self) -> None:
        """Reject implementations that no hook specification matches, and hook wrappers.

        :raises PluginError: naming the plugin and the hook, e.g. a misspelt hook name.
        """
        pm = self.pluggy_manager
        for hook_name, caller in sorted(vars(pm.hook).items()):
            if hook_name.startswith("_") or not isinstance(caller, pluggy.HookCaller):
                continue
            for impl in caller.get_hookimpls():
                if not caller.has_spec() and not impl.optionalhook:
                    known = ", ".join(sorted(_spec_names()))
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} implements unknown hook {hook_name!r} "
                        f"(in {_where(impl)}); perfsdk hooks are: {known}",
                        plugin=impl.plugin_name,
                        hook=hook_name,
                    )
                if caller.has_spec() and (impl.wrapper or impl.hookwrapper):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} implements {hook_name!r} as a hook wrapper "
                        f"(in {_where(impl)}); perfsdk calls each implementation on its own, "
                        "so use a plain @hookimpl (tryfirst=/trylast= for ordering)",
                        plugin=impl.plugin_name,
                        hook=hook_name,
                    )

    # -- introspection -----------------------------------------------------------------------

    def list_plugins(self) -> list[PluginInfo]:
        """Describe every registered plugin, in registration order."""
        pm = self.pluggy_manager
        distinfo = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        infos = []
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # a blocked name
                continue
            if isinstance(plugin, types.ModuleType):
                module = plugin.__name__
            else:
                module = type(plugin).__module__
            dist = distinfo.get(id(plugin))
            if dist is not None:
                version: str | None = dist.version
                source = f"entrypoint:{dist.project_name}=={version}"
            elif name in self._builtin_names:
                version = _perfsdk_version()
                source = "builtin"
            else:
                version = _module_version(module)
                source = "registered"
            hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
            infos.append(PluginInfo(name, source, module, version, hooks))
        return infos

    # -- isolation ---------------------------------------------------------------------------

    def _record_error(
        self, plugin: str, hook: str, message: str, exc: BaseException | None = None
    ) -> None:
        key = (plugin, hook)
        with self._lock:
            count = self.errors.get(key, 0) + 1
            self.errors[key] = count
            self.errors_total += 1
        if count == 1:
            logger.error(
                "perfsdk plugin %r failed in %s: %s (skipped; further failures of this plugin "
                "in this hook are counted, not logged)",
                plugin,
                hook,
                message,
                exc_info=exc,
            )
        else:
            logger.debug("perfsdk plugin %r failed in %s again: %s", plugin, hook, message)

    def _call_impls(
        self, hook_name: str, kwargs: Mapping[str, object], plugin: object | None = None
    ) -> list[tuple[str, object]]:
        """Call each implementation of ``hook_name`` (only ``plugin``'s when given), in pluggy's
        order; return ``(plugin name, result)`` for those that returned something."""
        caller = getattr(self.pluggy_manager.hook, hook_name, None)
        if caller is None:
            return []
        results: list[tuple[str, object]] = []
        # pluggy keeps implementations in reverse call order (tryfirst ones last).
        for impl in reversed(caller.get_hookimpls()):
            if plugin is not None and impl.plugin is not plugin:
                continue
            if impl.wrapper or impl.hookwrapper:
                self._record_error(
                    impl.plugin_name, hook_name, "hook wrappers are not supported; not called"
                )
                continue
            try:
                args = [kwargs[argname] for argname in impl.argnames]
                extra = {key: kwargs[key] for key in impl.kwargnames if key in kwargs}
                result = impl.function(*args, **extra)
            except Exception as exc:
                self._record_error(impl.plugin_name, hook_name, _describe(exc), exc)
                continue
            if result is not None:
                results.append((impl.plugin_name, result))
        return results

    def _call_historic(self, hook_name: str, kwargs: dict[str, object]) -> None:
        with self._lock:
            self._history.setdefault(hook_name, []).append(kwargs)
        self._call_impls(hook_name, kwargs)

    def _replay_history(self, plugin: object) -> None:
        with self._lock:
            history = [(name, list(calls)) for name, calls in self._history.items()]
        for hook_name, calls in history:
            for kwargs in calls:
                self._call_impls(hook_name, kwargs, plugin=plugin)

    def _call_objects(
        self,
        hook_name: str,
        kwargs: Mapping[str, object],
        accepts: Callable[[object], TypeGuard[_T]],
        expected: str,
    ) -> list[_T]:
        objects: list[_T] = []
        for plugin_name, answer in self._call_impls(hook_name, kwargs):
            if not isinstance(answer, Iterable) or isinstance(answer, (str, bytes, Mapping)):
                self._record_error(
                    plugin_name,
                    hook_name,
                    f"returned {answer!r}; expected a list of {expected} objects",
                )
                continue
            rejected = []
            for item in answer:
                if accepts(item):
                    objects.append(item)
                else:
                    rejected.append(item)
            if rejected:
                self._record_error(
                    plugin_name,
                    hook_name,
                    f"returned {rejected!r}, which do not satisfy the {expected} protocol "
                    "(see perfsdk.protocols); dropped",
                )
        return objects


def _is_collector(obj: object) -> TypeGuard[Collector]:
    return isinstance(obj, Collector)


def _is_exporter(obj: object) -> TypeGuard[Exporter]:
    return isinstance(obj, Exporter)


def _is_alert_action(obj: object) -> TypeGuard[AlertAction]:
    return isinstance(obj, AlertAction)


def _is_technique(obj: object) -> TypeGuard[Technique]:
    return isinstance(obj, Technique)


class Hooks:
    """The typed way to call hooks: one method per hook in :mod:`perfsdk.hookspecs`.

    Every method calls each implementation separately; one that raises (or returns something
    malformed) is logged once, counted in ``manager.errors`` and skipped. No method raises
    because of a plugin.
    """

    __slots__ = ("_manager",)

    def __init__(self, manager: PluginManager) -> None:
        self._manager = manager

    def addoption(self, options: MutableMapping[str, object]) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_addoption` (historic)."""
        self._manager._call_historic("perfsdk_addoption", {"options": options})

    def configure(self, config: Mapping[str, object]) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_configure` (historic)."""
        self._manager._call_historic("perfsdk_configure", {"config": config})

    def unconfigure(self, config: Mapping[str, object]) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_unconfigure`."""
        self._manager._call_impls("perfsdk_unconfigure", {"config": config})

    def collectors(self, config: Mapping[str, object]) -> list[Collector]:
        """Call :func:`~perfsdk.hookspecs.perfsdk_collectors`; return all plugins' collectors."""
        return self._manager._call_objects(
            "perfsdk_collectors", {"config": config}, _is_collector, "Collector"
        )

    def exporters(self, config: Mapping[str, object]) -> list[Exporter]:
        """Call :func:`~perfsdk.hookspecs.perfsdk_exporters`; return all plugins' exporters."""
        return self._manager._call_objects(
            "perfsdk_exporters", {"config": config}, _is_exporter, "Exporter"
        )

    def alert_actions(self, config: Mapping[str, object]) -> list[AlertAction]:
        """Call :func:`~perfsdk.hookspecs.perfsdk_alert_actions`; return all plugins' actions."""
        return self._manager._call_objects(
            "perfsdk_alert_actions", {"config": config}, _is_alert_action, "AlertAction"
        )

    def techniques(self, config: Mapping[str, object]) -> list[Technique]:
        """Call :func:`~perfsdk.hookspecs.perfsdk_techniques`; return all plugins' techniques."""
        return self._manager._call_objects(
            "perfsdk_techniques", {"config": config}, _is_technique, "Technique"
        )

    def agent_started(self, agent: object) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_agent_started`."""
        self._manager._call_impls("perfsdk_agent_started", {"agent": agent})

    def agent_stopping(self, agent: object) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_agent_stopping`."""
        self._manager._call_impls("perfsdk_agent_stopping", {"agent": agent})

    def snapshot_taken(self, snapshot: Snapshot) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_snapshot_taken`."""
        self._manager._call_impls("perfsdk_snapshot_taken", {"snapshot": snapshot})

    def series_created(self, name: str, labels: tuple[tuple[str, str], ...]) -> None:
        """Call :func:`~perfsdk.hookspecs.perfsdk_series_created`."""
        self._manager._call_impls("perfsdk_series_created", {"name": name, "labels": labels})


def _spec_names() -> list[str]:
    return [name for name in vars(hookspecs) if name.startswith("perfsdk_")]


def _where(impl: pluggy.HookImpl) -> str:
    code = getattr(impl.function, "__code__", None)
    if code is None:
        return repr(impl.function)
    return f"{code.co_filename}:{code.co_firstlineno}"


def _perfsdk_version() -> str | None:
    version = getattr(sys.modules.get("perfsdk"), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("perfsdk")
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_version(module_name: str) -> str | None:
    version = getattr(sys.modules.get(module_name), "__version__", None)
    return version if isinstance(version, str) else None


_default_manager: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """Return the process-wide manager, creating it (and loading plugins) on first use.

    :raises ConfigError: a ``PERFSDK_*`` environment variable has an invalid value.
    """
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = PluginManager()
        return _default_manager


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (``None``: build a new one on next use); return the old.

    For embedding applications that build their own manager, and for tests.
    """
    global _default_manager
    with _default_lock:
        previous, _default_manager = _default_manager, manager
        return previous
