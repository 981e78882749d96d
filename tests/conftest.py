"""Shared fixtures: both twins of the hot path, and registries with an injected clock."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

import perfsdk

NO_EXT = os.environ.get("PERFSDK_NO_EXTENSIONS", "") not in ("", "0")


def _impls() -> list[str]:
    return ["py"] if NO_EXT else ["c", "py"]


@pytest.fixture(params=_impls(), scope="session")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled module ("c") and the pure-Python twin ("py"), as yarl tests both."""
    if request.param == "c":
        return importlib.import_module("perfsdk._speedups")
    return importlib.import_module("perfsdk._speedups_py")


class FakeClock:
    """Integer nanoseconds that only move when told to."""

    def __init__(self, start: int = 1_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> perfsdk.Registry:
    return perfsdk.Registry(clock=clock, ticks_per_second=1e9)
