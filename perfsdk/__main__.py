"""``python -m perfsdk``: the ``perfsdk`` command line."""

from __future__ import annotations

from perfsdk.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
