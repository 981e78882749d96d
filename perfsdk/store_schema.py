"""The store's schema, its migrations, and the SQL functions its connections carry.

The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` is a list of functions,
the n-th bringing the schema from version n-1 to n. Opening a database (:func:`migrate`) applies
the missing ones in one transaction. A new table (profiles, alert history, pytest baselines,
load-test results, ...) is one more function appended to the list, never an edit of an old one::

    def _v2_profiles(db: sqlite3.Connection) -> None:
        # Profiles taken on slow calls and alerts.
        db.execute("CREATE TABLE profiles (...)")

    MIGRATIONS: list[Migration] = [_v1_metric_rollups, _v2_profiles]

``PRAGMA application_id`` is :data:`APPLICATION_ID`, so a ``db_path`` pointing at another
application's database is refused instead of being modified.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from . import _accel
from .errors import PerfsdkError

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "MergeSketches",
    "Migration",
    "StoreError",
    "merge_sketch_bytes",
    "migrate",
    "write_transaction",
]

log = logging.getLogger("perfsdk.store")

#: ``PRAGMA application_id`` of a perfsdk database ("perf").
APPLICATION_ID = 0x70657266


class StoreError(PerfsdkError):
    """The database cannot be used (missing, not perfsdk's, too new) or holds no such series."""


Migration = Callable[[sqlite3.Connection], None]


def _v1_metric_rollups(db: sqlite3.Connection) -> None:
    """Runs, series and per-interval metric rollups with their sketches."""
    for statement in (
        """CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started REAL NOT NULL)""",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            labels TEXT NOT NULL,
            kind TEXT NOT NULL,
            help TEXT NOT NULL DEFAULT '',
            UNIQUE (name, labels, kind))""",
        """CREATE TABLE rollups (
            series_id INTEGER NOT NULL REFERENCES series (id),
            run_id INTEGER NOT NULL REFERENCES runs (run_id),
            resolution INTEGER NOT NULL,
            ts_start REAL NOT NULL,
            ts_end REAL NOT NULL,
            count INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            sum REAL,
            min REAL,
            max REAL,
            sketch BLOB)""",
        # Queries read one series' rows by time; maintenance reads the oldest rows of a resolution.
        "CREATE INDEX rollups_by_series ON rollups (series_id, ts_end)",
        "CREATE INDEX rollups_by_age ON rollups (resolution, ts_end)",
    ):
        db.execute(statement)


#: The schema's history: ``MIGRATIONS[n - 1]`` brings version n-1 to n. Append, never edit.
MIGRATIONS: list[Migration] = [_v1_metric_rollups]


def migrate(
    db: sqlite3.Connection, where: str, migrations: Sequence[Migration] | None = None
) -> int:
    """Bring ``db`` to the newest schema version in one transaction; return that version.

    :param where: the database's path, for error messages.
    :raises StoreError: the file belongs to another application, or was written by a newer
        perfsdk (its version is above ``len(migrations)``).
    """
    steps = MIGRATIONS if migrations is None else migrations
    target = len(steps)
    if _check_version(db, where, target) == target:
        return target  # the common case: no write lock taken
    with write_transaction(db):
        version = _check_version(db, where, target)  # another process may have migrated
        for number in range(version + 1, target + 1):
            steps[number - 1](db)
            log.info("perfsdk store %s: schema migrated to version %d", where, number)
        db.execute(f"PRAGMA user_version = {target:d}")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
    return target


def _check_version(db: sqlite3.Connection, where: str, target: int) -> int:
    application = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    foreign = application not in (0, APPLICATION_ID)
    if application == 0 and version == 0:
        foreign = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    if foreign:
        raise StoreError(
            f"{where} is an SQLite database of another application (application_id "
            f"{application:#x}, schema version {version}); point db_path at a perfsdk database "
            "or a new file"
        )
    if version > target:
        raise StoreError(
            f"{where} has schema version {version}, written by a newer perfsdk; this perfsdk "
            f"knows versions up to {target}: upgrade perfsdk, or use another db_path"
        )
    return version


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front, so two writers wait for each other (busy_timeout)
    # instead of failing when a read lock cannot be upgraded.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class MergeSketches:
    """SQL aggregate ``perfsdk_merge_sketches(sketch)``: the merge of a group's sketches."""

    def __init__(self) -> None:
        self.sketch: _accel.Sketch | None = None

    def step(self, blob: bytes | None) -> None:
        if blob is not None:
            self.sketch = merge_sketch_bytes(self.sketch, blob)

    def finalize(self) -> bytes | None:
        return None if self.sketch is None else self.sketch.to_bytes()


def merge_sketch_bytes(acc: _accel.Sketch | None, blob: bytes) -> _accel.Sketch:
    """Merge the serialised sketch ``blob`` into ``acc`` (a new, uncapped sketch when None).

    :raises StoreError: the two were recorded with different accuracies (``alpha``).
    """
    part = _accel.Sketch.from_bytes(blob)
    if acc is None:
        acc = _accel.Sketch(part.alpha)  # no bucket cap: merging never folds
    elif part.alpha != acc.alpha:
        raise StoreError(
            f"rows recorded with alpha={part.alpha!r} and alpha={acc.alpha!r} cannot be merged; "
            "query a time range (or labels) recorded with one alpha"
        )
    acc.merge(part)
    return acc
