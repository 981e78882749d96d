"""Built-in plugin: the current process's CPU, memory, threads, descriptors, switches and I/O.

Contributes :class:`perfsdk.collectors.process.ProcessCollector` (collector name ``process``),
built on psutil. Every metric: ``docs/collectors.md``.

Configuration keys (declared through ``perfsdk_addoption``):

``process_uss_every`` (default ``60``)
    Read the unique set size (``process_unique_memory_bytes``, costly: the kernel walks the page
    tables) on the first collect and then every this many collects; ``0`` never.

Skip the collector with ``disabled_collectors = ["process"]``, or the whole plugin with
``PERFSDK_DISABLED_PLUGINS=process_collector``. Without psutil it contributes nothing (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping

from perfsdk.collectors import config_int, disabled_collectors
from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Collector

__all__ = ["perfsdk_addoption", "perfsdk_collectors"]

log = logging.getLogger("perfsdk.collectors")

NAME = "process"
USS_EVERY_KEY = "process_uss_every"

_missing_logged = False


@hookimpl
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare ``process_uss_every``."""
    options.setdefault(USS_EVERY_KEY, 60)


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the process collector (unless disabled, or psutil is missing)."""
    global _missing_logged
    if NAME in disabled_collectors(config):
        return []
    uss_every = config_int(config, USS_EVERY_KEY, 60)
    try:
        from perfsdk.collectors.process import ProcessCollector
    except ImportError as exc:
        if not _missing_logged:
            _missing_logged = True
            log.warning("perfsdk: the process collector needs psutil (%s); it is off", exc)
        return []
    return [ProcessCollector(uss_every=uss_every)]
