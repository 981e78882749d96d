"""perfsdk plugin: export metrics to an OpenTelemetry collector over OTLP/HTTP (protobuf).

Registered through the ``perfsdk`` entry-point group under the name ``otel``. Timers become OTLP
exponential histograms re-bucketed from their sketches (scale matched to the sketch's accuracy,
see :mod:`perfsdk_otel.histogram`), counters monotonic cumulative Sums, gauges Gauges. Off until
``otlp_endpoint`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from perfsdk import hookimpl
from perfsdk.protocols import Exporter

from .exporter import DEFAULT_TIMEOUT, OtlpExporter, OtlpExportError, parse_headers
from .histogram import exponential_point, otel_index, scale_for
from .translate import build_metrics

__all__ = [
    "OPTIONS",
    "OtlpExportError",
    "OtlpExporter",
    "build_metrics",
    "exponential_point",
    "otel_index",
    "parse_headers",
    "perfsdk_addoption",
    "perfsdk_exporters",
    "scale_for",
]

#: The configuration keys this plugin reads, with their defaults.
OPTIONS: dict[str, object] = {
    # Full URL of the OTLP/HTTP metrics endpoint, e.g. http://127.0.0.1:4318/v1/metrics; empty: off.
    "otlp_endpoint": "",
    # Extra request headers: "name=value,name=value", values percent-encoded (as
    # OTEL_EXPORTER_OTLP_HEADERS).
    "otlp_headers": "",
    # Seconds allowed for connecting and for each read of one export.
    "otlp_timeout": DEFAULT_TIMEOUT,
    # The resource's service.name; empty: OTEL_SERVICE_NAME, else the SDK's "unknown_service:...".
    "otlp_service_name": "",
}


@hookimpl
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare ``otlp_endpoint``, ``otlp_headers``, ``otlp_timeout`` and ``otlp_service_name``."""
    for key, default in OPTIONS.items():
        options.setdefault(key, default)


@hookimpl
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """The OTLP exporter when ``otlp_endpoint`` is set, else nothing."""
    if not str(config.get("otlp_endpoint") or "").strip():
        return []
    return [OtlpExporter(config)]
