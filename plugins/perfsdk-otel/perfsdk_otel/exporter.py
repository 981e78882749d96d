"""``OtlpExporter``: perfsdk snapshots to an OTLP/HTTP (protobuf) metrics endpoint.

The payload is built from the OpenTelemetry SDK's data model (``MetricsData``, ``ResourceMetrics``,
...) and encoded by ``opentelemetry-exporter-otlp-proto-common``'s ``encode_metrics``, the encoder
``OTLPMetricExporter`` itself uses. The POST is one attempt, bounded by ``otlp_timeout``: the
exporter runs on the agent's thread, and the agent already isolates a failing exporter and retries
it with backoff, so retrying here as well (as ``OTLPMetricExporter`` does, sleeping between
attempts for up to its whole timeout) would only hold the agent's thread longer. A failure raises
:class:`OtlpExportError` naming the endpoint and the cause.
"""

from __future__ import annotations

import http.client
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from importlib import metadata

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import perfsdk
from perfsdk.errors import ConfigError, PerfsdkError
from perfsdk.records import SeriesSnapshot, Snapshot

from .translate import build_metrics

__all__ = ["DEFAULT_TIMEOUT", "OtlpExportError", "OtlpExporter", "parse_headers"]

log = logging.getLogger("perfsdk.otel")

#: Seconds allowed for connecting and for each read of one export (``otlp_timeout``).
DEFAULT_TIMEOUT = 5.0

try:
    _VERSION = metadata.version("perfsdk-otel")
except metadata.PackageNotFoundError:  # imported from a source tree without installing
    _VERSION = "0.0.0"

_USER_AGENT = f"perfsdk-otel/{_VERSION}"

# Semantic-convention resource attributes.
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"


class OtlpExportError(PerfsdkError):
    """An export to the OTLP endpoint failed (refused, timed out, or answered with an error)."""


def _where(config: Mapping[str, object], key: str) -> str:
    """`` (source)`` when ``config`` is a perfsdk ``Config``, which knows where a key was set."""
    source = getattr(config, "source", None)
    return f" ({source(key)})" if callable(source) else ""


def parse_headers(value: object, where: str = "") -> dict[str, str]:
    """Headers from a mapping, or from ``OTEL_EXPORTER_OTLP_HEADERS``-style text.

    The text form is ``name=value`` pairs separated by commas, each part percent-decoded
    (``authorization=Bearer%20abc,x-tenant=a``); empty text means no headers. Errors never quote
    the text: headers carry credentials.
    """
    if isinstance(value, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    if not isinstance(value, str):
        raise ConfigError(
            f"otlp_headers{where} is a {type(value).__name__}; "
            "expected a mapping or 'name=value,name=value' text"
        )
    headers: dict[str, str] = {}
    for position, part in enumerate(value.split(","), 1):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name = urllib.parse.unquote(name).strip()
        if not sep or not name:
            raise ConfigError(
                f"otlp_headers{where}: entry {position} is not name=value; "
                "expected e.g. 'authorization=Bearer%20abc,x-tenant=a'"
            )
        headers[name] = urllib.parse.unquote(raw).strip()
    return headers


def _endpoint(config: Mapping[str, object]) -> str:
    url = str(config.get("otlp_endpoint") or "").strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"otlp_endpoint={url!r}{_where(config, 'otlp_endpoint')} is not an http(s) URL; "
            "expected e.g. 'http://127.0.0.1:4318/v1/metrics'"
        )
    return url


def _timeout(config: Mapping[str, object]) -> float:
    value = config.get("otlp_timeout", DEFAULT_TIMEOUT)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(
            f"otlp_timeout={value!r}{_where(config, 'otlp_timeout')} "
            "must be a positive number of seconds, e.g. 5"
        )
    return seconds


