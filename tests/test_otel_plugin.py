"""The perfsdk-otel plugin's tests, run as part of the main suite.

The tests live with the plugin (``plugins/perfsdk-otel/tests/test_otel.py``); this module imports
them rather than holding a copy, so the two cannot drift. Skipped when the ``perfsdk-otel``
distribution is not installed (``make test`` installs every ``plugins/*/`` folder).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

import pytest

PLUGIN_TESTS = Path(__file__).resolve().parents[1] / "plugins" / "perfsdk-otel" / "tests"

try:
    importlib.metadata.distribution("perfsdk-otel")
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        "distribution perfsdk-otel is not installed; "
        "`pip install -e plugins/perfsdk-otel` (make test does this)",
        allow_module_level=True,
    )

# Imported by name with the folder on sys.path, so pytest's assertion rewriting applies to it.
sys.path.insert(0, str(PLUGIN_TESTS))
try:
    _plugin_tests = importlib.import_module("test_otel")
finally:
    sys.path.remove(str(PLUGIN_TESTS))

# The tests and their fixtures (the receiver, the autouse environment cleanup) become this
# module's, which is where pytest looks for them.
globals().update(
    {name: value for name, value in vars(_plugin_tests).items() if not name.startswith("__")}
)
