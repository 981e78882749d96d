"""The in-process agent: one daemon thread that collects, snapshots and exports on a schedule.

Nothing here runs on the application's threads. Each tick: every collector's readings go into the
registry's settable cells, the registry is snapshotted (immutable records, with mergeable sketches),
and every exporter receives the snapshot. A collector or exporter that raises is isolated: logged
once, counted (``perfsdk_collector_errors_total`` / ``perfsdk_exporter_errors_total``), and skipped
with exponential backoff (one interval, two, four, ... at most 60 s) until it succeeds again.

The agent flushes on exit (atexit) and is fork-safe: in a forked child the registry is zeroed in
place (decorated functions keep their series) and, if the parent ran an agent, a new one starts in
the child with fresh exporters, so each worker reports on its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .config import Config, load_config
from .records import Snapshot
from .registry import Registry, get_registry

if TYPE_CHECKING:
    from ._accel import Gauge
    from .plugins import PluginManager
    from .protocols import Collector, Exporter

__all__ = ["Agent", "get_agent", "start", "stop"]

log = logging.getLogger("perfsdk.agent")

MAX_BACKOFF_SECONDS = 60.0


@dataclass(slots=True)
class _Health:
    """Failure bookkeeping of one collector or exporter."""

    failures: int = 0
    skip_until: float = 0.0
    logged: bool = False


class Agent:
    """Schedules collection, snapshots and export on one daemon thread.

    :param config: resolved configuration (``perfsdk.config.load_config``).
    :param registry: the registry to snapshot (default: the global one).
    :param manager: the plugin manager providing collectors and exporters (default: the global one).
    """

    def __init__(
        self,
        config: Config | None = None,
        registry: Registry | None = None,
        manager: PluginManager | None = None,
    ) -> None:
        if manager is None:
            from .plugins import get_plugin_manager

            manager = get_plugin_manager()
        self.manager = manager
        if config is None:
            options: dict[str, object] = {}
            manager.hooks.addoption(options)
            config = load_config(plugin_defaults=options)
        self.config = config
        self.registry = registry if registry is not None else get_registry()
        self.interval = config.number("interval")
        self.collectors: list[Collector] = []
        self.exporters: list[Exporter] = []
        self.last_snapshot: Snapshot | None = None
        self.ticks = 0
        self.cpu_seconds = 0.0
        self._health: dict[int, _Health] = {}
        self._cells: dict[tuple[str, object, str], Gauge] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()
        self._started = False
        self._tick_series = self.registry.series(
            "perfsdk_agent_tick_seconds", help="Time the agent spends in one tick."
        )
        self._cpu = self.registry.sample_cell(
            "perfsdk_agent_cpu_seconds_total", None, "counter", "CPU time used by the agent thread."
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def _load_components(self) -> None:
        hooks = self.manager.hooks
        hooks.configure(self.config)
        disabled = set(cast("list[str]", self.config.get("disabled_collectors") or []))
        self.collectors = [c for c in hooks.collectors(self.config) if c.name not in disabled]
        for c in self.collectors:  # collectors that record timers (GC pauses) use our registry
            if getattr(c, "registry", False) is None:
                c.registry = self.registry  # type: ignore[attr-defined]
        self.exporters = hooks.exporters(self.config)

    def start(self) -> Agent:
        """Load collectors and exporters from the plugins and start the thread (idempotent)."""
        if self._started:
            return self
        self._load_components()
        self._started = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="perfsdk-agent", daemon=True)
        self._thread.start()
        self.manager.hooks.agent_started(self)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, run a last tick (flush), close the exporters. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        try:
            self.manager.hooks.agent_stopping(self)
            self.tick()
        finally:
            for exporter in self.exporters:
                try:
                    exporter.close()
                except Exception:
                    log.debug(
                        "perfsdk: exporter %r failed to close", _name(exporter), exc_info=True
                    )
            self.manager.hooks.unconfigure(self.config)

    @property
    def running(self) -> bool:
        return self._started and self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.tick()
            except Exception:  # the thread must survive anything
                log.exception("perfsdk: agent tick failed")
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # fell behind (a long GC, a suspended VM): skip, don't burst
                next_at = now + self.interval

    # --- one round -------------------------------------------------------------------------------

    def _skip(self, component: object, now: float) -> bool:
        health = self._health.get(id(component))
        return health is not None and now < health.skip_until

    def _ok(self, component: object) -> None:
        health = self._health.get(id(component))
        if health is not None and health.failures:
            log.info("perfsdk: %r works again", _name(component))
            health.failures = 0
            health.skip_until = 0.0

    def _failed(self, component: object, kind: str, exc: BaseException, now: float) -> None:
        health = self._health.setdefault(id(component), _Health())
        health.failures += 1
        backoff = min(self.interval * 2 ** (health.failures - 1), MAX_BACKOFF_SECONDS)
        health.skip_until = now + backoff
        name = _name(component)
        self.registry.counter(
            f"perfsdk_{kind}_errors_total",
            {kind: name},
            help=f"Failures of each {kind}; a failing {kind} is retried with backoff.",
        ).inc()
        if not health.logged:
            health.logged = True
            log.warning(
                "perfsdk: %s %r failed (%s: %s); isolated, retried with backoff, "
                "further failures are counted in perfsdk_%s_errors_total",
                kind,
                name,
                type(exc).__name__,
                exc,
                kind,
            )
        else:
            log.debug("perfsdk: %s %r failed again", kind, name, exc_info=exc)

    def tick(self) -> Snapshot:
        """One synchronous round: collect, snapshot, export. Returns the snapshot."""
        with self._tick_lock:
            cpu0 = time.thread_time()
            t0 = self.registry.now()
            now = time.monotonic()
            for collector in self.collectors:
                if self._skip(collector, now):
                    continue
                try:
                    cells = self._cells
                    for sample in collector.collect():
                        key = (sample.name, sample.labels, sample.kind)
                        cell = cells.get(key)
                        if cell is None:  # validated once, then reused every tick
                            cell = self.registry.sample_cell(
                                sample.name, sample.labels, sample.kind, sample.help
                            )
                            cells[key] = cell
                        cell.set(sample.value)
                except Exception as exc:
                    self._failed(collector, "collector", exc, now)
                else:
                    self._ok(collector)
            snapshot = self.registry.snapshot(include_sketches=True)
            self.manager.hooks.snapshot_taken(snapshot)
            for exporter in self.exporters:
                if self._skip(exporter, now):
                    continue
                try:
                    exporter.export(snapshot)
                except Exception as exc:
                    self._failed(exporter, "exporter", exc, now)
                else:
                    self._ok(exporter)
            self.last_snapshot = snapshot
            self.ticks += 1
            t1 = self.registry.now()
            self._tick_series.record((t1 - t0) * self._tick_series.seconds_per_tick, t1)
            self.cpu_seconds += time.thread_time() - cpu0
            self._cpu.set(self.cpu_seconds)
            return snapshot


def _name(component: object) -> str:
    return str(getattr(component, "name", type(component).__name__))


# --- the process-wide agent ---------------------------------------------------------------------

_agent: Agent | None = None
_lock = threading.Lock()
_hooks_installed = False


def get_agent() -> Agent | None:
    """The running process-wide agent, or None."""
    return _agent


def start(**options: object) -> Agent:
    """Start the process-wide agent (idempotent: a second call returns the running agent).

    Options override ``PERFSDK_*`` environment variables, ``perfsdk.toml`` and
    ``[tool.perfsdk]`` in ``pyproject.toml``; see :mod:`perfsdk.config`.
    """
    global _agent
    with _lock:
        if _agent is not None and _agent._started:
            if options:
                log.warning("perfsdk.start(): the agent is already running; options ignored")
            return _agent
        from .plugins import get_plugin_manager

        manager = get_plugin_manager()
        defaults: dict[str, object] = {}
        manager.hooks.addoption(defaults)
        config = load_config(options, plugin_defaults=defaults)
        _install_process_hooks()
        agent = Agent(config, get_registry(), manager)
        agent.start()
        _agent = agent
        return agent


def stop(timeout: float = 5.0) -> None:
    """Stop the process-wide agent, flushing a last snapshot to the exporters."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.stop(timeout)


def _at_exit() -> None:
    try:
        stop(timeout=2.0)
    except Exception:  # never turn an exit into a traceback
        log.debug("perfsdk: flush at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    """A forked child starts clean and, if the parent had an agent, runs its own."""
    global _agent, _lock
    _lock = threading.Lock()  # the parent's lock may have been held at fork time
    parent = _agent
    _agent = None
    try:
        get_registry().reset_data()
        if parent is not None and parent._started:
            agent = Agent(parent.config, get_registry(), parent.manager)
            agent.start()
            _agent = agent
    except Exception:
        log.warning(
            "perfsdk: could not restart the agent in forked child %d", os.getpid(), exc_info=True
        )


def _install_process_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_after_fork_in_child)
