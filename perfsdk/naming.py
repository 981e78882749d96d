"""Metric and label names, checked against Prometheus' naming rules.

Names that the user typed are validated (an invalid one is an error naming it); names perfsdk
derives itself, from a function's qualified name, are sanitised instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping

from .errors import ConfigError

__all__ = ["Labels", "check_metric_name", "normalize_labels", "sanitize_metric_name"]

Labels = tuple[tuple[str, str], ...]

_METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_INVALID_RUN = re.compile(r"[^a-zA-Z0-9_:]+")


def check_metric_name(name: object, *, where: str = "metric name") -> str:
    """Return ``name`` if it is a valid Prometheus metric name, else raise ConfigError naming it."""
    if not isinstance(name, str) or not _METRIC_RE.match(name):
        raise ConfigError(
            f"{where} {name!r} is invalid: a metric name must match [a-zA-Z_:][a-zA-Z0-9_:]* "
            "(Prometheus naming rules), e.g. 'checkout_latency_seconds'"
        )
    return name


def sanitize_metric_name(text: str) -> str:
    """Turn a qualified name such as ``app.views.<locals>.index`` into ``app_views_index``."""
    cleaned = _INVALID_RUN.sub("_", text.replace("<locals>", "")).strip("_")
    cleaned = re.sub(r"_+", "_", cleaned)
    if not cleaned:
        cleaned = "function"
    if cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def normalize_labels(labels: Mapping[str, object] | Iterable[tuple[str, object]] | None) -> Labels:
    """Labels as a sorted tuple of (name, value) string pairs; invalid names raise ConfigError."""
    if not labels:
        return ()
    items = labels.items() if isinstance(labels, Mapping) else labels
    out = []
    for key, value in items:
        if not isinstance(key, str) or not _LABEL_RE.match(key) or key.startswith("__"):
            raise ConfigError(
                f"label name {key!r} is invalid: a label name must match [a-zA-Z_][a-zA-Z0-9_]* "
                "and must not start with '__' (Prometheus naming rules)"
            )
        if value is None:
            raise ConfigError(f"label {key!r} has the value None; label values must be strings")
        out.append((key, str(value)))
    out.sort()
    for (a, _), (b, _) in itertools.pairwise(out):
        if a == b:
            raise ConfigError(f"label name {a!r} is given twice")
    return tuple(out)
