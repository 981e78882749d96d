"""Built-in plugin: one JSON object per snapshot appended to ``jsonl_path`` (off when empty).

See :mod:`perfsdk.exporters.jsonlines` and ``docs/exporters.md``. Disable the plugin altogether
with ``PERFSDK_DISABLED_PLUGINS=jsonl_exporter``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Exporter

__all__ = ["perfsdk_exporters"]


@hookimpl
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """Contribute the JSON-lines exporter when ``jsonl_path`` is set."""
    path = config.get("jsonl_path") or ""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        return []
    from perfsdk.exporters.jsonlines import JsonLinesExporter

    return [JsonLinesExporter(path)]
