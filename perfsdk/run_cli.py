"""``perfsdk run``: start a Python program with the agent running inside it, with no code change.

In the manner of ``ddtrace-run``::

    perfsdk run --port 9100 --db .perfsdk/app.db -- python app.py --workers 4

The options become ``PERFSDK_<KEY>`` environment variables (validated here first, so a typo fails
before the program starts), the folder :mod:`perfsdk._bootstrap` is put first on ``PYTHONPATH``,
and the command replaces this process (``os.execvpe``): the program keeps this process id, receives
signals directly and its exit code is the command's. At start-up Python imports the bootstrap's
``sitecustomize``, which calls ``perfsdk.start()`` and chains to the program's own
``sitecustomize``, if it has one.

Where exec is not possible (Windows, or ``--no-exec``) the command runs as a child: SIGINT, SIGTERM
and SIGHUP are forwarded to it and its exit code is returned (a death by signal N as 128 + N, as
shells report it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from perfsdk.cli import command
from perfsdk.errors import ConfigError

__all__ = [
    "BOOTSTRAP_ENV",
    "build_environment",
    "cmd_run",
    "parse_options",
    "run_child",
]

#: Set in the program's environment to the bootstrap folder: tells a program (or a test) that it
#: was started by ``perfsdk run``. Not a ``PERFSDK_`` name, so the configuration never reads it.
BOOTSTRAP_ENV = "_PERFSDK_RUN_BOOTSTRAP"

#: Signals the launcher forwards when it runs the command as a child.
FORWARDED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

_USAGE_HINT = "usage: perfsdk run [options] -- python app.py [args ...]"


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "perfsdk run [-h] [options] -- COMMAND [ARGS ...]"
    parser.epilog = (
        "Options become PERFSDK_<KEY> environment variables read by perfsdk.start() in the "
        "program; other settings come from the environment, perfsdk.toml and [tool.perfsdk] "
        "as usual. Example: perfsdk run --port 9100 -- python app.py"
    )
    parser.add_argument(
        "--interval", type=float, metavar="S", help="seconds between agent ticks (interval)"
    )
    parser.add_argument(
        "--port", type=int, metavar="N", help="Prometheus endpoint port (http_port; 0: any free)"
    )
    parser.add_argument(
        "--db", metavar="PATH", help="SQLite history database (db_path), made absolute"
    )
    parser.add_argument(
        "--jsonl", metavar="PATH", help="write snapshots as JSON lines here (jsonl_path)"
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any configuration key, e.g. -o http_host=0.0.0.0 -o store_enabled=false (repeatable)",
    )
    parser.add_argument(
        "--no-exec",
        action="store_true",
        help="run the command as a child process (forwarding signals) instead of replacing "
        "this process; the default on Windows",
    )
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="COMMAND [ARGS ...]",
        help="the program to run, usually after --",
    )


def parse_options(
    *,
    interval: float | None = None,
    port: int | None = None,
    db: str | None = None,
    jsonl: str | None = None,
    options: Sequence[str] = (),
) -> dict[str, str]:
    """The command line's settings as configuration key -> value text (as an environment
    variable would carry it). Paths are made absolute, so the program may change directory.

    :raises ConfigError: an ``--option`` is not ``KEY=VALUE``.
    """
    values: dict[str, str] = {}
    if interval is not None:
        values["interval"] = repr(interval)
    if port is not None:
        values["http_port"] = str(port)
    if db:
        values["db_path"] = os.path.abspath(db)
    if jsonl:
        values["jsonl_path"] = os.path.abspath(jsonl)
    for item in options:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--option {item!r} is not KEY=VALUE; e.g. --option http_host=0.0.0.0"
            )
        values[key] = value
    return values


def _known_options() -> dict[str, object]:
    """Every configuration key with its default: the core's and those plugins declare."""
    from perfsdk.config import CORE_OPTIONS
    from perfsdk.plugins import get_plugin_manager

    defaults: dict[str, object] = {}
    get_plugin_manager().hooks.addoption(defaults)
    return {**CORE_OPTIONS, **defaults}


def build_environment(
    values: Mapping[str, str],
    base: Mapping[str, str] | None = None,
    *,
    validate: bool = True,
) -> dict[str, str]:
    """The program's environment: ``base`` (default ``os.environ``) plus ``PERFSDK_<KEY>`` for
    each of ``values``, and the bootstrap folder first on ``PYTHONPATH``.

    :param validate: resolve the configuration the program will see (with the working
        directory's ``perfsdk.toml`` / ``pyproject.toml``) and raise now if it is invalid.
    :raises ConfigError: an unknown key, or a value the configuration rejects.
    """
    from perfsdk._bootstrap import BOOTSTRAP_DIR

    env = dict(os.environ if base is None else base)
    for key, value in values.items():
        env[f"PERFSDK_{key.upper()}"] = value
    if validate:
        from perfsdk.config import load_config

        known = _known_options()
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown option {key!r} (perfsdk run command line); "
                    f"known options: {', '.join(sorted(known))}"
                )
        load_config(env=env, plugin_defaults=known)
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries = [p for p in entries if os.path.abspath(p) != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *entries])
    env[BOOTSTRAP_ENV] = BOOTSTRAP_DIR
    return env


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _sigint_reached_child_already() -> bool:
    """A Ctrl-C at the terminal goes to the whole foreground process group, child included:
    forwarding it would deliver it twice. Signals sent with ``kill`` to the launcher alone are
    forwarded; when the launcher is in the terminal's foreground, we cannot tell the two apart
    and assume the terminal."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (AttributeError, OSError, ValueError):
        return False


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` as a child, forwarding SIGINT/SIGTERM/SIGHUP to it; return its exit status.

    Signal forwarding needs the main thread (Python's rule for signal handlers); elsewhere the
    child runs without it.
    """
    import subprocess

    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _sigint_reached_child_already():
            return
        if child is None:
            pending.append(signum)
            return
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    installed: dict[int, Any] = {}
    try:
        try:
            for sig in FORWARDED_SIGNALS:
                installed[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread
            pass
        child = subprocess.Popen(list(argv), env=None if env is None else dict(env))
        for signum in pending:
            child.send_signal(signum)
        return exit_status(child.wait())
    finally:
        for number, previous in installed.items():
            signal.signal(number, previous)


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as exc:
        print(f"perfsdk: error: cannot run {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    raise AssertionError("unreachable: os.execvpe returned")  # pragma: no cover


@command(
    "run", "Run a Python program with the perfsdk agent started inside it.", _add_run_arguments
)
def cmd_run(args: argparse.Namespace) -> int:
    """Set up the environment and replace this process with the command (or run it as a child)."""
    argv: list[str] = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(f"perfsdk: error: a command to run is required\n{_USAGE_HINT}", file=sys.stderr)
        return 2
    values = parse_options(
        interval=args.interval, port=args.port, db=args.db, jsonl=args.jsonl, options=args.option
    )
    env = build_environment(values)
    if args.no_exec or os.name != "posix":
        try:
            return run_child(argv, env)
        except OSError as exc:
            print(
                f"perfsdk: error: cannot run {argv[0]!r}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 127 if isinstance(exc, FileNotFoundError) else 126
    return _exec(argv, env)
