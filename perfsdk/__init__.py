"""perfsdk: an embeddable performance SDK for Python services.

``import perfsdk`` is cheap: it loads the native hot path and the timing core only. The plugin
system (pluggy), Numba kernels and exporters load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _accel
from .errors import ConfigError, PerfsdkError, PluginError
from .records import SeriesSnapshot, Snapshot, Stats
from .registry import Registry, get_registry, set_registry
from .thresholds import ThresholdResult, ThresholdRule, ThresholdSet
from .timing import counter, gauge, timed, timer

if TYPE_CHECKING:
    from .agent import Agent
    from .hookspecs import hookimpl
    from .store import history

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "PerfsdkError",
    "PluginError",
    "Registry",
    "SeriesSnapshot",
    "Snapshot",
    "Stats",
    "ThresholdResult",
    "ThresholdRule",
    "ThresholdSet",
    "__version__",
    "counter",
    "gauge",
    "get_agent",
    "get_registry",
    "history",
    "hookimpl",
    "implementation",
    "set_registry",
    "snapshot",
    "start",
    "stop",
    "timed",
    "timer",
]


def snapshot(*, registry: Registry | None = None, include_sketches: bool = False) -> Snapshot:
    """Immutable statistics of every series of the (default) registry: window and since start."""
    return (registry if registry is not None else get_registry()).snapshot(
        include_sketches=include_sketches
    )


def start(**options: object) -> Agent:
    """Start the in-process agent (collectors, Prometheus endpoint, history, exporters).

    Options override ``PERFSDK_*`` environment variables, ``perfsdk.toml`` and
    ``[tool.perfsdk]`` in ``pyproject.toml``; see ``docs/agent.md``. Idempotent.
    """
    from .agent import start as _start

    return _start(**options)


def stop(timeout: float = 5.0) -> None:
    """Stop the agent, flushing a last snapshot to every exporter."""
    from .agent import stop as _stop

    _stop(timeout)


def get_agent() -> Agent | None:
    """The running agent, or None."""
    from .agent import get_agent as _get

    return _get()


def implementation() -> str:
    """``"compiled"`` when the Cython hot path is in use, ``"python"`` for the pure-Python twin."""
    return _accel.IMPLEMENTATION


def __getattr__(name: str) -> Any:
    # pluggy is imported only when a plugin author asks for the marker.
    if name == "hookimpl":
        from .hookspecs import hookimpl

        return hookimpl
    if name == "history":  # the store (sqlite3) loads on first use
        from .store import history

        return history
    raise AttributeError(f"module 'perfsdk' has no attribute {name!r}")
