"""The timing API: ``@timed``, ``timer``, ``counter``, ``gauge``.

Plain functions and methods get the native per-call wrapper (a C type with vectorcall); coroutine
functions, generators and async generators get Python wrappers of the same kind, so
``inspect.iscoroutinefunction`` and friends stay true.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from . import _accel
from .errors import ConfigError
from .naming import check_metric_name, sanitize_metric_name
from .registry import Registry, get_registry

__all__ = ["counter", "gauge", "timed", "timer"]

F = TypeVar("F", bound=Callable[..., Any])


def _is_cancellation(exc_type: type[BaseException] | None) -> bool:
    """Cancellation and close are how callers stop work, not failures of the timed code."""
    if exc_type is None:
        return True
    if issubclass(exc_type, (GeneratorExit, KeyboardInterrupt)):
        return True
    import asyncio  # only on the exception path

    return issubclass(exc_type, asyncio.CancelledError)


def _default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or "function"
    return sanitize_metric_name(f"{module}.{qualname}" if module else qualname)


def _wrap(
    func: Any,
    name: str | None,
    labels: Mapping[str, object] | None,
    registry: Registry | None,
    threshold: float | None,
) -> Any:
    if isinstance(func, staticmethod):
        return staticmethod(_wrap(func.__func__, name, labels, registry, threshold))
    if isinstance(func, classmethod):
        return classmethod(_wrap(func.__func__, name, labels, registry, threshold))
    if not callable(func):
        raise ConfigError(f"@timed can only decorate a callable, got {func!r}")
    reg = registry if registry is not None else get_registry()
    series = reg.series(name or _default_name(func), labels, threshold=threshold)
    clock = reg.clock
    spt = series.seconds_per_tick

    def finish(t0: int, failed: bool) -> None:
        t1 = clock()
        if failed:
            series.record_error((t1 - t0) * spt, t1)
        else:
            series.record((t1 - t0) * spt, t1)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                t1 = clock()
                if _is_cancellation(type(exc)):
                    series.record((t1 - t0) * spt, t1)
                else:
                    series.record_error((t1 - t0) * spt, t1)
                raise
            t1 = clock()
            series.record((t1 - t0) * spt, t1)
            return result

        return timed_coroutine

    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def timed_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            agen = func(*args, **kwargs)
            t0 = clock()
            failed = False
            try:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                while True:
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:
                        try:
                            item = await agen.athrow(exc)
                        except StopAsyncIteration:
                            return
                    else:
                        try:
                            item = await agen.asend(sent)
                        except StopAsyncIteration:
                            return
            except BaseException as exc:
                failed = not _is_cancellation(type(exc))
                raise
            finally:
                finish(t0, failed)

        return timed_async_generator

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def timed_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            t0 = clock()
            failed = False
            try:
                return (yield from func(*args, **kwargs))
            except BaseException as exc:
                failed = not _is_cancellation(type(exc))
                raise
            finally:
                finish(t0, failed)

        return timed_generator

    wrapper = _accel.TimedFunction(func, series, None if reg.native_clock else clock)
    functools.update_wrapper(wrapper, func)
    return wrapper


@overload
def timed(func: F, /) -> F: ...


@overload
def timed(
    name: str | None = None,
    /,
    *,
    labels: Mapping[str, object] | None = None,
    registry: Registry | None = None,
    threshold: float | None = None,
) -> Callable[[F], F]: ...


def timed(
    name_or_func: Any = None,
    /,
    *,
    labels: Mapping[str, object] | None = None,
    registry: Registry | None = None,
    threshold: float | None = None,
) -> Any:
    """Time every call of a function into a series.

    ``@timed`` names the series after the function (``module_qualname``); ``@timed("name",
    labels={...})`` names it. Works on functions, methods, static and class methods, coroutine
    functions, generators and async generators (timed from the first iteration to exhaustion or
    close). An exception is counted in the series' errors (its duration still recorded) and
    re-raised unchanged; cancellation and ``close()`` are not errors.

    :param threshold: seconds; calls slower than this are counted exactly (``Stats.above``).
    """
    if name_or_func is None or isinstance(name_or_func, str):
        name = name_or_func
        if name is not None:
            check_metric_name(name, where="@timed name")

        def decorate(func: F) -> F:
            return _wrap(func, name, labels, registry, threshold)  # type: ignore[no-any-return]

        return decorate
    if isinstance(name_or_func, (staticmethod, classmethod)) or callable(name_or_func):
        return _wrap(name_or_func, None, labels, registry, threshold)
    raise ConfigError(
        f"@timed takes a function or a metric name, got {name_or_func!r}; "
        "write @timed or @timed('name')"
    )


class timer:
    """Time a block: ``with perfsdk.timer("name"):`` or ``async with perfsdk.timer("name"):``.

    One object per use (``with timer(...)`` creates it). After the block, ``elapsed`` holds the
    duration in seconds. An exception escaping the block counts as an error and propagates.
    """

    __slots__ = ("_clock", "_series", "_spt", "_t0", "elapsed")

    def __init__(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        *,
        registry: Registry | None = None,
        threshold: float | None = None,
    ) -> None:
        reg = registry if registry is not None else get_registry()
        self._series = reg.series(name, labels, threshold=threshold)
        self._clock = reg.clock
        self._spt = self._series.seconds_per_tick
        self._t0 = 0
        self.elapsed: float | None = None

    def __enter__(self) -> timer:
        self._t0 = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        t1 = self._clock()
        elapsed = (t1 - self._t0) * self._spt
        self.elapsed = elapsed
        if _is_cancellation(exc_type):
            self._series.record(elapsed, t1)
        else:
            self._series.record_error(elapsed, t1)

    async def __aenter__(self) -> timer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def counter(
    name: str,
    labels: Mapping[str, object] | None = None,
    *,
    help: str = "",
    registry: Registry | None = None,
) -> _accel.Counter:
    """The counter ``name{labels}``: ``perfsdk.counter("jobs_total").inc()``."""
    return (registry if registry is not None else get_registry()).counter(name, labels, help=help)


def gauge(
    name: str,
    labels: Mapping[str, object] | None = None,
    *,
    help: str = "",
    registry: Registry | None = None,
) -> _accel.Gauge:
    """The gauge ``name{labels}``: ``perfsdk.gauge("queue_depth").set(12)``."""
    return (registry if registry is not None else get_registry()).gauge(name, labels, help=help)
