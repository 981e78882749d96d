"""Built-in plugin: Python runtime metrics (garbage collector, threads, event-loop lag).

Contributes :class:`perfsdk.collectors.runtime.RuntimeCollector` (collector name
``python_runtime``): GC collections, collected and uncollectable objects and ``gc.get_count()``
per generation, live threads, and GC pause times recorded into the timer series
``python_gc_pause_seconds{generation}``. Every metric: ``docs/collectors.md``.

Configuration keys (declared through ``perfsdk_addoption``):

``runtime_gc_pauses`` (default ``true``)
    Time every garbage collection through ``gc.callbacks``: about 3 µs per collection (2.2 µs of
    it is CPython's own cost of having any callback), so an application running 1,000 collections
    a second pays 0.3% of a core; ``false`` leaves ``gc.callbacks`` alone.

``runtime_loop_probe_interval`` (default ``0.1``)
    When ``perfsdk.start()`` is called from inside a running asyncio event loop, a lag probe is
    installed into that loop (``python_event_loop_lag_seconds``), waking every this many seconds;
    ``0`` turns the automatic probe off. Elsewhere, install one yourself with
    ``perfsdk.collectors.runtime.install_loop_probe()``.

Skip the collector with ``disabled_collectors = ["python_runtime"]``, or the whole plugin with
``PERFSDK_DISABLED_PLUGINS=runtime_collector``. When the agent stops (``perfsdk_unconfigure``),
the GC callback and the probe this plugin installed are removed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

from perfsdk.collectors import disabled_collectors
from perfsdk.collectors.runtime import (
    LoopProbe,
    RuntimeCollector,
    maybe_install_loop_probe,
    uninstall_gc_callback,
)
from perfsdk.errors import ConfigError
from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Collector

__all__ = [
    "RuntimeCollector",
    "perfsdk_addoption",
    "perfsdk_collectors",
    "perfsdk_configure",
    "perfsdk_unconfigure",
]

LOOP_PROBE_KEY = "runtime_loop_probe_interval"
GC_PAUSES_KEY = "runtime_gc_pauses"

# Probes this plugin installed itself, removed again by perfsdk_unconfigure.
_auto_probes: list[LoopProbe] = []


def _probe_interval(config: Mapping[str, object]) -> float:
    value = config.get(LOOP_PROBE_KEY, 0.1)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 <= value < math.inf)
    ):
        raise ConfigError(
            f"{LOOP_PROBE_KEY}={value!r} must be a number of seconds >= 0 (0: no automatic probe)"
        )
    return float(value)


@hookimpl
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare ``runtime_gc_pauses`` and ``runtime_loop_probe_interval``."""
    options.setdefault(GC_PAUSES_KEY, True)
    options.setdefault(LOOP_PROBE_KEY, 0.1)


@hookimpl
def perfsdk_configure(config: Mapping[str, object]) -> None:
    """Probe the event loop running in the calling thread, if any (``perfsdk.start()`` from async
    code)."""
    interval = _probe_interval(config)
    if interval > 0:
        probe = maybe_install_loop_probe(interval)
        if probe is not None and probe not in _auto_probes:
            _auto_probes.append(probe)


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the runtime collector (unless ``python_runtime`` is a disabled collector)."""
    if RuntimeCollector.name in disabled_collectors(config):
        return []
    gc_pauses = config.get(GC_PAUSES_KEY, True)
    if not isinstance(gc_pauses, bool):
        raise ConfigError(f"{GC_PAUSES_KEY}={gc_pauses!r} must be true or false")
    if not gc_pauses:
        return [RuntimeCollector(gc_pauses=None)]
    return [RuntimeCollector()]


@hookimpl
def perfsdk_unconfigure(config: Mapping[str, object]) -> None:
    """Remove the GC callback and the probes this plugin installed."""
    uninstall_gc_callback()
    while _auto_probes:
        _auto_probes.pop().cancel()
