"""perfsdk plugin: utilization and memory of each NVIDIA GPU, read through NVML (``pynvml``).

Registered through the ``perfsdk`` entry-point group under the name ``gpu``; its collector is named
``gpu`` too (``disabled_collectors = ["gpu"]`` skips it). On a machine without an NVIDIA GPU, or
without the driver or ``nvidia-ml-py``, it contributes no collector and raises nothing: the reason
is logged once at DEBUG on the ``perfsdk.collectors`` logger.

NVML is initialised when the collector is made (the agent starting) and shut down by
``perfsdk_unconfigure`` (the agent stopping). One collect makes two NVML queries per GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from perfsdk import hookimpl
from perfsdk.collectors import disabled_collectors
from perfsdk.protocols import Collector, Sample

__all__ = ["GpuCollector", "open_gpu_collector", "perfsdk_collectors", "perfsdk_unconfigure"]

log = logging.getLogger("perfsdk.collectors")

NAME = "gpu"

_UTILIZATION_HELP = (
    "Share of the last sample period (1/6 s to 1 s) a kernel ran on the GPU, percent."
)
_MEMORY_UTILIZATION_HELP = (
    "Share of the last sample period the GPU's memory was being read or written, percent."
)
_MEMORY_HELP = "GPU memory: total, used, free."
_INFO_HELP = "Always 1; the labels name each GPU's model and UUID."

_unavailable_logged = False
_open: list[GpuCollector] = []


def _text(value: object) -> str:
    # nvidia-ml-py returns str; older pynvml releases returned bytes.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GpuCollector:
    """Per-GPU readings; satisfies :class:`perfsdk.protocols.Collector`.

    :param nvml: the initialised ``pynvml`` module.
    :param devices: ``(index, handle)`` of each GPU to read.

    A GPU whose query fails (lost, reset, not supported) is skipped for that collect; the first
    failure of each GPU is logged at DEBUG. ``collect()`` never raises an NVML error.
    """

    name = NAME

    def __init__(self, nvml: ModuleType, devices: list[tuple[int, Any]]) -> None:
        self._nvml = nvml
        self._devices: list[tuple[Any, tuple[tuple[str, str], ...], list[Sample]]] = []
        self._failed: set[int] = set()
        self._closed = False
        for index, handle in devices:
            labels = (("gpu", str(index)),)
            info: list[Sample] = []
            try:
                name = _text(nvml.nvmlDeviceGetName(handle))
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                info.append(
                    Sample(
                        "gpu_info",
                        1.0,
                        (("gpu", str(index)), ("name", name), ("uuid", uuid)),
                        "gauge",
                        _INFO_HELP,
                    )
                )
            except nvml.NVMLError as exc:
                log.debug("perfsdk: GPU %d has no name or UUID (%s)", index, exc)
            self._devices.append((handle, labels, info))

    @property
    def devices(self) -> int:
        """How many GPUs this collector reads."""
        return len(self._devices)

    def collect(self) -> list[Sample]:
        """Return the current readings of every GPU that answers."""
        if self._closed:
            return []
        nvml = self._nvml
        samples: list[Sample] = []
        for index, (handle, labels, info) in enumerate(self._devices):
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:
                if index not in self._failed:
                    self._failed.add(index)
                    log.debug("perfsdk: GPU %d could not be read (%s); skipped", index, exc)
                continue
            samples.extend(info)
            samples.append(
                Sample(
                    "gpu_utilization_percent", float(rates.gpu), labels, "gauge", _UTILIZATION_HELP
                )
            )
            samples.append(
                Sample(
                    "gpu_memory_utilization_percent",
                    float(rates.memory),
                    labels,
                    "gauge",
                    _MEMORY_UTILIZATION_HELP,
                )
            )
            for state, value in (
                ("total", memory.total),
                ("used", memory.used),
                ("free", memory.free),
            ):
                samples.append(
                    Sample(
                        "gpu_memory_bytes",
                        float(value),
                        (*labels, ("state", state)),
                        "gauge",
                        _MEMORY_HELP,
                    )
                )
        return samples

    def close(self) -> None:
        """Shut NVML down (once); further collects return nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("perfsdk: nvmlShutdown failed (%s)", exc)


def _unavailable(reason: str) -> None:
    global _unavailable_logged
    if not _unavailable_logged:
        _unavailable_logged = True
        log.debug("perfsdk: no GPU collector: %s", reason)


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:
        pass


def open_gpu_collector() -> GpuCollector | None:
    """Initialise NVML and return a collector of every GPU; ``None`` (logged once at DEBUG) when
    there is no NVML library, driver or GPU. Never raises an NVML error."""
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError as exc:
        _unavailable(f"pynvml cannot be imported ({exc}); pip install nvidia-ml-py")
        return None
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError) as exc:
        _unavailable(f"NVML did not initialise ({type(exc).__name__}: {exc})")
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        devices = [(index, pynvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]
    except pynvml.NVMLError as exc:
        _shutdown(pynvml)
        _unavailable(f"NVML could not list the GPUs ({type(exc).__name__}: {exc})")
        return None
    if not devices:
        _shutdown(pynvml)
        _unavailable("NVML found no GPU")
        return None
    return GpuCollector(pynvml, devices)


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the GPU collector when NVML finds at least one GPU."""
    if NAME in disabled_collectors(config):
        return []
    collector = open_gpu_collector()
    if collector is None:
        return []
    _open.append(collector)
    return [collector]


@hookimpl
def perfsdk_unconfigure(config: Mapping[str, object]) -> None:
    """Shut NVML down for the collectors this plugin opened."""
    while _open:
        _open.pop().close()
