"""The Python runtime: garbage collector (counts and pause times), threads, event-loop lag.

Three parts:

- :class:`RuntimeCollector` (``"python_runtime"``): ``gc.get_stats()``/``gc.get_count()`` per
  generation and ``threading.active_count()`` as samples, a few microseconds per collect; and it
  moves the garbage collector's pause times into the registry's timer series
  ``python_gc_pause_seconds{generation}``.
- :class:`GcPauseRecorder`: a ``gc.callbacks`` entry that times every collection from its
  ``"start"`` to its ``"stop"`` callback (finalizers and weakref callbacks included: the pause the
  application sees). The callback only appends the duration to a bounded deque (lock-free, under a
  microsecond); the collector records the pending durations into the registry on the agent's
  thread. Recording from inside the callback is not safe: a collection can start while the same
  thread is reading that very series (the pure-Python twin holds a non-reentrant lock there), so it
  would deadlock or see a half-updated series. A pause is therefore filed in the time slice of the
  collect that drains it, at most one agent interval late. :func:`install_gc_callback` is
  idempotent, :func:`uninstall_gc_callback` removes it; one recorder (:data:`GC_PAUSES`) serves the
  process.
- :func:`install_loop_probe`: a task in an asyncio event loop that sleeps ``interval`` seconds,
  measures by how much the wake-up overshot (the time the loop was busy with something else when
  the probe was due) and records it into the timer series ``python_event_loop_lag_seconds``. A
  blocking call shows up when it covers a due wake-up, so a stall shorter than ``interval`` may go
  unseen: the probe bounds lag from below. It costs one loop wake-up per ``interval``: on the
  development VM an idle loop spends about 0.15 ms of CPU per wake-up (asyncio's timer and
  ``epoll_wait``; the probe's own code is about 1 µs of it), so 0.15% of one core at 0.1 s; in a
  busy loop the wake-up mostly rides along with other events. The selector's millisecond timeout
  granularity puts a floor of up to 1 ms under every observation.

Timer-style data cannot travel as :class:`~perfsdk.protocols.Sample` s, so it goes straight into
a :class:`perfsdk.Registry`: the one given at construction, else :func:`perfsdk.get_registry`
looked up at each recording (the agent snapshots the default registry unless told otherwise).

``asyncio`` is imported only when a probe is installed.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from perfsdk.errors import ConfigError, PerfsdkError
from perfsdk.naming import Labels, normalize_labels
from perfsdk.protocols import Sample
from perfsdk.registry import Registry, get_registry

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

    from perfsdk import _accel

__all__ = [
    "GC_PAUSES",
    "GC_PAUSE_SERIES",
    "LOOP_LAG_SERIES",
    "GcPauseRecorder",
    "LoopProbe",
    "NoEventLoopError",
    "RuntimeCollector",
    "install_gc_callback",
    "install_loop_probe",
    "maybe_install_loop_probe",
    "remove_loop_probe",
    "uninstall_gc_callback",
]

log = logging.getLogger("perfsdk.collectors")

#: Timer series of garbage-collection pauses, labelled ``generation``.
GC_PAUSE_SERIES = "python_gc_pause_seconds"
#: Timer series of event-loop lag (wake-up overshoot of the probe).
LOOP_LAG_SERIES = "python_event_loop_lag_seconds"

_GC_PAUSE_HELP = "Garbage-collection pauses (gc.callbacks start to stop), per generation."
_LOOP_LAG_HELP = "How late the event loop woke a probe sleeping a fixed interval."

# strict=False below: a future interpreter may report a different number of generations.
_GENERATIONS = (("generation", "0"),), (("generation", "1"),), (("generation", "2"),)

_COLLECTIONS_HELP = "Garbage collections run, per generation (gc.get_stats)."
_COLLECTED_HELP = "Objects freed by the garbage collector, per generation (gc.get_stats)."
_UNCOLLECTABLE_HELP = "Uncollectable objects found by the collector, per generation (gc.get_stats)."
_COUNT_HELP = (
    "gc.get_count() per generation: allocations minus deallocations since the last collection "
    "(generation 0), or collections of the younger generation since this one was collected."
)
_THREADS_HELP = "Threads currently alive (threading.active_count)."


class NoEventLoopError(PerfsdkError, RuntimeError):
    """:func:`install_loop_probe` was called without a loop and outside a running one."""


# --- garbage-collection pauses -----------------------------------------------------------------


class GcPauseRecorder:
    """Times garbage collections through ``gc.callbacks``.

    :param max_pending: durations kept per generation between two drains; beyond it the oldest
        are dropped (and counted in :attr:`dropped`), so memory stays bounded when nothing drains.
    """

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._pending: dict[int, deque[float]] = {
            generation: deque(maxlen=max_pending) for generation in range(3)
        }
        self._started = 0.0
        self._lock = threading.Lock()
        self._fork_hook = False
        self._series: dict[int, _accel.Series] = {}
        self._series_registry: Registry | None = None
        #: durations dropped because nothing drained them in time.
        self.dropped = 0

    @property
    def installed(self) -> bool:
        """Whether the callback is in ``gc.callbacks``."""
        return self._callback in gc.callbacks

    def install(self) -> None:
        """Add the callback to ``gc.callbacks``, once however often this is called."""
        with self._lock:
            if self._callback not in gc.callbacks:
                self._started = 0.0
                gc.callbacks.append(self._callback)
            if not self._fork_hook and hasattr(os, "register_at_fork"):
                # A forked child must not file its parent's pending pauses as its own.
                os.register_at_fork(after_in_child=self.clear)
                self._fork_hook = True

    def uninstall(self) -> None:
        """Remove the callback from ``gc.callbacks`` (no error if it is not there)."""
        with self._lock:
            while self._callback in gc.callbacks:
                gc.callbacks.remove(self._callback)

    def clear(self) -> None:
        """Forget pending durations."""
        for pending in list(self._pending.values()):
            pending.clear()
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside the collector on whatever thread triggered it: no locks, no registry, and
        # it must not raise (CPython would print "Exception ignored in ...").
        try:
            if phase == "start":
                self._started = time.perf_counter()
                return
            started = self._started
            if not started:
                return  # installed between a start and its stop
            self._started = 0.0
            pause = time.perf_counter() - started
            generation = info["generation"]
            pending = self._pending.get(generation)
            if pending is None:
                pending = self._pending.setdefault(generation, deque(maxlen=self.max_pending))
            if len(pending) == self.max_pending:
                self.dropped += 1
            pending.append(pause)
        except Exception:
            pass

    def pending(self) -> int:
        """Durations waiting to be recorded."""
        return sum(len(pending) for pending in list(self._pending.values()))

    def drain(self, registry: Registry) -> int:
        """Record every pending duration into ``registry``'s ``python_gc_pause_seconds`` series
        (all generations' series are created, so they are exported before their first pause);
        return how many were recorded."""
        if registry is not self._series_registry:
            self._series = {}
            self._series_registry = registry
        now = registry.now()
        recorded = 0
        for generation, pending in list(self._pending.items()):
            series = self._series.get(generation)
            if series is None:
                series = registry.series(
                    GC_PAUSE_SERIES, {"generation": str(generation)}, help=_GC_PAUSE_HELP
                )
                self._series[generation] = series
            for _ in range(len(pending)):
                try:
                    pause = pending.popleft()
                except IndexError:
                    break
                series.record(pause, now)
                recorded += 1
        return recorded


#: The process-wide recorder every :class:`RuntimeCollector` uses by default.
GC_PAUSES = GcPauseRecorder()


def install_gc_callback() -> GcPauseRecorder:
    """Start timing garbage collections (idempotent); return the process-wide recorder."""
    GC_PAUSES.install()
    return GC_PAUSES


def uninstall_gc_callback() -> None:
    """Stop timing garbage collections: remove the callback from ``gc.callbacks``."""
    GC_PAUSES.uninstall()


# --- the collector ----------------------------------------------------------------------------


class RuntimeCollector:
    """Garbage collector and thread readings; satisfies :class:`perfsdk.protocols.Collector`.

    :param registry: where GC pause times are recorded; default :func:`perfsdk.get_registry` at
        each collect. Settable (``collector.registry = agent.registry``).
    :param gc_pauses: the recorder to install and drain (default the process-wide
        :data:`GC_PAUSES`); ``None`` to not time collections.
    """

    name = "python_runtime"

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        gc_pauses: GcPauseRecorder | None = GC_PAUSES,
    ) -> None:
        self.registry = registry
        self.gc_pauses = gc_pauses
        if gc_pauses is not None:
            gc_pauses.install()

    def close(self) -> None:
        """Stop timing collections (removes the recorder's callback)."""
        if self.gc_pauses is not None:
            self.gc_pauses.uninstall()

    def collect(self) -> list[Sample]:
        """Record pending GC pauses into the registry; return the current readings."""
        if self.gc_pauses is not None:
            self.gc_pauses.drain(self.registry if self.registry is not None else get_registry())
        samples: list[Sample] = []
        for labels, stats in zip(_GENERATIONS, gc.get_stats(), strict=False):
            samples.append(
                Sample(
                    "python_gc_collections_total",
                    float(stats["collections"]),
                    labels,
                    "counter",
                    _COLLECTIONS_HELP,
                )
            )
            samples.append(
                Sample(
                    "python_gc_objects_collected_total",
                    float(stats["collected"]),
                    labels,
                    "counter",
                    _COLLECTED_HELP,
                )
            )
            samples.append(
                Sample(
                    "python_gc_objects_uncollectable_total",
                    float(stats["uncollectable"]),
                    labels,
                    "counter",
                    _UNCOLLECTABLE_HELP,
                )
            )
        for labels, count in zip(_GENERATIONS, gc.get_count(), strict=False):
            samples.append(
                Sample("python_gc_generation_count", float(count), labels, "gauge", _COUNT_HELP)
            )
        samples.append(
            Sample("python_threads", float(threading.active_count()), (), "gauge", _THREADS_HELP)
        )
        return samples


# --- event-loop lag ---------------------------------------------------------------------------


class LoopProbe:
    """A task measuring one event loop's lag; made by :func:`install_loop_probe`.

    Attributes for inspection: ``loop``, ``interval``, ``observations`` (wake-ups measured),
    ``max_lag`` and ``last_lag`` (seconds).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        registry: Registry | None,
        labels: Labels,
    ) -> None:
        self.loop = loop
        self.interval = interval
        self.registry = registry
        self.labels = labels
        self.observations = 0
        self.max_lag = 0.0
        self.last_lag = 0.0
        self._handle: asyncio.Task[None] | concurrent.futures.Future[None] | None = None
        self._series: _accel.Series | None = None
        self._series_registry: Registry | None = None

    @property
    def running(self) -> bool:
        """Whether the probe task is scheduled or running (not cancelled, not finished)."""
        return self._handle is not None and not self._handle.done()

    async def _run(self) -> None:
        import asyncio

        loop, interval = self.loop, self.interval
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self._record(max(0.0, loop.time() - start - interval))

    def _record(self, lag: float) -> None:
        registry = self.registry if self.registry is not None else get_registry()
        if registry is not self._series_registry or self._series is None:
            self._series = registry.series(LOOP_LAG_SERIES, dict(self.labels), help=_LOOP_LAG_HELP)
            self._series_registry = registry
        self._series.record(lag, registry.now())
        self.observations += 1
        self.last_lag = lag
        if lag > self.max_lag:
            self.max_lag = lag

    def cancel(self) -> None:
        """Stop the probe (from any thread); a no-op once it is stopped."""
        handle = self._handle
        if handle is None or handle.done():
            return
        try:
            if _running_loop() is self.loop or not self.loop.is_running():
                handle.cancel()
            else:
                self.loop.call_soon_threadsafe(handle.cancel)
        except RuntimeError:  # the loop was closed meanwhile: the task can never run again
            pass


_probes: dict[asyncio.AbstractEventLoop, LoopProbe] = {}
_probes_lock = threading.Lock()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    if "asyncio" not in sys.modules:
        return None  # nothing can be running
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def install_loop_probe(
    loop: asyncio.AbstractEventLoop | None = None,
    interval: float = 0.1,
    *,
    registry: Registry | None = None,
    labels: Mapping[str, object] | None = None,
) -> LoopProbe:
    """Start measuring the lag of ``loop`` (default: the running loop); idempotent per loop.

    :param loop: the event loop; from another thread, the probe is scheduled thread-safely (a loop
        that is not running yet starts the probe when it runs).
    :param interval: seconds the probe sleeps between measurements (positive).
    :param registry: where ``python_event_loop_lag_seconds`` is recorded; default
        :func:`perfsdk.get_registry` at each recording.
    :param labels: labels of the series (e.g. ``{"loop": "main"}`` when several loops are probed).
    :returns: the loop's probe; if the loop already has a running probe, that one, unchanged.
    :raises NoEventLoopError: no ``loop`` given and none running in this thread.
    :raises ConfigError: ``interval`` is not a positive number, or a label name is invalid.
    """
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise ConfigError(f"interval={interval!r} must be a positive number of seconds")
    if not (0 < interval < math.inf):
        raise ConfigError(f"interval={interval!r} must be a positive number of seconds")
    norm = normalize_labels(labels)
    running = _running_loop()
    if loop is None:
        loop = running
        if loop is None:
            raise NoEventLoopError(
                "install_loop_probe() needs an event loop: call it from a coroutine (or a "
                "callback) running in the loop, or pass loop="
            )
    if loop.is_closed():
        raise ConfigError(f"event loop {loop!r} is closed; it cannot be probed")
    with _probes_lock:
        probe = _probes.get(loop)
        if probe is not None and probe.running:
            return probe
        probe = LoopProbe(loop, float(interval), registry, norm)
        _probes[loop] = probe
    coro = probe._run()
    handle: asyncio.Task[None] | concurrent.futures.Future[None]
    if loop is running:
        handle = loop.create_task(coro, name="perfsdk-loop-probe")
    else:
        import asyncio

        handle = asyncio.run_coroutine_threadsafe(coro, loop)
    probe._handle = handle

    def forget(_: object) -> None:
        # Drop the loop from the table when its probe ends (cancelled, or the loop shut down),
        # so a finished loop is not kept alive by it.
        with _probes_lock:
            if _probes.get(loop) is probe:
                del _probes[loop]

    handle.add_done_callback(forget)
    return probe


def remove_loop_probe(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Stop the probe of ``loop`` (default: the running loop); return whether there was one."""
    if loop is None:
        loop = _running_loop()
        if loop is None:
            return False
    with _probes_lock:
        probe = _probes.pop(loop, None)
    if probe is None:
        return False
    probe.cancel()
    return True


def maybe_install_loop_probe(
    interval: float = 0.1, *, registry: Registry | None = None
) -> LoopProbe | None:
    """Install a probe into the loop running in this thread, if there is one; else do nothing.

    This is what ``perfsdk.start()`` does (through the runtime plugin's ``perfsdk_configure``) when
    it is called from inside a coroutine.
    """
    loop = _running_loop()
    if loop is None:
        return None
    return install_loop_probe(loop, interval, registry=registry)


def _loop_probes() -> dict[Any, LoopProbe]:
    """The probes currently installed, by loop (tests)."""
    with _probes_lock:
        return dict(_probes)
