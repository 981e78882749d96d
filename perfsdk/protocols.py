"""Protocols that extension objects satisfy, and the :class:`Sample` record collectors produce.

Plugins answer the list hooks in :mod:`perfsdk.hookspecs` with objects that satisfy these small,
structural Protocols: no base class to inherit, any object with the right attributes will do.
They are ``runtime_checkable`` so perfsdk can reject a malformed answer from a plugin (only the
presence of the members is checked at run time, not their signatures).

This module imports nothing from perfsdk at run time (the record types below are for type
checkers only), so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from perfsdk.records import Snapshot

__all__ = ["AlertAction", "Collector", "Exporter", "Sample", "Technique"]

# Alert records do not exist yet: ``AlertAction.notify`` takes ``object`` until they do.


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading produced by a :class:`Collector`.

    :param name: a Prometheus-valid metric name (``[a-zA-Z_:][a-zA-Z0-9_:]*``); counters end in
        ``_total`` and carry units in the name (``_seconds``, ``_bytes``).
    :param value: the reading.
    :param labels: ``(label, value)`` pairs, label names matching ``[a-zA-Z_][a-zA-Z0-9_]*``;
        a tuple so the sample stays immutable and hashable.
    :param kind: ``"gauge"`` (may go up and down) or ``"counter"`` (only goes up).
    :param help: one line describing the metric, used as ``# HELP`` text by exporters.
    """

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "gauge"
    help: str = ""


@runtime_checkable
class Collector(Protocol):
    """Produces samples when the agent polls it (on the agent's thread, once per interval).

    ``collect`` should be cheap (well under a millisecond) and must not block.
    """

    name: str

    def collect(self) -> Iterable[Sample]:
        """Return the current readings."""
        ...


@runtime_checkable
class Exporter(Protocol):
    """Sends each snapshot somewhere (a file, an OTLP collector, ...)."""

    name: str

    def export(self, snapshot: Snapshot) -> None:
        """Export one immutable snapshot record; called on the agent's (or a worker's) thread."""
        ...

    def close(self) -> None:
        """Flush and release resources; called once when the agent stops."""
        ...


@runtime_checkable
class AlertAction(Protocol):
    """Reacts to an alert (log it, call a webhook, page someone, ...)."""

    name: str

    def notify(self, alert: object) -> None:
        """Deliver one immutable alert record; called from the action queue's worker thread."""
        ...


@runtime_checkable
class Technique(Protocol):
    """An optimization technique: recognises a target it can speed up and applies itself."""

    name: str

    def detect(self, target: object) -> bool:
        """Return True when this technique applies to ``target`` (a callable, usually)."""
        ...

    def apply(self, target: object) -> object:
        """Return the optimized replacement for ``target``; never mutate ``target`` in place."""
        ...
