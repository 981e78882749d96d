"""The current process: CPU, memory, threads, file descriptors, context switches, I/O.

Read with psutil inside one ``Process.oneshot()`` block, plus ``getrusage(RUSAGE_SELF)`` where it is
both cheaper and more correct than psutil (see below). One ``collect()`` costs about 0.2 ms of CPU
on the 2-CPU development VM (``benchmarks/collectors.py``), almost all of it psutil reading
``/proc/self/*`` files.

Choices, and why:

- **CPU seconds and context switches come from** ``getrusage`` on Linux and FreeBSD: one system
  call (about 1 µs) with microsecond CPU times, where psutil parses ``/proc/self/stat`` (10 ms
  clock ticks). On Linux, psutil's ``num_ctx_switches()`` reads ``/proc/self/status``, which counts
  the main thread only; ``getrusage`` counts every thread, dead ones included. Elsewhere psutil.
- **CPU percent is computed here** from the CPU-seconds delta over the wall-clock delta between two
  collects (the first against the moment the collector was made). psutil's ``cpu_percent()`` either
  blocks for an interval or keeps its own hidden state; this does neither. 100 means one core busy,
  so a multi-threaded process can exceed 100.
- **USS** (memory unique to the process, what would be freed if it exited) needs psutil's
  ``memory_full_info()``, which makes the kernel walk the page tables (``/proc/self/smaps_rollup``):
  0.2 ms for a small process, 7 ms at 1 GiB resident on the development machine, growing with the
  resident size. So it is read on the first collect and then every ``uss_every`` collects (default
  60, once a minute at the default 1 s interval; 0 never reads it), and never more often than keeps
  its own average cost under ``uss_budget`` (0.1%) of one core: after a read that took ``c`` seconds
  the next waits at least ``c / uss_budget`` seconds. Between reads the last value is reported.
  Built-in plugin configuration key: ``process_uss_every``.
- A reading the platform does not offer (``num_fds`` on Windows, ``io_counters`` on macOS) or
  refuses (``AccessDenied``) is switched off after its first failure and logged once; the other
  readings go on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from perfsdk.errors import ConfigError
from perfsdk.naming import Labels
from perfsdk.protocols import Sample

try:
    import resource as _resource
except ImportError:  # Windows
    _resource = None  # type: ignore[assignment]

__all__ = ["ProcessCollector"]

log = logging.getLogger("perfsdk.collectors")

# getrusage's ru_nvcsw/ru_nivcsw are maintained (per process, all threads) on these kernels.
_RUSAGE_SWITCHES = _resource is not None and sys.platform.startswith(("linux", "freebsd"))

_USER: Labels = (("mode", "user"),)
_SYSTEM: Labels = (("mode", "system"),)
_VOLUNTARY: Labels = (("kind", "voluntary"),)
_INVOLUNTARY: Labels = (("kind", "involuntary"),)
_READ: Labels = (("direction", "read"),)
_WRITE: Labels = (("direction", "write"),)

_CPU_HELP = "CPU time the process used, by mode."
_CPU_PERCENT_HELP = (
    "CPU use of the process between the last two collects, percent of one core (can exceed 100)."
)
_RSS_HELP = "Resident set size: memory of the process held in RAM."
_VMS_HELP = "Virtual memory size of the process."
_USS_HELP = "Unique set size: memory only this process uses (freed if it exited); read sparingly."
_THREADS_HELP = "Operating-system threads of the process."
_FDS_HELP = "Open file descriptors of the process."
_MAX_FDS_HELP = "Soft limit on open file descriptors (RLIMIT_NOFILE)."
_HANDLES_HELP = "Open handles of the process (Windows)."
_SWITCHES_HELP = "Context switches of the process, voluntary (waits) and involuntary (preemptions)."
_IO_BYTES_HELP = "Bytes the process read from / wrote to storage (Linux: at the block layer)."
_IO_OPS_HELP = "Read and write operations of the process (Linux: read/write system calls)."
_START_HELP = "Start time of the process, seconds since the Unix epoch."


class ProcessCollector:
    """Readings of the current process; satisfies :class:`perfsdk.protocols.Collector`.

    :param uss_every: read USS on the first collect and then every this many collects; 0: never.
    :param uss_budget: the most of one core USS reads may use on average (default 0.001, 0.1%).
    :param clock: monotonic seconds (tests inject one).
    :raises ConfigError: a parameter is out of range.
    """

    name = "process"

    def __init__(
        self,
        *,
        uss_every: int = 60,
        uss_budget: float = 0.001,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(uss_every, bool) or not isinstance(uss_every, int) or uss_every < 0:
            raise ConfigError(f"uss_every={uss_every!r} must be an integer >= 0 (0: never)")
        if not 0 < uss_budget <= 1:
            raise ConfigError(f"uss_budget={uss_budget!r} must be a fraction of a core in (0, 1]")
        self.uss_every = uss_every
        self.uss_budget = float(uss_budget)
        self._clock = clock
        #: readings switched off after a failure (``"io_counters"``, ...), for tests and debugging.
        self.disabled: set[str] = set()
        self._start(os.getpid())

    def _start(self, pid: int) -> None:
        self._pid = pid
        self._process = psutil.Process(pid)
        self._collects = 0
        self._uss: float | None = None
        self._uss_not_before = 0.0
        self._start_time: float | None = None
        try:
            self._start_time = self._process.create_time()
        except (psutil.Error, OSError):
            pass
        user, system, _, _ = self._cpu_and_switches()
        self._last_cpu = user + system
        self._last_wall = self._clock()

    def _off(self, reading: str, exc: BaseException) -> None:
        self.disabled.add(reading)
        log.info(
            "perfsdk: process collector cannot read %s (%s: %s); it is no longer reported",
            reading,
            type(exc).__name__,
            exc,
        )

    def _cpu_and_switches(self) -> tuple[float, float, int | None, int | None]:
        """(user s, system s, voluntary, involuntary); switches None where unavailable."""
        if _resource is not None:
            usage = _resource.getrusage(_resource.RUSAGE_SELF)
            if _RUSAGE_SWITCHES:
                return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw
            user, system = usage.ru_utime, usage.ru_stime
        else:
            times = self._process.cpu_times()
            user, system = times.user, times.system
        if "num_ctx_switches" not in self.disabled:
            try:
                switches = self._process.num_ctx_switches()
                return user, system, switches.voluntary, switches.involuntary
            except (psutil.Error, OSError, NotImplementedError) as exc:
                self._off("num_ctx_switches", exc)
        return user, system, None, None

    def _optional(self, reading: str, read: Callable[[], Any]) -> Any:
        if reading in self.disabled:
            return None
        try:
            return read()
        except (psutil.Error, OSError, NotImplementedError, AttributeError) as exc:
            self._off(reading, exc)
            return None

    def _read_uss(self) -> None:
        started = self._clock()
        full = self._optional("memory_full_info", self._process.memory_full_info)
        uss = getattr(full, "uss", None)
        if uss is None:  # the platform has no USS: memory_full_info is memory_info there
            if full is not None:
                self.disabled.add("memory_full_info")
            return
        self._uss = float(uss)
        ended = self._clock()
        self._uss_not_before = ended + (ended - started) / self.uss_budget

    def collect(self) -> list[Sample]:
        """Return the current readings."""
        pid = os.getpid()
        if pid != self._pid:  # forked: psutil.Process still points at the parent
            self._start(pid)
        process = self._process
        samples: list[Sample] = []
        with process.oneshot():
            user, system, voluntary, involuntary = self._cpu_and_switches()
            now = self._clock()
            memory = process.memory_info()
            threads = self._optional("num_threads", process.num_threads)
            fds = handles = None
            if hasattr(process, "num_fds"):
                fds = self._optional("num_fds", process.num_fds)
            elif hasattr(process, "num_handles"):
                handles = self._optional("num_handles", process.num_handles)
            io = None
            if hasattr(process, "io_counters"):
                io = self._optional("io_counters", process.io_counters)
            if (
                self.uss_every
                and "memory_full_info" not in self.disabled
                and self._collects % self.uss_every == 0
                and now >= self._uss_not_before
            ):
                self._read_uss()
        self._collects += 1

        samples.append(Sample("process_cpu_seconds_total", user, _USER, "counter", _CPU_HELP))
        samples.append(Sample("process_cpu_seconds_total", system, _SYSTEM, "counter", _CPU_HELP))
        cpu = user + system
        elapsed = now - self._last_wall
        if elapsed > 0:
            percent = max(0.0, (cpu - self._last_cpu) / elapsed * 100.0)
            self._last_cpu, self._last_wall = cpu, now
            samples.append(Sample("process_cpu_percent", percent, (), "gauge", _CPU_PERCENT_HELP))
        samples.append(
            Sample("process_resident_memory_bytes", float(memory.rss), (), "gauge", _RSS_HELP)
        )
        samples.append(
            Sample("process_virtual_memory_bytes", float(memory.vms), (), "gauge", _VMS_HELP)
        )
        if self._uss is not None:
            samples.append(Sample("process_unique_memory_bytes", self._uss, (), "gauge", _USS_HELP))
        if threads is not None:
            samples.append(Sample("process_threads", float(threads), (), "gauge", _THREADS_HELP))
        if fds is not None:
            samples.append(Sample("process_open_fds", float(fds), (), "gauge", _FDS_HELP))
            max_fds = _max_fds()
            if max_fds is not None:
                samples.append(Sample("process_max_fds", max_fds, (), "gauge", _MAX_FDS_HELP))
        if handles is not None:
            samples.append(
                Sample("process_open_handles", float(handles), (), "gauge", _HANDLES_HELP)
            )
        if voluntary is not None and involuntary is not None:
            samples.append(
                Sample(
                    "process_context_switches_total",
                    float(voluntary),
                    _VOLUNTARY,
                    "counter",
                    _SWITCHES_HELP,
                )
            )
            samples.append(
                Sample(
                    "process_context_switches_total",
                    float(involuntary),
                    _INVOLUNTARY,
                    "counter",
                    _SWITCHES_HELP,
                )
            )
        if io is not None:
            samples.append(
                Sample(
                    "process_io_bytes_total", float(io.read_bytes), _READ, "counter", _IO_BYTES_HELP
                )
            )
            samples.append(
                Sample(
                    "process_io_bytes_total",
                    float(io.write_bytes),
                    _WRITE,
                    "counter",
                    _IO_BYTES_HELP,
                )
            )
            samples.append(
                Sample(
                    "process_io_operations_total",
                    float(io.read_count),
                    _READ,
                    "counter",
                    _IO_OPS_HELP,
                )
            )
            samples.append(
                Sample(
                    "process_io_operations_total",
                    float(io.write_count),
                    _WRITE,
                    "counter",
                    _IO_OPS_HELP,
                )
            )
        if self._start_time is not None:
            samples.append(
                Sample("process_start_time_seconds", self._start_time, (), "gauge", _START_HELP)
            )
        return samples


def _max_fds() -> float | None:
    if _resource is None:
        return None
    soft = _resource.getrlimit(_resource.RLIMIT_NOFILE)[0]
    if soft == _resource.RLIM_INFINITY or soft < 0:
        return None
    return float(soft)
