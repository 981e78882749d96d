"""Built-in plugin: the multiprocess state writer (:mod:`perfsdk.multiprocess`).

When ``multiprocess_dir`` is set, every process writes its state to ``<dir>/<pid>.psnap`` at each
agent tick, and the Prometheus endpoint (in any process) serves the merged view of them all.

Disable with ``PERFSDK_DISABLED_PLUGINS=multiprocess_exporter``.
"""

from __future__ import annotations

from collections.abc import Mapping

from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Exporter

__all__ = ["perfsdk_exporters"]


@hookimpl
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """A :class:`~perfsdk.multiprocess.MultiprocessWriter` when ``multiprocess_dir`` is set."""
    directory = config.get("multiprocess_dir") or ""
    if not directory:
        return []
    from perfsdk.multiprocess import MultiprocessWriter  # only multiprocess setups need it

    return [MultiprocessWriter(str(directory))]
