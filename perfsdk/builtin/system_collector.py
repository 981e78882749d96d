"""Built-in plugin: the machine's CPU, memory, swap, disk and network.

Contributes :class:`perfsdk.collectors.system.SystemCollector` (collector name ``system``), built
on psutil. Every metric: ``docs/collectors.md``.

Configuration keys (declared through ``perfsdk_addoption``):

``system_disk_paths`` (default ``["/"]``)
    Filesystem paths whose usage is reported (``system_disk_usage_bytes{mountpoint,state}``).

Skip the collector with ``disabled_collectors = ["system"]`` (worth it in every process but one
when many processes of one machine run an agent: the readings are the same), or the whole plugin
with ``PERFSDK_DISABLED_PLUGINS=system_collector``. Without psutil it contributes nothing (logged
once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping

from perfsdk.collectors import disabled_collectors
from perfsdk.errors import ConfigError
from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Collector

__all__ = ["perfsdk_addoption", "perfsdk_collectors"]

log = logging.getLogger("perfsdk.collectors")

NAME = "system"
DISK_PATHS_KEY = "system_disk_paths"

_missing_logged = False


def _disk_paths(config: Mapping[str, object]) -> list[str]:
    value = config.get(DISK_PATHS_KEY, ["/"])
    if isinstance(value, str):
        value = [path.strip() for path in value.split(",") if path.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{DISK_PATHS_KEY}={value!r} must be a list of filesystem paths")
    return list(value)


@hookimpl
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare ``system_disk_paths``."""
    options.setdefault(DISK_PATHS_KEY, ["/"])


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the system collector (unless disabled, or psutil is missing)."""
    global _missing_logged
    if NAME in disabled_collectors(config):
        return []
    paths = _disk_paths(config)
    try:
        from perfsdk.collectors.system import SystemCollector
    except ImportError as exc:
        if not _missing_logged:
            _missing_logged = True
            log.warning("perfsdk: the system collector needs psutil (%s); it is off", exc)
        return []
    return [SystemCollector(disk_paths=paths)]
