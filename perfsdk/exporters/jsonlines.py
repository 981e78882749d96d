"""JSON-lines exporter: one JSON object per snapshot, appended to a file.

Each line is ``Snapshot.to_dict()`` (no sketches) as compact JSON, with every non-finite number
(NaN, ±infinity) written as ``null``, so any JSON reader takes it. The file is opened for
appending without buffering and each line goes out in a single ``write(2)``: several processes may
share one file without interleaving lines, and a line is on disk (in the page cache) as soon as
``export`` returns.

A write that fails (disk full, permissions, a vanished folder) raises from :meth:`export`, for
the agent to count and back off; the handle is dropped and the file reopened on the next export.
The path is reopened too when it no longer names the open file (moved away by ``logrotate``).
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from perfsdk.records import Snapshot

__all__ = ["JsonLinesExporter", "snapshot_line"]


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def snapshot_line(snapshot: Snapshot) -> bytes:
    """The JSON line (UTF-8, ending in ``\\n``) written for ``snapshot``."""
    text = json.dumps(
        _finite(snapshot.to_dict()), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return (text + "\n").encode("utf-8")


class JsonLinesExporter:
    """Appends one JSON object per snapshot to ``path`` (created with its folders if missing).

    :param path: the file to append to.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        #: Lines written since creation.
        self.lines = 0
        self._file: Any = None  # an unbuffered binary file (io.FileIO) while open
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def export(self, snapshot: Snapshot) -> None:
        """Append ``snapshot`` as one line. Raises ``OSError`` when the write fails."""
        line = snapshot_line(snapshot)
        with self._lock:
            try:
                self._write(line)
            except BaseException:
                self._drop()
                raise
            self.lines += 1

    def _write(self, line: bytes) -> None:
        if self._file is not None and self._moved():
            self._drop()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open)
            st = os.fstat(self._file.fileno())
            self._inode = (st.st_dev, st.st_ino)
        view = memoryview(line)
        while view:
            written = self._file.write(view)
            view = view[written:]

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def _drop(self) -> None:
        f, self._file, self._inode = self._file, None, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the file (idempotent; a later export reopens it)."""
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        return f"<JsonLinesExporter {str(self.path)!r}>"
