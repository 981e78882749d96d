"""perfsdk plugin: resource usage of the current process, from ``resource.getrusage``.

Registered through the ``perfsdk`` entry-point group under the name ``resource``. On platforms
without the ``resource`` module (Windows) it contributes no collector.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from perfsdk import hookimpl
from perfsdk.protocols import Collector, Sample

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

__all__ = ["ResourceCollector", "perfsdk_collectors"]

# ru_maxrss is in kibibytes on Linux and the BSDs, in bytes on macOS.
_MAXRSS_SCALE = 1 if sys.platform == "darwin" else 1024

# (metric name, getrusage field, help); all counters.
_COUNTERS = (
    ("process_minor_page_faults_total", "ru_minflt", "Page faults served without I/O."),
    ("process_major_page_faults_total", "ru_majflt", "Page faults that required I/O."),
    ("process_block_input_operations_total", "ru_inblock", "Block input operations."),
    ("process_block_output_operations_total", "ru_oublock", "Block output operations."),
    (
        "process_voluntary_context_switches_total",
        "ru_nvcsw",
        "Context switches because the process waited (I/O, locks, sleep).",
    ),
    (
        "process_involuntary_context_switches_total",
        "ru_nivcsw",
        "Context switches because the process's time slice ran out or a higher-priority task ran.",
    ),
)
_CPU_HELP = "CPU time consumed by the process, by mode."
_MAXRSS_HELP = "Peak resident set size of the process."


class ResourceCollector:
    """Reads ``getrusage(RUSAGE_SELF)``: one system call per collection."""

    name = "process_resource"

    def collect(self) -> list[Sample]:
        """Return the current readings."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        samples = [
            Sample(
                "process_max_rss_bytes",
                float(usage.ru_maxrss * _MAXRSS_SCALE),
                (),
                "gauge",
                _MAXRSS_HELP,
            ),
            Sample(
                "process_cpu_seconds_total",
                float(usage.ru_utime),
                (("mode", "user"),),
                "counter",
                _CPU_HELP,
            ),
            Sample(
                "process_cpu_seconds_total",
                float(usage.ru_stime),
                (("mode", "system"),),
                "counter",
                _CPU_HELP,
            ),
        ]
        for name, field, help_text in _COUNTERS:
            samples.append(Sample(name, float(getattr(usage, field)), (), "counter", help_text))
        return samples


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the resource collector where ``getrusage`` exists."""
    if resource is None:
        return []
    return [ResourceCollector()]
