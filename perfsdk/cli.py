"""The ``perfsdk`` command line (also ``python -m perfsdk``).

Each sub-command is one function taking the parsed arguments and returning an exit code,
registered in :data:`COMMANDS` with the :func:`command` decorator; to add one::

    def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", default="1h")

    @command("report", "Summarise the store.", _add_report_arguments)
    def cmd_report(args: argparse.Namespace) -> int:
        ...
        return 0

Output goes to stdout, errors to stderr as ``perfsdk: error: ...`` with a non-zero exit code:
1 when something is wrong, 2 for usage errors. Modules are imported inside the command that needs
them, so ``perfsdk --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from perfsdk.errors import PerfsdkError, PluginError

__all__ = ["COMMANDS", "Command", "build_parser", "cmd_plugins", "command", "main"]

_Run = Callable[[argparse.Namespace], int]
_AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class Command:
    """A sub-command: its one-line help, its argument setup and the function that runs it."""

    help: str
    run: _Run
    add_arguments: _AddArguments | None = None


#: Sub-command name -> :class:`Command`, in the order they appear in ``--help``.
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, add_arguments: _AddArguments | None = None
) -> Callable[[_Run], _Run]:
    """Register the decorated function as the sub-command ``name``."""

    def register(run: _Run) -> _Run:
        if name in COMMANDS:
            raise ValueError(f"perfsdk sub-command {name!r} is already registered")
        COMMANDS[name] = Command(help, run, add_arguments)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="perfsdk", description="perfsdk: embeddable performance monitoring."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        sub = subparsers.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.add_arguments is not None:
            cmd.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perfsdk`` command line with ``argv`` (default ``sys.argv[1:]``); return the
    exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("perfsdk: error: a command is required; see perfsdk --help", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except PerfsdkError as exc:
        print(f"perfsdk: error: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# perfsdk plugins
# ---------------------------------------------------------------------------------------------


def _add_plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("plugins", "List the loaded plugins and where they came from.", _add_plugins_arguments)
def cmd_plugins(args: argparse.Namespace) -> int:
    """Print the registered plugins; exit 1 if any failed to load or does not match the specs."""
    from perfsdk.plugins import (
        ENV_DISABLE_PLUGIN_AUTOLOAD,
        ENV_DISABLED_PLUGINS,
        get_plugin_manager,
    )

    manager = get_plugin_manager()
    infos = manager.list_plugins()
    problems = [
        f"plugin {name!r} could not be loaded: {why}" for name, why in manager.load_errors.items()
    ]
    try:
        manager.check_pending()
    except PluginError as exc:
        problems.append(str(exc))

    if args.json:
        document = {
            "plugins": [dataclasses.asdict(info) for info in infos],
            "disabled": list(manager.disabled),
            "autoload": manager.autoload,
            "load_errors": manager.load_errors,
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        rows = [
            [info.name, info.source, info.version or "-", ", ".join(info.hooks) or "-"]
            for info in infos
        ]
        if rows:
            print(_table(["NAME", "SOURCE", "VERSION", "HOOKS"], rows))
        else:
            print("no plugins loaded")
        if manager.disabled:
            print(f"disabled by {ENV_DISABLED_PLUGINS}: {', '.join(manager.disabled)}")
        if not manager.autoload:
            print(f"entry points not loaded ({ENV_DISABLE_PLUGIN_AUTOLOAD} is set)")

    for problem in problems:
        print(f"perfsdk: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


# Sub-commands kept in their own modules register themselves when imported.
from perfsdk import history_cli, run_cli, top_cli  # noqa: E402, F401
