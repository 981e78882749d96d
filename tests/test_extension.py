"""The compiled extension is what the first test run really uses."""

from __future__ import annotations

import os
import subprocess
import sys

import perfsdk
from perfsdk import _accel


def test_expected_implementation_is_live() -> None:
    if os.environ.get("PERFSDK_EXPECT_COMPILED") == "1":
        assert _accel.IMPLEMENTATION == "compiled"
        import perfsdk._speedups as native

        assert native.__file__.endswith(".so")
        assert _accel.Sketch is native.Sketch
        assert _accel.TimedFunction is native.TimedFunction
    if os.environ.get("PERFSDK_NO_EXTENSIONS") == "1":
        assert _accel.IMPLEMENTATION == "python"
        assert _accel.Sketch.__module__ == "perfsdk._speedups_py"
    assert perfsdk.implementation() == _accel.IMPLEMENTATION


def test_timed_function_type_matches_implementation() -> None:
    reg = perfsdk.Registry()

    @perfsdk.timed(registry=reg)
    def f() -> int:
        return 1

    assert type(f) is _accel.TimedFunction


def test_no_extensions_env_var_forces_twin() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import perfsdk; print(perfsdk.implementation())"],
        env={**os.environ, "PERFSDK_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "python"


def test_import_is_light() -> None:
    code = (
        "import sys, perfsdk; "
        "print(sorted(m for m in ('numba', 'numpy', 'pluggy', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
