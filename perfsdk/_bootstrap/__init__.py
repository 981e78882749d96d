"""The directory ``perfsdk run`` puts first on ``PYTHONPATH``.

It holds ``sitecustomize.py``, which Python's :mod:`site` imports at start-up: it starts the agent
inside the target program and then chains to the program's own ``sitecustomize``, if any. This
``__init__`` only makes the folder a package, so it ships in wheels; nothing imports it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BOOTSTRAP_DIR"]

#: The folder to prepend to ``PYTHONPATH``.
BOOTSTRAP_DIR = str(Path(__file__).resolve().parent)
