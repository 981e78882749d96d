"""Exceptions raised by perfsdk.

Every message is written for the person who has to fix the problem: it names the bad value, where
it came from (file, key, environment variable, plugin) and what would have been accepted, e.g.::

    PERFSDK_DISABLE_PLUGIN_AUTOLOAD='maybe' (environment variable) is not a boolean;
    use one of 1, true, yes, on, 0, false, no, off

Catch :class:`PerfsdkError` to handle anything perfsdk raises on purpose.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PerfsdkError", "PluginError"]


class PerfsdkError(Exception):
    """Base class of every exception perfsdk raises on purpose."""


class ConfigError(PerfsdkError, ValueError):
    """A configuration value (argument, file key or environment variable) is invalid.

    Also a :class:`ValueError`, so code that validates input generically keeps working.
    """


class PluginError(PerfsdkError):
    """A plugin could not be loaded or does not match the hook specifications.

    :param message: the full, human-readable explanation.
    :param plugin: the name the plugin is (or would be) registered under, when known.
    :param hook: the hook involved, when known.
    """

    def __init__(self, message: str, *, plugin: str | None = None, hook: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook
