"""@timed on every kind of callable, timer, counter, gauge, and the errors people see."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import threading

import pytest

import perfsdk
from perfsdk import ConfigError
from tests.conftest import FakeClock


def only(reg: perfsdk.Registry, name: str) -> perfsdk.SeriesSnapshot:
    snap = reg.snapshot()
    found = snap.by_name(name)
    assert len(found) == 1, [s.name for s in snap.series]
    return found[0]


def test_plain_function_keeps_identity(registry: perfsdk.Registry, clock: FakeClock) -> None:
    def work(x: int, *, y: int = 1) -> int:
        """Docstring."""
        clock.advance(0.25)
        return x + y

    timed = perfsdk.timed("work_seconds", registry=registry)(work)
    assert timed(1, y=2) == 3
    assert timed.__name__ == "work"
    assert timed.__doc__ == "Docstring."
    assert timed.__wrapped__ is work
    assert inspect.signature(timed) == inspect.signature(work)
    s = only(registry, "work_seconds")
    assert s.total is not None and s.total.count == 1
    assert s.total.p50 == pytest.approx(0.25, rel=0.01)


def test_bare_decorator_names_series_after_function(registry: perfsdk.Registry) -> None:
    @perfsdk.timed(registry=registry)
    def handler() -> None:
        pass

    handler()
    names = registry.names()
    assert len(names) == 1 and names[0].endswith(
        "test_bare_decorator_names_series_after_function_handler"
    )


def test_default_registry_and_bare_decorator() -> None:
    @perfsdk.timed
    def standalone() -> int:
        return 7

    assert standalone() == 7
    snap = perfsdk.snapshot()
    assert any(
        s.name.endswith("standalone") and s.total and s.total.count >= 1 for s in snap.series
    )


def test_exception_counted_and_reraised_unchanged(registry: perfsdk.Registry) -> None:
    class Boom(Exception):
        pass

    err = Boom("x")

    @perfsdk.timed("boom_seconds", registry=registry)
    def boom() -> None:
        raise err

    with pytest.raises(Boom) as info:
        boom()
    assert info.value is err
    s = only(registry, "boom_seconds")
    assert s.total is not None and s.total.errors == 1 and s.total.count == 1


def test_methods_static_and_class_methods(registry: perfsdk.Registry) -> None:
    class Service:
        factor = 3

        @perfsdk.timed("svc_method", registry=registry)
        def method(self, x: int) -> int:
            return x * self.factor

        @perfsdk.timed("svc_static", registry=registry)
        @staticmethod
        def static(x: int) -> int:
            return x + 1

        @perfsdk.timed("svc_class", registry=registry)
        @classmethod
        def klass(cls, x: int) -> int:
            return x * cls.factor

    svc = Service()
    assert svc.method(2) == 6
    assert Service.method(svc, 2) == 6
    bound = svc.method
    assert bound(3) == 9
    assert Service.static(1) == 2 and svc.static(1) == 2
    assert Service.klass(2) == 6 and svc.klass(2) == 6
    assert only(registry, "svc_method").total.count == 3  # type: ignore[union-attr]
    assert only(registry, "svc_static").total.count == 2  # type: ignore[union-attr]
    assert only(registry, "svc_class").total.count == 2  # type: ignore[union-attr]


def test_async_function(registry: perfsdk.Registry, clock: FakeClock) -> None:
    @perfsdk.timed("coro_seconds", registry=registry)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        clock.advance(0.5)
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(4)) == 4
    s = only(registry, "coro_seconds")
    assert s.total is not None and s.total.count == 1
    assert s.total.max == pytest.approx(0.5)


def test_async_cancellation_is_not_an_error(registry: perfsdk.Registry) -> None:
    @perfsdk.timed("slow_seconds", registry=registry)
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = only(registry, "slow_seconds")
    assert s.total is not None and s.total.count == 1 and s.total.errors == 0


def test_generator_timed_to_exhaustion_or_close(
    registry: perfsdk.Registry, clock: FakeClock
) -> None:
    @perfsdk.timed("gen_seconds", registry=registry)
    def gen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            clock.advance(1.0)
            got = yield i
            if got:
                yield got

    assert inspect.isgeneratorfunction(gen)
    assert list(gen(3)) == [0, 1, 2]
    g = gen(5)
    assert next(g) == 0
    assert g.send("hello") == "hello"
    g.close()
    s = only(registry, "gen_seconds")
    assert s.total is not None and s.total.count == 2 and s.total.errors == 0
    assert s.total.max == pytest.approx(3.0, rel=0.01)

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("bad")

    fg = perfsdk.timed("gen_fail_seconds", registry=registry)(failing)
    with pytest.raises(ValueError, match="bad"):
        list(fg())
    assert only(registry, "gen_fail_seconds").total.errors == 1  # type: ignore[union-attr]


def test_async_generator(registry: perfsdk.Registry, clock: FakeClock) -> None:
    @perfsdk.timed("agen_seconds", registry=registry)
    async def agen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            clock.advance(0.1)
            yield i

    assert inspect.isasyncgenfunction(agen)

    async def main() -> list[int]:
        out = [x async for x in agen(4)]
        partial = agen(10)
        await partial.__anext__()
        await partial.aclose()
        return out

    assert asyncio.run(main()) == [0, 1, 2, 3]
    s = only(registry, "agen_seconds")
    assert s.total is not None and s.total.count == 2 and s.total.errors == 0
    assert s.total.max == pytest.approx(0.4, rel=0.01)


def test_timer_context_managers(registry: perfsdk.Registry, clock: FakeClock) -> None:
    with perfsdk.timer("block_seconds", {"step": "parse"}, registry=registry) as t:
        clock.advance(0.125)
    assert t.elapsed == pytest.approx(0.125)

    async def main() -> None:
        async with perfsdk.timer("block_seconds", {"step": "parse"}, registry=registry):
            clock.advance(0.25)

    asyncio.run(main())
    with (
        pytest.raises(KeyError),
        perfsdk.timer("block_seconds", {"step": "parse"}, registry=registry),
    ):
        raise KeyError("x")
    s = registry.snapshot().get("block_seconds", step="parse")
    assert s is not None and s.total is not None
    assert s.total.count == 3 and s.total.errors == 1
    assert s.total.max == pytest.approx(0.25, rel=0.01)


def test_counter_and_gauge(registry: perfsdk.Registry) -> None:
    c = perfsdk.counter("jobs_total", {"queue": "a"}, registry=registry)
    c.inc()
    c.inc(2.5)
    assert perfsdk.counter("jobs_total", {"queue": "a"}, registry=registry) is c
    with pytest.raises(ValueError, match="-1"):
        c.inc(-1)
    g = perfsdk.gauge("queue_depth", registry=registry)
    g.set(10)
    g.inc()
    g.dec(3)
    snap = registry.snapshot()
    assert snap.get("jobs_total", queue="a").value == 3.5  # type: ignore[union-attr]
    assert snap.get("queue_depth").value == 8  # type: ignore[union-attr]


def test_snapshot_records_are_immutable(registry: perfsdk.Registry, clock: FakeClock) -> None:
    s = registry.series("imm_seconds")
    s.record(0.1, clock())
    snap = registry.snapshot()
    rec = snap.series[0]
    with pytest.raises((AttributeError, TypeError)):
        rec.name = "x"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        rec.total.count = 5  # type: ignore[misc,union-attr]
    d = snap.to_dict()
    assert d["series"][0]["window"]["count"] == 1
    fields = set(d["series"][0]["window"])
    assert {
        "count",
        "errors",
        "sum",
        "min",
        "max",
        "mean",
        "rate",
        "p50",
        "p90",
        "p95",
        "p99",
        "p999",
    } <= fields


def test_snapshot_window_and_rate(registry: perfsdk.Registry, clock: FakeClock) -> None:
    s = registry.series("rate_seconds")
    for _ in range(30):
        clock.advance(1.0)
        for _ in range(10):
            s.record(0.01, clock())
    rec = registry.snapshot().get("rate_seconds")
    assert rec is not None and rec.window is not None and rec.total is not None
    assert rec.window.count == 300
    assert rec.window.rate == pytest.approx(10.0, rel=0.05)
    clock.advance(120)
    rec = registry.snapshot().get("rate_seconds")
    assert rec.window.count == 0 and rec.total.count == 300  # type: ignore[union-attr]


def test_threshold_counts_exactly(registry: perfsdk.Registry, clock: FakeClock) -> None:
    @perfsdk.timed("slo_seconds", registry=registry, threshold=0.1)
    def call(d: float) -> None:
        clock.advance(d)

    for i in range(200):
        call(0.2 if i % 4 == 0 else 0.05)
    rec = registry.snapshot().get("slo_seconds")
    assert rec is not None and rec.window is not None
    assert rec.window.above == 50 and rec.total.above == 50  # type: ignore[union-attr]


def test_many_threads_lose_no_observation() -> None:
    reg = perfsdk.Registry()

    @perfsdk.timed("mt_seconds", registry=reg)
    def f() -> None:
        pass

    n, per = 8, 20_000

    def run() -> None:
        for _ in range(per):
            f()

    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rec = reg.snapshot().get("mt_seconds")
    assert rec is not None and rec.total is not None and rec.total.count == n * per


def test_cardinality_cap_bounds_series(
    registry: perfsdk.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    reg = perfsdk.Registry(max_series_per_name=5, clock=registry.clock)
    for i in range(20):
        with perfsdk.timer("user_seconds", {"user": str(i)}, registry=reg):
            pass
    snap = reg.snapshot()
    series = snap.by_name("user_seconds")
    assert len(series) == 6
    overflow = snap.get("user_seconds", perfsdk_overflow="true")
    assert overflow is not None and overflow.total is not None and overflow.total.count == 15
    assert reg.overflowed["user_seconds"] == 15
    assert sum(1 for r in caplog.records if "max_series_per_name" in r.getMessage()) == 1


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda r: perfsdk.timed("bad name", registry=r), "'bad name'"),
        (lambda r: perfsdk.timer("ok_name", {"bad-label": "x"}, registry=r), "'bad-label'"),
        (lambda r: perfsdk.timer("ok_name", {"__reserved": "x"}, registry=r), "'__reserved'"),
        (lambda r: perfsdk.timer("9starts_with_digit", registry=r), "'9starts_with_digit'"),
        (lambda r: perfsdk.Registry(alpha=1.5), "alpha=1.5"),
        (lambda r: perfsdk.Registry(alpha=0), "alpha=0"),
        (lambda r: perfsdk.Registry(window_seconds=-5), "window_seconds=-5"),
        (lambda r: perfsdk.timed(42), "42"),
    ],
)
def test_bad_input_is_a_clear_error(registry: perfsdk.Registry, call, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        call(registry)
    assert needle in str(info.value)


def test_kind_conflict(registry: perfsdk.Registry) -> None:
    perfsdk.counter("thing", registry=registry)
    with pytest.raises(ConfigError, match="already registered as a counter"):
        perfsdk.timer("thing", registry=registry)


def test_nan_dropped_and_counted_in_snapshot(registry: perfsdk.Registry, clock: FakeClock) -> None:
    s = registry.series("n_seconds")
    s.record(float("nan"), clock())
    s.record(0.5, clock())
    rec = registry.snapshot().get("n_seconds")
    assert rec is not None and rec.dropped == 1 and rec.total.count == 1  # type: ignore[union-attr]


def test_timed_function_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(module_level_timed)) is module_level_timed
    assert module_level_timed(2) == 3


@perfsdk.timed("module_level_seconds", registry=perfsdk.Registry())
def module_level_timed(x: int) -> int:
    return x + 1


def test_wrapper_buffer_is_invisible_across_slices(
    registry: perfsdk.Registry, clock: FakeClock
) -> None:
    """Calls buffered by the native wrapper land in the slice they were made in, whatever reads."""

    @perfsdk.timed("buf_seconds", registry=registry)
    def call(d: float) -> None:
        clock.advance(d)

    for _ in range(100):  # more than one buffer's worth, inside one slice
        call(0.001)
    rec = registry.snapshot().get("buf_seconds")
    assert rec is not None and rec.window is not None and rec.window.count == 100
    for _ in range(30):
        call(0.001)
    clock.advance(61)  # the slice holding the 30 leaves the window
    call(0.002)
    rec = registry.snapshot().get("buf_seconds")
    assert rec is not None and rec.window is not None and rec.total is not None
    assert rec.window.count == 1 and rec.window.max == pytest.approx(0.002)
    assert rec.total.count == 131
    assert rec.total.sum == pytest.approx(0.130 + 0.002)


def _fresh_record(series: object, now: int, sketches: bool) -> tuple[object, ...]:
    """A timer's record fields computed from scratch with window() and totals()."""
    import math

    from perfsdk.records import QUANTILES, Stats

    def stats(sk: object, errors: int, above: int, seconds: float) -> Stats:
        count = sk.count  # type: ignore[attr-defined]
        qs = sk.quantiles([q for _, q in QUANTILES])  # type: ignore[attr-defined]
        return Stats(
            count,
            errors,
            sk.sum,  # type: ignore[attr-defined]
            sk.min,  # type: ignore[attr-defined]
            sk.max,  # type: ignore[attr-defined]
            sk.sum / count if count else math.nan,  # type: ignore[attr-defined]
            count / seconds if seconds > 0 else 0.0,
            *qs,
            seconds,
            above if series.threshold is not None else None,  # type: ignore[attr-defined]
        )

    w, t = series.window(now), series.totals(now)  # type: ignore[attr-defined]
    return (
        stats(*w),
        stats(*t),
        series.dropped,  # type: ignore[attr-defined]
        w[0].to_bytes() if sketches else None,
        t[0].to_bytes() if sketches else None,
    )


