"""Exporters: where snapshots go (a Prometheus endpoint, a JSON-lines file, ...).

Each implementation is its own module; the built-in plugins that hand them to the agent live in
:mod:`perfsdk.builtin` (``prometheus_exporter``, ``jsonl_exporter``). Nothing is imported until a
name is asked for, so ``import perfsdk.exporters.jsonlines`` does not pull in ``http.server``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jsonlines import JsonLinesExporter
    from .prometheus import CONTENT_TYPE, DEFAULT_BUCKETS, PrometheusExporter, render_exposition

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "JsonLinesExporter",
    "PrometheusExporter",
    "render_exposition",
]

_WHERE = {
    "CONTENT_TYPE": "prometheus",
    "DEFAULT_BUCKETS": "prometheus",
    "PrometheusExporter": "prometheus",
    "render_exposition": "prometheus",
    "JsonLinesExporter": "jsonlines",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'perfsdk.exporters' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
