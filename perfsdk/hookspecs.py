"""Hook specifications: the whole extension surface of perfsdk.

A plugin is a module (or any object) with functions named after these hooks and decorated with
:data:`hookimpl`. An implementation may accept any subset of a hook's parameters, by name.
perfsdk calls each implementation on its own, catching and counting its exceptions (see
:mod:`perfsdk.plugins`), so hook *wrappers* (``wrapper=True`` / ``hookwrapper=True``) are not
supported; ``tryfirst``/``trylast`` ordering is honoured.

Hooks that return a list: an implementation returns a list (or ``None``) and perfsdk concatenates
the answers of all plugins. Every hook is documented in ``docs/plugins.md`` (enforced by
``tests/test_docs.py``).
"""
# Spec bodies are intentionally empty: they are signatures and documentation, never called.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from perfsdk.protocols import AlertAction, Collector, Exporter, Technique
    from perfsdk.records import Snapshot

__all__ = [
    "hookimpl",
    "hookspec",
    "perfsdk_addoption",
    "perfsdk_agent_started",
    "perfsdk_agent_stopping",
    "perfsdk_alert_actions",
    "perfsdk_collectors",
    "perfsdk_configure",
    "perfsdk_exporters",
    "perfsdk_series_created",
    "perfsdk_snapshot_taken",
    "perfsdk_techniques",
    "perfsdk_unconfigure",
]

hookspec = pluggy.HookspecMarker("perfsdk")
hookimpl = pluggy.HookimplMarker("perfsdk")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@hookspec(historic=True)
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare the configuration keys this plugin reads, with their defaults.

    :param options: configuration key -> default value. Add your keys, prefixed with your
        plugin's name (``options.setdefault("myplugin.interval", 10.0)``); never remove or
        overwrite other plugins' keys.
    :returns: nothing; mutate ``options``.

    Called once, before the configuration is read, so unknown keys can be rejected and defaults
    filled in. Historic: a plugin registered later is called as soon as it is registered.
    """


@hookspec(historic=True)
def perfsdk_configure(config: Mapping[str, object]) -> None:
    """Read the configuration and prepare the plugin.

    :param config: the validated configuration, defaults included (read-only).
    :returns: nothing.

    Called once after the configuration is read and before the agent starts. Historic: a plugin
    registered later is called as soon as it is registered, with the same configuration.
    """


@hookspec
def perfsdk_unconfigure(config: Mapping[str, object]) -> None:
    """Release whatever :func:`perfsdk_configure` set up.

    :param config: the configuration the plugin was configured with.
    :returns: nothing.

    Called once at shutdown, after the agent stopped and exporters were closed.
    """


# ---------------------------------------------------------------------------------------------
# Extension objects
# ---------------------------------------------------------------------------------------------


@hookspec
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute collectors, polled by the agent every interval.

    :param config: the validated configuration.
    :returns: a list of :class:`~perfsdk.protocols.Collector` objects (empty, or ``None``, to
        contribute none). Objects that do not satisfy the protocol are dropped and logged.

    Called when the agent starts, on the agent's thread, after :func:`perfsdk_configure`.
    """


@hookspec
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """Contribute exporters, each given every snapshot.

    :param config: the validated configuration.
    :returns: a list of :class:`~perfsdk.protocols.Exporter` objects (empty, or ``None``, to
        contribute none). Objects that do not satisfy the protocol are dropped and logged.

    Called when the agent starts, on the agent's thread, after :func:`perfsdk_configure`.
    """


@hookspec
def perfsdk_alert_actions(config: Mapping[str, object]) -> list[AlertAction]:
    """Contribute alert actions, notified when an alert fires or resolves.

    :param config: the validated configuration.
    :returns: a list of :class:`~perfsdk.protocols.AlertAction` objects (empty, or ``None``, to
        contribute none). Objects that do not satisfy the protocol are dropped and logged.

    Called when the alert engine starts, on the agent's thread, after :func:`perfsdk_configure`.
    """


@hookspec
def perfsdk_techniques(config: Mapping[str, object]) -> list[Technique]:
    """Contribute optimization techniques.

    :param config: the validated configuration.
    :returns: a list of :class:`~perfsdk.protocols.Technique` objects (empty, or ``None``, to
        contribute none). Objects that do not satisfy the protocol are dropped and logged.

    Called when the optimizer is first used, after :func:`perfsdk_configure`.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle events
# ---------------------------------------------------------------------------------------------


@hookspec
def perfsdk_agent_started(agent: object) -> None:
    """React to the agent starting.

    :param agent: the running agent.
    :returns: nothing.

    Called once on the agent's thread, after its collectors and exporters were created and
    before the first snapshot is taken.
    """


@hookspec
def perfsdk_agent_stopping(agent: object) -> None:
    """React to the agent stopping.

    :param agent: the agent being stopped.
    :returns: nothing.

    Called once on the agent's thread, after the final snapshot was exported and before the
    exporters are closed.
    """


@hookspec
def perfsdk_snapshot_taken(snapshot: Snapshot) -> None:
    """Observe every snapshot.

    :param snapshot: the immutable snapshot record just taken.
    :returns: nothing.

    Called on the agent's thread once per interval, right after the snapshot is built; keep it
    fast, the next interval waits for it.
    """


@hookspec
def perfsdk_series_created(name: str, labels: tuple[tuple[str, str], ...]) -> None:
    """Observe the creation of a new series.

    :param name: the series (metric) name.
    :param labels: the series' ``(label, value)`` pairs, sorted by label.
    :returns: nothing.

    Called once per new series, from the agent's thread, soon after the series' first
    recording (never on the thread that recorded it).
    """
