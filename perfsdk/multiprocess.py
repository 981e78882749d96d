"""Many processes: per-process state files, and the exact merged view of all of them.

Pre-fork servers (gunicorn, uWSGI) and ``multiprocessing`` pools run one registry per process.
Each process writes its state to ``<dir>/<pid>.psnap`` (:class:`MultiprocessWriter`, an exporter
the agent calls every interval); any process (a worker, or the parent) computes the merged view
with :func:`merged_snapshot`:

- **Timers** are merged as sketches, never by averaging percentiles: ``total`` is the merge of
  every process' totals, living or exited; ``window`` is the merge of the living processes'
  windows, each as of its last export. Counts, errors, ``above`` and ``dropped`` are sums; the
  percentiles, min, max, sum and mean come from the merged sketch, so they are exactly those of
  one sketch fed every observation. ``total.seconds`` runs from the earliest creation of the
  series in any process; ``window.seconds`` is the longest span covered by a living process'
  window; rates are the merged count over those spans (the aggregate throughput).
- **Counters** are summed over living and exited processes, so they never go down when a worker
  exits or is replaced.
- **Gauges** of exited processes are dropped. Those of living processes are reported per
  process, with a ``pid`` label (``gauges="pid"``, the default, prometheus_client's ``liveall``),
  or combined: ``"sum"``, ``"min"``, ``"max"`` or ``"mostrecent"``.

**The archive.** A process that has exited is read once, ever: the first :func:`merged_snapshot`
that finds it dead folds its totals (sketches merged, counters summed) into ``archive.psnap``,
under an exclusive ``flock`` of ``<dir>/.lock``, and deletes its file. A scrape therefore reads the
archive plus one file per living process: its cost grows with living processes and series, not
with the workers that have come and gone. Readers take the lock shared, so a scrape never sees a
fold half done; writers never take it (each file is written to a temporary name and
``os.replace``-d, so a reader sees the old state or the new one, never a torn one).

**Exited or not.** A file records its process' identity: the boot id and the process' start time
(``/proc/<pid>/stat``; ``psutil`` elsewhere, when installed). A pid whose process is gone, is a
zombie, or now belongs to another process (pid reuse) is dead. A new process that finds a
stale file under its own pid folds it before writing its own.

**After fork.** A child has a new pid, so the writer writes a new file on its next export (it asks
``os.getpid()`` every time). The child must start from empty series, or it would report its
parent's observations a second time: call ``registry.reset_data()`` in the child (the agent does
so from ``os.register_at_fork``). The directory must be local to one host and pid namespace, and
should be emptied (:func:`clear_directory`) when the server starts, as prometheus_client asks of
``PROMETHEUS_MULTIPROC_DIR``; otherwise totals carry over from the previous run.

File format: ``b"PSNP"``, a version byte, a 4-byte little-endian header length, a JSON header
(positional lists: parsed in C by :mod:`json`), then the sketches' bytes back to back, which
the header points into by offset and length. See ``docs/multiprocess.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import _accel
from .errors import ConfigError
from .naming import Labels
from .records import QUANTILES, SeriesSnapshot, Snapshot, Stats

__all__ = [
    "ARCHIVE_NAME",
    "GAUGE_MODES",
    "LOCK_NAME",
    "SUFFIX",
    "MultiprocessWriter",
    "ProcessState",
    "clear_directory",
    "decode_state",
    "encode_state",
    "merged_snapshot",
    "process_alive",
    "process_identity",
]

log = logging.getLogger("perfsdk.multiprocess")

#: Suffix of every state file; ``<pid>.psnap`` per process.
SUFFIX = ".psnap"
#: The file that holds the folded totals of every exited process.
ARCHIVE_NAME = "archive" + SUFFIX
#: The ``flock`` file: shared by readers, exclusive while folding.
LOCK_NAME = ".lock"
#: What :func:`merged_snapshot` can do with the gauges of living processes.
GAUGE_MODES = ("pid", "sum", "min", "max", "mostrecent")

_MAGIC = b"PSNP"
_VERSION = 1
_HEAD = struct.Struct("<4sBI")
_QS = [q for _, q in QUANTILES]


# --- process identity ---------------------------------------------------------------------------


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _have_proc() -> bool:
    return os.path.isdir("/proc/self")


def process_identity(pid: int) -> str | None:
    """An identity of the process ``pid`` that a later process with the same pid will not share.

    :returns: ``"<boot id>:<start time>"`` on Linux (psutil's create time elsewhere, when
        installed); ``""`` when no such process runs (or it is a zombie); ``None`` when it cannot
        be told.
    """
    if _have_proc():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return "" if not _exists(pid) else None  # hidden by hidepid: alive, identity unknown
        except OSError:
            return None
        # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            return ""
        return f"{_boot_id()}:{fields[19].decode()}"
    try:
        import psutil
    except ImportError:
        return None if _exists(pid) else ""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return ""
        return f"psutil:{proc.create_time()!r}"
    except psutil.NoSuchProcess:
        return ""
    except psutil.Error:
        return None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        pass
    return True


def process_alive(pid: int, identity: str) -> bool:
    """True while the process that wrote ``identity`` under ``pid`` still runs (not a zombie)."""
    if pid <= 0:
        return False
    current = process_identity(pid)
    if current is None:
        return True
    if current == "":
        return False
    return not identity or current == identity


_own: tuple[int, str] = (0, "")


def _own_identity() -> tuple[int, str]:
    global _own
    pid = os.getpid()
    if _own[0] != pid:
        _own = (pid, process_identity(pid) or "")
    return _own


# --- the file format ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessState:
    """One decoded state file.

    ``series`` rows are positional lists, as stored: ``[name, flat labels (k1, v1, k2, v2...),
    kind, help, dropped, threshold, value, total, window]``; ``total`` is ``[errors, above,
    created (Unix time), offset, length]`` and ``window`` is ``[errors, above, seconds, offset,
    length]``, offsets into ``blob`` (both ``None`` unless a timer; the archive has no windows).
    ``folded`` (archive only) names the ``pid:identity`` folded by the last fold, so a fold
    interrupted before it deleted their files does not count them twice.
    """

    pid: int
    identity: str
    taken_at: float
    implementation: str
    series: list[list[Any]]
    blob: bytes
    folded: tuple[str, ...] = ()

    def sketch(self, offset: int, length: int) -> _accel.Sketch:
        return _accel.Sketch.from_bytes(self.blob[offset : offset + length])


def encode_state(
    snapshot: Snapshot, *, pid: int, identity: str, folded: Sequence[str] = ()
) -> bytes:
    """The bytes of one state file for ``snapshot`` (taken with ``include_sketches=True``).

    :raises ValueError: a timer of ``snapshot`` carries no sketches.
    """
    blob = bytearray()
    rows: list[list[Any]] = []
    for s in snapshot.series:
        flat = [part for pair in s.labels for part in pair]
        if s.kind != "timer":
            rows.append([s.name, flat, s.kind, s.help, 0, None, s.value, None, None])
            continue
        if s.total is None or s.total_sketch is None:
            raise ValueError(
                f"timer {s.name!r} carries no sketches: the multiprocess writer needs "
                "registry.snapshot(include_sketches=True)"
            )
        total = [
            s.total.errors,
            s.total.above,
            snapshot.taken_at - s.total.seconds,
            len(blob),
            len(s.total_sketch),
        ]
        blob += s.total_sketch
        window = None
        if s.window is not None and s.window_sketch is not None:
            window = [s.window.errors, s.window.above, s.window.seconds, len(blob)]
            window.append(len(s.window_sketch))
            blob += s.window_sketch
        rows.append([s.name, flat, "timer", s.help, s.dropped, s.threshold, None, total, window])
    header = {
        "pid": pid,
        "id": identity,
        "t": snapshot.taken_at,
        "impl": snapshot.implementation,
        "folded": list(folded),
        "s": rows,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(_MAGIC, _VERSION, len(head)) + head + bytes(blob)


def decode_state(data: bytes) -> ProcessState:
    """Parse the bytes of one state file.

    :raises ValueError: not a state file, or one of a format version this perfsdk cannot read.
    """
    if len(data) < _HEAD.size:
        raise ValueError("not a perfsdk state file (too short)")
    magic, version, size = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("not a perfsdk state file (bad magic)")
    if version != _VERSION:
        raise ValueError(f"state file format version {version}; this perfsdk reads {_VERSION}")
    end = _HEAD.size + size
    header = json.loads(data[_HEAD.size : end])
    return ProcessState(
        pid=int(header["pid"]),
        identity=str(header["id"]),
        taken_at=float(header["t"]),
        implementation=str(header["impl"]),
        series=header["s"],
        blob=data[end:],
        folded=tuple(header.get("folded", ())),
    )


_StatKey = tuple[int, int, int]


def _read_keyed(path: str) -> tuple[ProcessState, _StatKey] | None:
    """The state in ``path`` and the (inode, mtime, size) it was read at; None if it vanished
    (folded by another reader) or is unreadable."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return decode_state(data), (st.st_ino, st.st_mtime_ns, st.st_size)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        _warn_once(path, f"perfsdk: ignoring unreadable state file {path}: {exc}")
        return None


