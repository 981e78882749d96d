"""The machine: CPU per mode, memory, swap, disk usage and I/O, network I/O (psutil).

One ``collect()`` costs about 0.8 to 0.9 ms of CPU on the 2-CPU development VM
(``benchmarks/collectors.py``): psutil reads ``/proc/stat``, ``/proc/meminfo`` (twice: memory,
then swap with ``/proc/vmstat``), ``/proc/diskstats`` and ``/proc/net/dev``, and calls
``statvfs`` on each disk path.

Choices, and why:

- **CPU percent per mode is computed here** from the deltas of ``psutil.cpu_times()`` between two
  collects (the first against the moment the collector was made), as a share of all CPUs (the
  modes of one collect add up to 100; on Linux ``guest`` and ``guest_nice`` are already inside
  ``user`` and ``nice`` and are left out of the total, as psutil and htop do). psutil's
  ``cpu_times_percent()`` keeps module-level state that the application's own calls would share.
  When less than one kernel tick elapsed between two collects, the percentages are skipped that
  round (the baseline is kept, so nothing is lost).
- **Network counters are summed over every interface except loopback** (``lo``, ``lo0``,
  ``Loopback ...``): traffic a process sends itself is not network I/O. Per-interface series are
  left out on purpose: hosts running containers have hundreds of virtual interfaces.
- **Disk I/O** is psutil's machine-wide sum over physical disks (partitions are not counted twice).
  A machine or container without ``/proc/diskstats`` reports no disk I/O.
- A reading that fails (not offered by the platform, or not permitted) is switched off after its
  first failure and logged once; the other readings go on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import psutil

from perfsdk.errors import ConfigError
from perfsdk.naming import Labels
from perfsdk.protocols import Sample

__all__ = ["SystemCollector"]

log = logging.getLogger("perfsdk.collectors")

_LINUX = sys.platform.startswith("linux")

_CPU_PERCENT_HELP = "Share of all CPUs spent in each mode between the last two collects, percent."
_CPU_SECONDS_HELP = "CPU time of the whole machine, summed over CPUs, by mode."
_CPU_COUNT_HELP = "Logical CPUs of the machine."
_LOAD_HELP = "Load average: runnable (and, on Linux, uninterruptible) tasks, over 1, 5, 15 minutes."
_MEMORY_HELP = (
    "Physical memory: total, available (can be given to processes without swapping), used "
    "(psutil's definition)."
)
_SWAP_HELP = "Swap space: total, used, free."
_SWAP_IO_HELP = "Bytes swapped in from / out to disk since boot."
_DISK_USAGE_HELP = "Filesystem space at each configured path: total, used, free (for non-root)."
_DISK_BYTES_HELP = "Bytes read from / written to physical disks."
_DISK_OPS_HELP = "Read and write operations completed by physical disks."
_NET_BYTES_HELP = "Bytes received / transmitted by non-loopback network interfaces."
_NET_PACKETS_HELP = "Packets received / transmitted by non-loopback network interfaces."
_NET_ERRORS_HELP = "Receive / transmit errors of non-loopback network interfaces."
_NET_DROPPED_HELP = "Incoming / outgoing packets dropped by non-loopback network interfaces."

_READ: Labels = (("direction", "read"),)
_WRITE: Labels = (("direction", "write"),)
_RECEIVE: Labels = (("direction", "receive"),)
_TRANSMIT: Labels = (("direction", "transmit"),)
_SWAP_IN: Labels = (("direction", "in"),)
_SWAP_OUT: Labels = (("direction", "out"),)
_LOAD_LABELS: tuple[Labels, ...] = ((("period", "1m"),), (("period", "5m"),), (("period", "15m"),))


def _state(state: str) -> Labels:
    return (("state", state),)


_TOTAL, _AVAILABLE, _USED, _FREE = (
    _state("total"),
    _state("available"),
    _state("used"),
    _state("free"),
)


def _disk_labels(path: str) -> tuple[Labels, Labels, Labels]:
    mount = ("mountpoint", path)
    return (mount, ("state", "total")), (mount, ("state", "used")), (mount, ("state", "free"))


def is_loopback(interface: str) -> bool:
    """Whether a network interface name is a loopback interface, by name (Linux, BSD, Windows)."""
    return (
        interface == "lo"
        or (interface.startswith("lo") and interface[2:].isdigit())
        or interface.lower().startswith("loopback")
    )


class SystemCollector:
    """Readings of the whole machine; satisfies :class:`perfsdk.protocols.Collector`.

    :param disk_paths: filesystem paths whose usage is reported (label ``mountpoint``).
    :raises ConfigError: ``disk_paths`` is not a sequence of strings.
    """

    name = "system"

    def __init__(self, *, disk_paths: Iterable[str] = ("/",)) -> None:
        if isinstance(disk_paths, str):
            disk_paths = (disk_paths,)
        paths = tuple(disk_paths)
        if not all(isinstance(path, str) and path for path in paths):
            raise ConfigError(f"disk_paths={paths!r} must be a list of filesystem paths")
        self.disk_paths = paths
        self._disk_labels = {path: _disk_labels(path) for path in paths}
        #: readings switched off after a failure (``"disk_io_counters"``, ...).
        self.disabled: set[str] = set()
        self._cpu_count = psutil.cpu_count() or 0
        self._last_cpu = psutil.cpu_times()
        self._mode_labels = {mode: (("mode", mode),) for mode in self._last_cpu._fields}

    def _optional(self, reading: str, read: Callable[[], Any]) -> Any:
        if reading in self.disabled:
            return None
        try:
            return read()
        except (psutil.Error, OSError, NotImplementedError, RuntimeError) as exc:
            self.disabled.add(reading)
            log.info(
                "perfsdk: system collector cannot read %s (%s: %s); it is no longer reported",
                reading,
                type(exc).__name__,
                exc,
            )
            return None

    def _cpu(self, samples: list[Sample]) -> None:
        times = psutil.cpu_times()
        labels = self._mode_labels
        for mode, seconds in zip(times._fields, times):
            samples.append(
                Sample(
                    "system_cpu_seconds_total", seconds, labels[mode], "counter", _CPU_SECONDS_HELP
                )
            )
        last = self._last_cpu
        deltas = [max(0.0, now - before) for now, before in zip(times, last)]
        total = sum(deltas)
        if _LINUX:
            total -= getattr(times, "guest", 0.0) - getattr(last, "guest", 0.0)
            total -= getattr(times, "guest_nice", 0.0) - getattr(last, "guest_nice", 0.0)
        if total <= 0:
            return  # under one kernel tick since the last collect: keep the baseline
        self._last_cpu = times
        scale = 100.0 / total
        for mode, delta in zip(times._fields, deltas):
            samples.append(
                Sample(
                    "system_cpu_percent", delta * scale, labels[mode], "gauge", _CPU_PERCENT_HELP
                )
            )

    def collect(self) -> list[Sample]:
        """Return the current readings."""
        samples: list[Sample] = []
        self._cpu(samples)
        if self._cpu_count:
            samples.append(
                Sample("system_cpu_count", float(self._cpu_count), (), "gauge", _CPU_COUNT_HELP)
            )
        if hasattr(os, "getloadavg"):  # psutil emulates it on Windows with a thread: not that
            load = self._optional("getloadavg", os.getloadavg)
            if load is not None:
                for labels, value in zip(_LOAD_LABELS, load):
                    samples.append(
                        Sample("system_load_average", value, labels, "gauge", _LOAD_HELP)
                    )

        memory = self._optional("virtual_memory", psutil.virtual_memory)
        if memory is not None:
            for state, value in (
                (_TOTAL, memory.total),
                (_AVAILABLE, memory.available),
                (_USED, memory.used),
            ):
                samples.append(
                    Sample("system_memory_bytes", float(value), state, "gauge", _MEMORY_HELP)
                )
        swap = self._optional("swap_memory", psutil.swap_memory)
        if swap is not None:
            for state, value in ((_TOTAL, swap.total), (_USED, swap.used), (_FREE, swap.free)):
                samples.append(
                    Sample("system_swap_bytes", float(value), state, "gauge", _SWAP_HELP)
                )
            samples.append(
                Sample(
                    "system_swap_io_bytes_total",
                    float(swap.sin),
                    _SWAP_IN,
                    "counter",
                    _SWAP_IO_HELP,
                )
            )
            samples.append(
                Sample(
                    "system_swap_io_bytes_total",
                    float(swap.sout),
                    _SWAP_OUT,
                    "counter",
                    _SWAP_IO_HELP,
                )
            )

        for path in self.disk_paths:
            usage = self._optional(f"disk_usage({path})", partial(psutil.disk_usage, path))
            if usage is None:
                continue
            total, used, free = self._disk_labels[path]
            for labelled, value in ((total, usage.total), (used, usage.used), (free, usage.free)):
                samples.append(
                    Sample(
                        "system_disk_usage_bytes", float(value), labelled, "gauge", _DISK_USAGE_HELP
                    )
                )

        disk = self._optional("disk_io_counters", psutil.disk_io_counters)
        if disk is not None:
            samples.append(
                Sample(
                    "system_disk_io_bytes_total",
                    float(disk.read_bytes),
                    _READ,
                    "counter",
                    _DISK_BYTES_HELP,
                )
            )
            samples.append(
                Sample(
                    "system_disk_io_bytes_total",
                    float(disk.write_bytes),
                    _WRITE,
                    "counter",
                    _DISK_BYTES_HELP,
                )
            )
            samples.append(
                Sample(
                    "system_disk_io_operations_total",
                    float(disk.read_count),
                    _READ,
                    "counter",
                    _DISK_OPS_HELP,
                )
            )
            samples.append(
                Sample(
                    "system_disk_io_operations_total",
                    float(disk.write_count),
                    _WRITE,
                    "counter",
                    _DISK_OPS_HELP,
                )
            )

        nics = self._optional("net_io_counters", lambda: psutil.net_io_counters(pernic=True))
        if nics is not None:
            self._network(nics, samples)
        return samples

    def _network(self, nics: dict[str, Any], samples: list[Sample]) -> None:
        sent = recv = packets_sent = packets_recv = errin = errout = dropin = dropout = 0
        for interface, counters in nics.items():
            if is_loopback(interface):
                continue
            sent += counters.bytes_sent
            recv += counters.bytes_recv
            packets_sent += counters.packets_sent
            packets_recv += counters.packets_recv
            errin += counters.errin
            errout += counters.errout
            dropin += counters.dropin
            dropout += counters.dropout
        for name, received, transmitted, help_text in (
            ("system_network_bytes_total", recv, sent, _NET_BYTES_HELP),
            ("system_network_packets_total", packets_recv, packets_sent, _NET_PACKETS_HELP),
            ("system_network_errors_total", errin, errout, _NET_ERRORS_HELP),
            ("system_network_dropped_total", dropin, dropout, _NET_DROPPED_HELP),
        ):
            samples.append(Sample(name, float(received), _RECEIVE, "counter", help_text))
            samples.append(Sample(name, float(transmitted), _TRANSMIT, "counter", help_text))
