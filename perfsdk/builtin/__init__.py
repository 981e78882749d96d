"""Built-in plugins: ordinary ``@hookimpl`` modules, registered by name from
:data:`perfsdk.plugins.DEFAULT_PLUGINS` exactly like third-party plugins."""

from __future__ import annotations

__all__: list[str] = []
