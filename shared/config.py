"""One configuration for every process: embedded TOML defaults, an optional TOML file, then
BDT_* environment overrides — validated once at start so a typo stops the process with a
message naming the key instead of failing later in the middle of a trade."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "BDT_"

# Extra rules beyond "same type as the default".
CHOICES: dict[str, tuple[str, ...]] = {
    "log.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "bus.transport": ("ipc", "tcp"),
    "market.feed": ("replay", "synthetic", "live"),
    "history.db_synchronous": ("NORMAL", "FULL"),
    "bot.mode": ("paper", "live"),
}
MINIMUMS: dict[str, int] = {
    "bus.tcp_base_port": 1024,
    "bus.max_message_bytes": 1024,
    "bus.request_timeout_ms": 10,
    "bus.request_retries": 0,
    "bus.stream_hwm": 1,
    "bus.heartbeat_ivl_ms": 100,
    "cache.memory_headroom_mb": 0,
    "cache.max_items": 1,
    "cache.max_key_bytes": 1,
    "cache.max_value_bytes": 1,
    "cache.sweep_interval_ms": 10,
    "market.sample_bars": 100,
    "history.window_bars": 100,
    "history.compact_keep_days": 0,
    "history.compact_interval_s": 1,
    "history.range_max_rows": 10,
    "bot.wait_subscribers": 0,
    "bot.wait_subscribers_timeout_s": 0,
    "bot.recent_bars": 100,
    "bot.prediction_wait_ms": 1,
    "model.horizon_bars": 1,
    "model.train_bars": 500,
    "model.min_train_bars": 500,
    "model.garch_warmup_bars": 10,
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong form."""


class Config:
    """Read-only view: ``cfg.get("bus.max_message_bytes")`` or ``cfg.section("cache")``."""

    def __init__(self, data: dict[str, dict[str, Any]], sources: list[str]) -> None:
        self._data = data
        self.sources = sources

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return self._data[section][key]

    def section(self, name: str) -> dict[str, Any]:
        return dict(self._data[name])

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self._data.items()}

    @property
    def var_dir(self) -> Path:
        return Path(self.get("paths.var")).absolute()

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def model_dir(self) -> Path:
        return Path(self.get("model.dir")).absolute() if self.get("model.dir") \
            else self.var_dir / "models"


def _expected(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _coerce_env(raw: str, default: Any, name: str) -> Any:
    """Environment values are strings; read them as the default's type."""
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    if isinstance(default, int):
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _check(dotted: str, value: Any, default: Any, origin: str) -> Any:
    where = f"{dotted} (from {origin})"
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where}: expected {_expected(default)}, got {value!r}")
    if dotted in CHOICES and value not in CHOICES[dotted]:
        raise ConfigError(f"{where}: expected one of {', '.join(CHOICES[dotted])}, got {value!r}")
    if dotted in MINIMUMS and value < MINIMUMS[dotted]:
        raise ConfigError(f"{where}: expected at least {MINIMUMS[dotted]}, got {value!r}")
    return value


def _merge(data: dict, overrides: Mapping, origin: str) -> None:
    for section, values in overrides.items():
        if section not in data:
            known = ", ".join(data)
            raise ConfigError(f"{section} (from {origin}): unknown section; known: {known}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section} (from {origin}): expected a table")
        for key, value in values.items():
            if key not in data[section]:
                known = ", ".join(data[section])
                raise ConfigError(f"{section}.{key} (from {origin}): unknown key; known: {known}")
            data[section][key] = _check(f"{section}.{key}", value, data[section][key], origin)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (from BDT_CONFIG) does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then $BDT_CONFIG, then BDT_SECTION__KEY variables (BDT_VAR = paths.var)."""
    env = os.environ if env is None else env
    data = _read_toml(DEFAULTS_PATH)
    sources = [str(DEFAULTS_PATH)]
    if env.get("BDT_CONFIG"):
        path = Path(env["BDT_CONFIG"])
        _merge(data, _read_toml(path), str(path))
        sources.append(str(path))
    overrides: dict[str, dict[str, Any]] = {}
    for name, raw in sorted(env.items()):
        if name == "BDT_VAR":
            section, key = "paths", "var"
        elif name.startswith(ENV_PREFIX) and "__" in name:
            section, key = (part.lower() for part in name[len(ENV_PREFIX):].split("__", 1))
        else:
            continue
        if section not in data or key not in data[section]:
            raise ConfigError(f"{name}: no config key {section}.{key}")
        overrides.setdefault(section, {})[key] = _coerce_env(raw, data[section][key], name)
        sources.append(name)
    _merge(data, overrides, "environment")
    return Config(data, sources)