def _fields(rec: perfsdk.SeriesSnapshot) -> tuple[object, ...]:
    return (rec.window, rec.total, rec.dropped, rec.window_sketch, rec.total_sketch)


def _same_stats(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    # Stats with NaN quantiles compare unequal to themselves: compare their dicts, NaN as None
    def norm(x: object) -> object:
        return x.to_dict() if isinstance(x, perfsdk.Stats) else x

    return [norm(x) for x in a] == [norm(x) for x in b]


def test_unchanged_timer_is_reused_with_spans_brought_to_now(
    registry: perfsdk.Registry, clock: FakeClock
) -> None:
    s = registry.series("reuse_seconds", threshold=0.05)
    registry.counter("reuse_total").inc()
    for i in range(50):
        s.record(0.001 * (i + 1), clock())
    s.record(float("nan"), clock())
    clock.advance(1.0)
    first = registry.snapshot(include_sketches=True).get("reuse_seconds")
    assert first is not None

    def check(sketches: bool) -> perfsdk.SeriesSnapshot:
        rec = registry.snapshot(include_sketches=sketches).get("reuse_seconds")
        assert rec is not None
        assert _same_stats(_fields(rec), _fresh_record(s, clock(), sketches))
        return rec

    clock.advance(2.5)  # same slice: reused, only the spans and rates move
    again = check(True)
    assert again.total_sketch is first.total_sketch  # not serialised again
    assert again.total.seconds > first.total.seconds  # type: ignore[union-attr]
    assert again.window.rate < first.window.rate  # type: ignore[union-attr]
    check(False)  # a snapshot without sketches from the same numbers
    clock.advance(20)  # the window moved a slice: recomputed
    check(True)
    s.record(0.2, clock())  # new data: recomputed
    check(True)
    clock.advance(100)  # everything left the window
    rec = check(False)
    assert rec.window.count == 0 and rec.total.count == 51  # type: ignore[union-attr]
    rec = check(True)  # asked for sketches after a snapshot without: recomputed with them
    assert rec.total_sketch is not None
    registry.reset_data()  # a forked child starts clean: nothing stale is reused
    rec = check(True)
    assert rec.total.count == 0  # type: ignore[union-attr]
    s.record(0.3, clock())
    assert check(True).total.count == 1  # type: ignore[union-attr]


def test_snapshot_order_follows_new_series(registry: perfsdk.Registry) -> None:
    registry.series("b_seconds")
    assert [r.name for r in registry.snapshot().series] == ["b_seconds"]
    registry.counter("a_total")
    registry.series("c_seconds", {"z": "1"})
    registry.series("c_seconds", {"a": "1"})
    names = [(r.name, r.labels) for r in registry.snapshot().series]
    assert names == sorted(names)
    assert [e[:2] for e in registry.entries()] == names
    registry.clear()
    assert registry.snapshot().series == ()


def test_fast_record_constructors_build_real_frozen_records() -> None:
    import dataclasses

    from perfsdk.records import SeriesSnapshot, Stats, make_series_snapshot, make_stats

    values = (3, 1, 0.6, 0.1, 0.3, 0.2, 1.5, 0.2, 0.3, 0.3, 0.3, 0.3, 2.0, None)
    fast, slow = make_stats(*values), Stats(*values)
    assert type(fast) is Stats and fast == slow and hash(fast) == hash(slow)
    assert repr(fast) == repr(slow) and pickle.loads(pickle.dumps(fast)) == slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.count = 4  # type: ignore[misc]
    rec = ("x", (("a", "1"),), "timer", "", fast, fast, None, 0, None, b"w", b"t")
    assert make_series_snapshot(*rec) == SeriesSnapshot(*rec)
    with pytest.raises(TypeError):
        make_stats(*values[:-1])


def test_record_maker(impl: object) -> None:
    import dataclasses

    from perfsdk.records import Stats

    names = [f.name for f in dataclasses.fields(Stats)]
    make = impl.RecordMaker(Stats, names)  # type: ignore[attr-defined]
    values = (1, 0, 0.5, 0.5, 0.5, 0.5, 2.0, *([0.5] * 5), 0.5, 1)
    assert make(*values) == Stats(*values) and type(make(*values)) is Stats
    with pytest.raises(TypeError, match="takes 14 values, got 2"):
        make(1, 2)
    with pytest.raises(TypeError, match="not a slot"):
        impl.RecordMaker(Stats, ["count", "quantile_field"])  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="needs a class"):
        impl.RecordMaker(object(), [])  # type: ignore[attr-defined]
