"""Built-in plugin: the Prometheus endpoint (``GET /metrics`` on ``http_host``:``http_port``).

On unless ``http_enabled`` is false. Everything it serves, and how, is in
:mod:`perfsdk.exporters.prometheus` and ``docs/exporters.md``. Disable the plugin altogether with
``PERFSDK_DISABLED_PLUGINS=prometheus_exporter``.
"""

from __future__ import annotations

from collections.abc import Mapping

from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Exporter

__all__ = ["enabled", "perfsdk_exporters"]

_FALSE = frozenset({"0", "false", "no", "off", ""})


def enabled(value: object) -> bool:
    """A configuration switch: booleans as they are, ``"0"``/``"false"``/``"no"``/``"off"`` off."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE
    return bool(value)


@hookimpl
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """Contribute the Prometheus endpoint, unless ``http_enabled`` is false."""
    if not enabled(config.get("http_enabled", True)):
        return []
    # Imported here: http.server and the renderer load only when the agent starts an endpoint.
    from perfsdk.exporters.prometheus import PrometheusExporter

    return [PrometheusExporter(config)]
