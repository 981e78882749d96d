"""Start the perfsdk agent inside a program launched by ``perfsdk run``.

Python's :mod:`site` imports ``sitecustomize`` at start-up, from the first ``sys.path`` entry that
has one; ``perfsdk run`` puts this folder first on ``PYTHONPATH``. Here we

1. take this folder off ``sys.path`` (the program never sees it; ``PYTHONPATH`` keeps it, so Python
   programs the target starts are instrumented too, as with ``ddtrace-run``);
2. run the ``sitecustomize`` that would have been imported without us, if there is one, and leave
   it in ``sys.modules`` under its own name;
3. call ``perfsdk.start()``, which reads the ``PERFSDK_*`` variables ``perfsdk run`` set.

Nothing here may stop the program: a failure is reported on stderr, once, and the program runs
without the agent. This module is imported as the top-level ``sitecustomize``, so it uses no
relative imports.
"""

from __future__ import annotations

import os
import sys

__all__: list[str] = []

_HERE = os.path.dirname(os.path.abspath(__file__))


def _is_here(entry: str) -> bool:
    try:
        return os.path.samefile(entry or os.curdir, _HERE)
    except OSError:
        return False


def _chain_to_next_sitecustomize() -> None:
    """Run the ``sitecustomize`` further down ``sys.path``, reporting errors as :mod:`site` does."""
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    spec = PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    ours = sys.modules.get(__name__)
    module = module_from_spec(spec)
    # The import system re-reads sys.modules once this module finishes, so `import sitecustomize`
    # in the program gets the program's own module, as it would without perfsdk run.
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if ours is not None:
            sys.modules["sitecustomize"] = ours
        if sys.flags.verbose:
            sys.excepthook(*sys.exc_info())
        else:
            sys.stderr.write(
                "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                f"{type(exc).__name__}: {exc}\n"
            )


def _start_agent() -> None:
    try:
        import perfsdk

        perfsdk.start()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit from a plugin included: the program comes first
        sys.stderr.write(
            f"perfsdk: the agent did not start in process {os.getpid()} ({sys.executable}): "
            f"{type(exc).__name__}: {exc}; the program runs without it\n"
        )


def _bootstrap() -> None:
    sys.path[:] = [entry for entry in sys.path if not _is_here(entry)]
    try:
        _chain_to_next_sitecustomize()
    finally:
        _start_agent()


if __name__ == "sitecustomize":  # not when imported as perfsdk._bootstrap.sitecustomize
    _bootstrap()
