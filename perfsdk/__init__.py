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
    from .hookspecs import hookimpl

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
    "get_registry",
    "hookimpl",
    "implementation",
    "set_registry",
    "snapshot",
    "timed",
    "timer",
]


def snapshot(*, registry: Registry | None = None, include_sketches: bool = False) -> Snapshot:
    """Immutable statistics of every series of the (default) registry: window and since start."""
    return (registry if registry is not None else get_registry()).snapshot(
        include_sketches=include_sketches
    )


def implementation() -> str:
    """``"compiled"`` when the Cython hot path is in use, ``"python"`` for the pure-Python twin."""
    return _accel.IMPLEMENTATION


def __getattr__(name: str) -> Any:
    # pluggy is imported only when a plugin author asks for the marker.
    if name == "hookimpl":
        from .hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'perfsdk' has no attribute {name!r}")