def _resource(service_name: str) -> Resource:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``, SDK attributes).

    ``service_name``, when given, wins. Each exporter, hence each process (a forked worker builds
    new exporters), gets its own ``service.instance.id`` unless the environment sets one: cumulative
    series of two processes must not look like one series that keeps restarting.
    """
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if not resource.attributes.get(SERVICE_INSTANCE_ID):
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return resource


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be replayed as a GET without the payload: report it instead."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _error_detail(body: bytes, content_type: str) -> str:
    """The message of an OTLP error body (a protobuf ``google.rpc.Status``), or its text,
    shortened."""
    if not body:
        return ""
    message = ""
    if "protobuf" in content_type:
        try:
            from google.rpc import status_pb2  # type: ignore[import-untyped]

            message = str(status_pb2.Status.FromString(body).message)
        except Exception:  # a malformed Status, or googleapis-common-protos missing
            message = ""
    else:
        message = body.decode("utf-8", "replace")
    message = " ".join(message.split())
    return f": {message[:200]}" if message else ""


class OtlpExporter:
    """Sends every snapshot to ``config["otlp_endpoint"]`` as OTLP/HTTP protobuf.

    Satisfies :class:`perfsdk.protocols.Exporter`. Configuration keys: ``otlp_endpoint`` (the full
    URL, e.g. ``http://127.0.0.1:4318/v1/metrics``), ``otlp_headers``, ``otlp_timeout`` (seconds),
    ``otlp_service_name``. A bad value raises :class:`perfsdk.errors.ConfigError`.
    """

    name = "otlp"

    def __init__(self, config: Mapping[str, object]) -> None:
        self.endpoint = _endpoint(config)
        self.timeout = _timeout(config)
        self.headers = {
            **parse_headers(config.get("otlp_headers", ""), _where(config, "otlp_headers")),
            "Content-Type": "application/x-protobuf",
            "User-Agent": _USER_AGENT,
        }
        self.resource = _resource(str(config.get("otlp_service_name") or ""))
        self.scope = InstrumentationScope("perfsdk", perfsdk.__version__)
        self.exports = 0
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._created_ns = time.time_ns()
        self._starts: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._warned_no_sketch = False
        self._warned_partial = False

    def __repr__(self) -> str:
        return f"OtlpExporter({self.endpoint!r})"

    # --- building the payload ---------------------------------------------------------------------

    def _start_ns(self, series: SeriesSnapshot, now_ns: int) -> int:
        """A series' start time, fixed when first seen: its creation for timers (the totals'
        span), this exporter's creation for counters (when they started is not recorded)."""
        key = (series.name, series.labels)
        start = self._starts.get(key)
        if start is None:
            if series.kind == "timer" and series.total is not None:
                start = now_ns - round(series.total.seconds * 1e9)
            else:
                start = self._created_ns
            start = min(start, now_ns)
            self._starts[key] = start
        return start

    def metrics_data(self, snapshot: Snapshot) -> MetricsData:
        """The OTel SDK data model of ``snapshot``: one resource, one scope (``perfsdk``)."""
        if not self._warned_no_sketch and any(
            s.kind == "timer" and s.total_sketch is None for s in snapshot.series
        ):
            self._warned_no_sketch = True
            log.warning(
                "perfsdk-otel: the snapshot has timers without sketches; they are not exported "
                "(take snapshots with include_sketches=True, as the agent does)"
            )
        metrics = build_metrics(snapshot, self._start_ns)
        scope = ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")
        resource = ResourceMetrics(resource=self.resource, scope_metrics=[scope], schema_url="")
        return MetricsData(resource_metrics=[resource])

    def encode(self, snapshot: Snapshot) -> bytes:
        """The serialised ``ExportMetricsServiceRequest`` of ``snapshot``."""
        return bytes(encode_metrics(self.metrics_data(snapshot)).SerializeToString())

    # --- sending ----------------------------------------------------------------------------------

    def export(self, snapshot: Snapshot) -> None:
        """POST ``snapshot`` to the endpoint; raise :class:`OtlpExportError` if it fails."""
        with self._lock:
            if self._closed:
                raise OtlpExportError(f"the OTLP exporter for {self.endpoint} is closed")
            body = self.encode(snapshot)
            self._post(body)
            self.exports += 1

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.endpoint, data=body, headers=self.headers, method="POST"
        )
        where = f"OTLP endpoint {self.endpoint}"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = _error_detail(exc.read(), exc.headers.get("Content-Type", ""))
            except (OSError, http.client.HTTPException):
                detail = ""
            raise OtlpExportError(
                f"{where} answered HTTP {exc.code} {exc.reason}{detail}"
            ) from None
        except urllib.error.URLError as exc:
            raise OtlpExportError(
                f"could not reach {where} (timeout {self.timeout:g} s): {exc.reason}"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts while reading, resets
            raise OtlpExportError(
                f"{where} failed (timeout {self.timeout:g} s): {type(exc).__name__}: {exc}"
            ) from exc
        self._check_partial_success(answer)

    def _check_partial_success(self, answer: bytes) -> None:
        """Log (once, then at DEBUG) the data points a receiver says it rejected; not retried."""
        if not answer:
            return
        try:
            response = ExportMetricsServiceResponse.FromString(answer)
        except Exception:  # some receivers answer with JSON or text; success all the same
            return
        rejected = response.partial_success.rejected_data_points
        if rejected:
            level = logging.DEBUG if self._warned_partial else logging.WARNING
            self._warned_partial = True
            log.log(
                level,
                "perfsdk-otel: OTLP endpoint %s rejected %d data points: %s",
                self.endpoint,
                rejected,
                response.partial_success.error_message or "(no message)",
            )

    def close(self) -> None:
        """Stop exporting; nothing is buffered, so there is nothing to flush. Never waits for an
        export in progress."""
        self._closed = True
