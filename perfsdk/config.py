"""The agent's configuration: keyword arguments, environment, ``perfsdk.toml``, ``pyproject.toml``.

Precedence, highest first:

1. keyword arguments to ``perfsdk.start(...)`` (or ``load_config(overrides)``);
2. ``PERFSDK_<KEY>`` environment variables (``PERFSDK_HTTP_PORT=9100``);
3. ``perfsdk.toml`` in the working directory (top-level keys);
4. ``[tool.perfsdk]`` in ``pyproject.toml`` in the working directory;
5. the defaults below, and those plugins declare through ``perfsdk_addoption``.

An unknown key in arguments or files, or a value of the wrong type or range, is a ``ConfigError``
naming the key, the value and where it came from. Environment variables are only read for known
keys (other ``PERFSDK_*`` variables, such as ``PERFSDK_NO_EXTENSIONS``, belong to other parts).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ._accel import check_alpha
from .errors import ConfigError

__all__ = ["CORE_OPTIONS", "Config", "load_config"]

#: Core keys and their defaults; the default's type is the key's type.
CORE_OPTIONS: dict[str, object] = {
    "interval": 1.0,
    "http_enabled": True,
    "http_host": "127.0.0.1",
    "http_port": 9464,
    "jsonl_path": "",
    "store_enabled": True,
    "db_path": ".perfsdk/perfsdk.db",
    "retention_raw_seconds": 86400.0,
    "retention_hourly_seconds": 2592000.0,
    "multiprocess_dir": "",
    "disabled_collectors": [],
    "alpha": 0.01,
    "window_seconds": 60.0,
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Config(Mapping[str, object]):
    """Immutable resolved configuration; ``source(key)`` tells where each value came from."""

    __slots__ = ("_sources", "_values")

    def __init__(self, values: Mapping[str, object], sources: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._sources = dict(sources)

    def __getitem__(self, key: str) -> object:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source(self, key: str) -> str:
        return self._sources.get(key, "default")

    def number(self, key: str) -> float:
        value = self._values[key]
        assert isinstance(value, (int, float))
        return float(value)

    def text(self, key: str) -> str:
        return str(self._values[key])

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _coerce(key: str, value: object, default: object, where: str) -> object:
    """Convert ``value`` to the type of ``default``; environment strings are parsed."""
    bad = f"{key}={value!r} ({where})"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{bad} is not a boolean; use true/false (or 1/0, yes/no, on/off)")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(f"{bad} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{bad} is not an integer")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ConfigError(f"{bad} is not a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{bad} is not a number")
    if isinstance(default, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{bad} is not a list of strings (or a comma-separated string)")
    if isinstance(default, str):
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise ConfigError(f"{bad} is not a string")
    return value


def _check_ranges(values: Mapping[str, object], sources: Mapping[str, str]) -> None:
    def where(k: str) -> str:
        return sources.get(k, "default")

    def positive(k: str) -> None:
        v = values[k]
        assert isinstance(v, float)
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{k}={v!r} ({where(k)}) must be a positive number of seconds")

    for k in ("interval", "window_seconds", "retention_raw_seconds", "retention_hourly_seconds"):
        positive(k)
    port = values["http_port"]
    assert isinstance(port, int)
    if not 0 <= port <= 65535:
        raise ConfigError(f"http_port={port!r} ({where('http_port')}) is outside 0..65535")
    alpha = values["alpha"]
    assert isinstance(alpha, float)
    try:
        check_alpha(alpha)  # the sketch's own rule, so config and Sketch() never disagree
    except ValueError as exc:
        raise ConfigError(f"{exc} ({where('alpha')})") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_config(
    overrides: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    plugin_defaults: Mapping[str, object] | None = None,
) -> Config:
    """Resolve the configuration from every source (see the module docstring for precedence)."""
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    defaults: dict[str, object] = dict(CORE_OPTIONS)
    for k, v in (plugin_defaults or {}).items():
        defaults.setdefault(k, v)
    values: dict[str, object] = {
        k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()
    }
    sources: dict[str, str] = {}

    def apply(layer: Mapping[str, object], where: str, strict: bool) -> None:
        for key, value in layer.items():
            if key not in defaults:
                if strict:
                    known = ", ".join(sorted(defaults))
                    raise ConfigError(f"unknown option {key!r} ({where}); known options: {known}")
                continue
            values[key] = _coerce(key, value, defaults[key], where)
            sources[key] = where

    pyproject = base / "pyproject.toml"
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {}).get("perfsdk")
        if tool is not None:
            if not isinstance(tool, dict):
                raise ConfigError(f"[tool.perfsdk] in {pyproject} must be a table")
            apply(tool, f"[tool.perfsdk] in {pyproject}", True)
    own = base / "perfsdk.toml"
    if own.is_file():
        apply(_read_toml(own), str(own), True)
    env_layer = {k: env[f"PERFSDK_{k.upper()}"] for k in defaults if f"PERFSDK_{k.upper()}" in env}
    for k, v in env_layer.items():
        values[k] = _coerce(k, v, defaults[k], f"environment variable PERFSDK_{k.upper()}")
        sources[k] = f"environment variable PERFSDK_{k.upper()}"
    if overrides:
        apply(overrides, "keyword argument", True)
    _check_ranges(values, sources)
    return Config(values, sources)