def _read(path: str) -> ProcessState | None:
    got = _read_keyed(path)
    return None if got is None else got[0]


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def _write_atomic(directory: str, name: str, data: bytes) -> None:
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: str, how: int) -> Iterator[None]:
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


# --- writing ------------------------------------------------------------------------------------


class MultiprocessWriter:
    """Exporter: writes this process' state to ``<directory>/<pid>.psnap`` at every export.

    The pid is read at every export, so a forked child writes its own file. On its first export
    in a process, it folds a stale file left under the same pid by an exited process (pid reuse)
    into the archive instead of overwriting it. ``close()`` leaves the file: its totals are folded
    into the archive once the process has exited.
    """

    name = "multiprocess"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        if not self.directory:
            raise ConfigError("multiprocess_dir is empty; name a directory for the state files")
        os.makedirs(self.directory, exist_ok=True)
        self._claimed = 0
        self._warned = False

    @property
    def path(self) -> str:
        """This process' state file."""
        return os.path.join(self.directory, f"{os.getpid()}{SUFFIX}")

    def export(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` (taken with ``include_sketches=True``) as this process' state."""
        pid, identity = _own_identity()
        data = encode_state(snapshot, pid=pid, identity=identity)
        name = f"{pid}{SUFFIX}"
        if self._claimed != pid:
            _fold_stale_file(self.directory, pid, identity)
            self._claimed = pid
        elif not self._warned and not os.path.exists(os.path.join(self.directory, name)):
            # Another process took this one for exited and folded its totals: they will be
            # counted twice. The directory is shared across hosts or pid namespaces?
            self._warned = True
            log.warning(
                "perfsdk: %s was removed while process %d is alive; its totals may now be "
                "counted twice. Give each host or container its own multiprocess_dir",
                os.path.join(self.directory, name),
                pid,
            )
        _write_atomic(self.directory, name, data)

    def close(self) -> None:
        """Nothing to release; the state file stays for the archive."""


def _fold_stale_file(directory: str, pid: int, identity: str) -> None:
    path = os.path.join(directory, f"{pid}{SUFFIX}")
    if not os.path.exists(path):
        return
    with _locked(directory, fcntl.LOCK_EX):
        state = _read(path)
        if state is not None and state.identity != identity:
            _fold(directory, [(path, state)])


def clear_directory(directory: str | os.PathLike[str]) -> None:
    """Delete every state file and the archive (call it when the server starts, before forking)."""
    d = os.fspath(directory)
    if not os.path.isdir(d):
        return
    with _locked(d, fcntl.LOCK_EX):
        for entry in os.scandir(d):
            if entry.name.endswith(SUFFIX) or entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    _archive_cache.pop(os.path.join(d, ARCHIVE_NAME), None)


# --- folding exited processes -------------------------------------------------------------------

_archive_cache: dict[str, tuple[tuple[int, int, int], ProcessState]] = {}
_EMPTY = ProcessState(0, "", 0.0, "", [], b"")


def _read_archive(directory: str) -> ProcessState:
    """The archive, parsed once per version of the file (cached by inode, mtime and size)."""
    path = os.path.join(directory, ARCHIVE_NAME)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _EMPTY
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _archive_cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    state = _read(path)
    if state is None:
        return _EMPTY
    _archive_cache[path] = (key, state)
    return state


def _fold(directory: str, dead: list[tuple[str, ProcessState]]) -> None:
    """Fold the totals of exited processes into the archive, then delete their files.

    Call with the exclusive lock held.
    """
    archive = _read_archive(directory)
    merger = _Merger(archive.implementation or _accel.IMPLEMENTATION)
    merger.add_archive(archive)
    previously = set(archive.folded)
    folded: list[str] = []
    for _path, state in dead:
        ident = f"{state.pid}:{state.identity}"
        if ident not in previously:
            merger.add_totals(state)
        folded.append(ident)
    _write_atomic(directory, ARCHIVE_NAME, merger.archive_bytes(folded))
    for path, _state in dead:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _remove_orphan_temporaries(directory)


def _remove_orphan_temporaries(directory: str) -> None:
    """Delete temporary files left by writers killed between writing and renaming."""
    with os.scandir(directory) as it:
        names = [e.name for e in it if e.name.endswith(".tmp")]
    for name in names:
        parts = name.split(".")  # .<target>.psnap.<pid>.<thread>.tmp
        if len(parts) >= 4 and parts[-3].isdigit() and process_identity(int(parts[-3])) == "":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


# --- reading ------------------------------------------------------------------------------------


_Dead = dict[str, tuple[ProcessState, _StatKey]]


def _scan(directory: str, known: _Dead | None = None) -> tuple[list[ProcessState], _Dead]:
    """(living processes' states, {path: (state, stat key)} of exited ones).

    ``known``: exited processes found by an earlier scan; their files are not parsed again while
    unchanged (an exited process writes no more).
    """
    own_pid, own_identity = _own_identity()
    live: list[ProcessState] = []
    dead: _Dead = {}
    with os.scandir(directory) as it:
        entries = [e.path for e in it if e.name.endswith(SUFFIX) and e.name != ARCHIVE_NAME]
    for path in entries:
        got = None
        if known is not None and path in known:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                if known[path][1] == (st.st_ino, st.st_mtime_ns, st.st_size):
                    got = known[path]
        if got is None:
            got = _read_keyed(path)
            if got is None:
                continue
        state = got[0]
        if state.pid == own_pid:
            alive = state.identity == own_identity
        else:
            alive = process_alive(state.pid, state.identity)
        if alive:
            live.append(state)
        else:
            dead[path] = got
    return live, dead


def merged_snapshot(
    directory: str | os.PathLike[str],
    *,
    gauges: str = "pid",
    include_sketches: bool = True,
) -> Snapshot:
    """The merged view of every process that wrote to ``directory``, living or exited.

    Exited processes found here are folded into the archive (once, ever) and their files deleted.

    :param gauges: what to do with the gauges of living processes: ``"pid"`` (one series per
        process, labelled ``pid``), ``"sum"``, ``"min"``, ``"max"`` or ``"mostrecent"``.
    :param include_sketches: also serialise the merged sketches into the records (mergeable
        further, e.g. across hosts); the Prometheus endpoint does not need them.
    :raises ConfigError: an unknown ``gauges`` mode.
    """
    if gauges not in GAUGE_MODES:
        raise ConfigError(
            f"gauges={gauges!r} is not a multiprocess gauge mode; use one of "
            + ", ".join(GAUGE_MODES)
        )
    d = os.fspath(directory)
    if not os.path.isdir(d):
        return Snapshot(time.time(), (), _accel.IMPLEMENTATION)
    with _locked(d, fcntl.LOCK_SH):
        live, dead = _scan(d)
        archive = _read_archive(d)
    if dead:
        # Some processes have exited: fold them, then read again, under the exclusive lock.
        with _locked(d, fcntl.LOCK_EX):
            live, dead = _scan(d, dead)
            if dead:
                _fold(d, [(path, state) for path, (state, _key) in dead.items()])
            archive = _read_archive(d)
    merger = _Merger(_accel.IMPLEMENTATION, gauges)
    merger.add_archive(archive)
    for state in live:
        merger.add_live(state)
    return merger.snapshot(include_sketches)


# --- merging ------------------------------------------------------------------------------------


class _Acc:
    """Everything known of one series while merging."""

    __slots__ = (
        "created",
        "dropped",
        "help",
        "kind",
        "labels",
        "name",
        "stamp",
        "tabove",
        "terr",
        "threshold",
        "tsk",
        "value",
        "wabove",
        "werr",
        "wsec",
        "wsk",
    )

    def __init__(self, name: str, labels: Labels, kind: str, help: str) -> None:
        self.name = name
        self.labels = labels
        self.kind = kind
        self.help = help
        self.threshold: float | None = None
        self.dropped = 0
        self.value: float | None = None
        self.stamp = -math.inf
        self.tsk: _accel.Sketch | None = None
        self.terr = 0
        self.tabove: int | None = None
        self.created = math.inf
        self.wsk: _accel.Sketch | None = None
        self.werr = 0
        self.wabove: int | None = None
        self.wsec = 0.0


def _add_above(a: int | None, b: int | None) -> int | None:
    if b is None:
        return a
    return b if a is None else a + b


class _Merger:
    def __init__(self, implementation: str, gauges: str = "pid") -> None:
        self.implementation = implementation
        self.gauges = gauges
        self.accs: dict[tuple[str, Labels], _Acc] = {}

    def _acc(self, row: list[Any], labels: Labels) -> _Acc | None:
        name, kind = row[0], row[2]
        key = (name, labels)
        acc = self.accs.get(key)
        if acc is None:
            acc = self.accs[key] = _Acc(name, labels, kind, row[3])
        elif acc.kind != kind:
            _warn_once(
                f"kind:{name}",
                f"perfsdk: metric {name!r} is a {acc.kind} in one process and a {kind} in "
                f"another; the {kind} is left out of the merged view",
            )
            return None
        elif not acc.help:
            acc.help = row[3]
        return acc

    def _merge_sketch(
        self, into: _accel.Sketch | None, sk: _accel.Sketch, name: str
    ) -> _accel.Sketch:
        if into is None:
            return sk
        try:
            into.merge(sk)
        except ValueError as exc:
            _warn_once(f"alpha:{name}", f"perfsdk: series {name!r} not merged: {exc}")
        return into

    def _add_total(self, acc: _Acc, row: list[Any], state: ProcessState) -> None:
        if row[5] is not None and acc.threshold is None:
            acc.threshold = row[5]
        acc.dropped += row[4]
        errors, above, created, off, length = row[7]
        acc.tsk = self._merge_sketch(acc.tsk, state.sketch(off, length), acc.name)
        acc.terr += errors
        acc.tabove = _add_above(acc.tabove, above)
        acc.created = min(acc.created, created)

    def add_archive(self, state: ProcessState) -> None:
        for row in state.series:
            flat = row[1]
            acc = self._acc(row, tuple(zip(flat[::2], flat[1::2])))
            if acc is None:
                continue
            if acc.kind == "timer":
                self._add_total(acc, row, state)
            elif acc.kind == "counter":
                acc.value = (acc.value or 0.0) + row[6]

    def add_totals(self, state: ProcessState) -> None:
        """An exited process: totals and counters only (its gauges are dropped)."""
        for row in state.series:
            if row[2] != "gauge":
                flat = row[1]
                acc = self._acc(row, tuple(zip(flat[::2], flat[1::2])))
                if acc is None:
                    continue
                if acc.kind == "timer":
                    self._add_total(acc, row, state)
                else:
                    acc.value = (acc.value or 0.0) + row[6]

    def add_live(self, state: ProcessState) -> None:
        for row in state.series:
            flat = row[1]
            kind = row[2]
            if kind == "gauge" and self.gauges == "pid" and "pid" not in flat[::2]:
                flat = [*flat, "pid", str(state.pid)]
                labels: Labels = tuple(sorted(zip(flat[::2], flat[1::2])))
            else:
                labels = tuple(zip(flat[::2], flat[1::2]))
            acc = self._acc(row, labels)
            if acc is None:
                continue
            if kind == "timer":
                self._add_total(acc, row, state)
                window = row[8]
                if window is not None:
                    errors, above, seconds, off, length = window
                    acc.wsk = self._merge_sketch(acc.wsk, state.sketch(off, length), acc.name)
                    acc.werr += errors
                    acc.wabove = _add_above(acc.wabove, above)
                    acc.wsec = max(acc.wsec, seconds)
            elif kind == "counter":
                acc.value = (acc.value or 0.0) + row[6]
            else:
                self._add_gauge(acc, float(row[6]), state.taken_at)

    def _add_gauge(self, acc: _Acc, value: float, stamp: float) -> None:
        mode = self.gauges
        if acc.value is None or mode == "pid":
            acc.value = value
        elif mode == "sum":
            acc.value += value
        elif mode == "min":
            acc.value = min(acc.value, value)
        elif mode == "max":
            acc.value = max(acc.value, value)
        elif stamp >= acc.stamp:  # mostrecent
            acc.value = value
        acc.stamp = max(acc.stamp, stamp)

    def archive_bytes(self, folded: Sequence[str]) -> bytes:
        now = time.time()
        series = []
        for acc in self._sorted():
            if acc.kind == "timer":
                tsk = acc.tsk if acc.tsk is not None else _accel.Sketch()
                seconds = now - acc.created if acc.created < math.inf else 0.0
                total = _stats(tsk, acc.terr, acc.tabove, seconds)
                series.append(
                    SeriesSnapshot(
                        name=acc.name,
                        labels=acc.labels,
                        kind="timer",
                        help=acc.help,
                        total=total,
                        dropped=acc.dropped,
                        threshold=acc.threshold,
                        total_sketch=tsk.to_bytes(),
                    )
                )
            elif acc.kind == "counter":
                series.append(
                    SeriesSnapshot(acc.name, acc.labels, "counter", acc.help, value=acc.value)
                )
        snap = Snapshot(now, tuple(series), self.implementation)
        return encode_state(snap, pid=0, identity="", folded=folded)

    def _sorted(self) -> Iterable[_Acc]:
        return (self.accs[k] for k in sorted(self.accs))

    def snapshot(self, include_sketches: bool) -> Snapshot:
        now = time.time()
        out: list[SeriesSnapshot] = []
        for acc in self._sorted():
            if acc.kind != "timer":
                out.append(
                    SeriesSnapshot(acc.name, acc.labels, acc.kind, acc.help, value=acc.value)
                )
                continue
            tsk = acc.tsk if acc.tsk is not None else _accel.Sketch()
            wsk = acc.wsk if acc.wsk is not None else _accel.Sketch(tsk.alpha)
            has_threshold = acc.threshold is not None
            tabove = (acc.tabove or 0) if has_threshold else None
            wabove = (acc.wabove or 0) if has_threshold else None
            seconds = max(0.0, now - acc.created) if acc.created < math.inf else 0.0
            out.append(
                SeriesSnapshot(
                    name=acc.name,
                    labels=acc.labels,
                    kind="timer",
                    help=acc.help,
                    window=_stats(wsk, acc.werr, wabove, acc.wsec),
                    total=_stats(tsk, acc.terr, tabove, seconds),
                    dropped=acc.dropped,
                    threshold=acc.threshold,
                    window_sketch=wsk.to_bytes() if include_sketches else None,
                    total_sketch=tsk.to_bytes() if include_sketches else None,
                )
            )
        return Snapshot(now, tuple(out), self.implementation)


def _stats(sk: _accel.Sketch, errors: int, above: int | None, seconds: float) -> Stats:
    count = sk.count
    p50, p90, p95, p99, p999 = sk.quantiles(_QS)
    return Stats(
        count=count,
        errors=errors,
        sum=sk.sum,
        min=sk.min,
        max=sk.max,
        mean=sk.sum / count if count else math.nan,
        rate=count / seconds if seconds > 0 else 0.0,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        p999=p999,
        seconds=seconds,
        above=above,
    )
