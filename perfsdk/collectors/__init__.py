"""Collectors: readings of the process, the machine and the Python runtime, polled by the agent.

=========================================  =========================================================
``perfsdk.collectors.process``             :class:`ProcessCollector` (``"process"``): CPU, memory,
                                           threads, descriptors, context switches, I/O (psutil)
``perfsdk.collectors.system``              :class:`SystemCollector` (``"system"``): CPU per mode,
                                           memory, swap, disk usage and I/O, network I/O (psutil)
``perfsdk.collectors.runtime``             :class:`RuntimeCollector` (``"python_runtime"``): the
                                           garbage collector (counts and pause times), threads; the
                                           asyncio event-loop lag probe
=========================================  =========================================================

The built-in plugins ``perfsdk.builtin.process_collector``, ``perfsdk.builtin.system_collector`` and
``perfsdk.builtin.runtime_collector`` contribute them through ``perfsdk_collectors(config)``. Every
metric, with its type, unit and labels, is listed in ``docs/collectors.md``.

This package imports no submodule (nor psutil) on its own: import the one you need.
"""

from __future__ import annotations

from collections.abc import Mapping

from perfsdk.errors import ConfigError

__all__ = ["disabled_collectors", "config_int"]


def disabled_collectors(config: Mapping[str, object]) -> frozenset[str]:
    """The collector names listed in ``config["disabled_collectors"]`` (a list, or a comma-separated
    string as an environment variable would give it).

    :raises ConfigError: the value is neither.
    """
    value = config.get("disabled_collectors") or ()
    if isinstance(value, str):
        return frozenset(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise ConfigError(
        f"disabled_collectors={value!r} is not a list of collector names "
        "(e.g. ['system', 'gpu'], or 'system,gpu')"
    )


def config_int(config: Mapping[str, object], key: str, default: int, *, minimum: int = 0) -> int:
    """``config[key]`` as an integer ``>= minimum`` (``default`` when absent).

    :raises ConfigError: naming the key and the value, when it is not such an integer.
    """
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    return value
