"""``perfsdk history NAME``: a series' history from the SQLite store, as a table or JSON.

Registered with :func:`perfsdk.cli.command` when :mod:`perfsdk.cli` imports this module::

    perfsdk history checkout_seconds --label route=/checkout --since -1h --stat p99 --step 5m
    perfsdk history jobs_total --stat rate --step 60 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from perfsdk.cli import _table, command

__all__ = ["cmd_history"]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--label {text!r} is not of the form NAME=VALUE")
    return key.strip(), value


def _add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the series (metric) name")
    parser.add_argument(
        "--label",
        action="append",
        type=_label,
        default=[],
        metavar="NAME=VALUE",
        help="keep series with this label (repeatable); series that match are merged",
    )
    parser.add_argument(
        "--since", default="-1h", help="start: -1h, -30m, -7d, a Unix time or an ISO date (-1h)"
    )
    parser.add_argument("--until", default="now", help="end, like --since (now)")
    parser.add_argument(
        "--stat",
        default="p99",
        help="count, rate, mean, min, max, sum, errors, error_ratio or a percentile such as "
        "p50, p99, p99.9 (p99)",
    )
    parser.add_argument(
        "--step", default=None, help="bucket width: 60, 5m, 1h (default: one row per interval)"
    )
    parser.add_argument("--db", default=None, help="the database (default: config db_path)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.6g}"


@command("history", "Print a series' history from the SQLite store.", _add_history_arguments)
def cmd_history(args: argparse.Namespace) -> int:
    """Print the points of ``perfsdk.store.history``; exit 1 on a bad argument or no series."""
    from perfsdk.store import default_db_path, history

    db = args.db if args.db is not None else default_db_path()
    labels = dict(args.label)
    points = history(
        args.name,
        labels,
        since=args.since,
        until=args.until,
        stat=args.stat,
        step=args.step,
        db_path=db,
    )
    if args.json:
        document = {
            "name": args.name,
            "labels": labels,
            "stat": args.stat,
            "since": args.since,
            "until": args.until,
            "step": args.step,
            "db": str(db),
            "points": [
                {
                    "start": p.start,
                    "end": p.end,
                    "value": None if math.isnan(p.value) else p.value,
                    "count": p.count,
                }
                for p in points
            ],
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not points:
        print(f"no data for {args.name} between {args.since} and {args.until}")
        return 0
    rows = [[_when(p.start), _when(p.end), _number(p.value), str(p.count)] for p in points]
    print(_table(["START", "END", args.stat.upper(), "COUNT"], rows))
    return 0
