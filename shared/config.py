"""One configuration for every process: embedded TOML defaults, an optional TOML file, then
BDT_* environment overrides — validated once at start so a typo stops the process with a
message naming the key instead of failing later in the middle of a trade."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import programs

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "BDT_"

# Extra rules beyond "same type as the default". strategy.name and market.feed are the names in
# the strategy and feed registries (shared.trading.strategies, shared.market.feeds), written
# out so that loading the settings imports no trading code; tests/test_registries.py holds them
# equal.
CHOICES: dict[str, tuple[str, ...]] = {
    "log.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "bus.transport": ("ipc", "tcp"),
    "market.feed": ("replay", "synthetic", "live"),
    "history.db_synchronous": ("NORMAL", "FULL"),
    "bot.mode": ("paper", "live"),
    "strategy.name": ("ml", "sma_cross"),
    "strategy.sma_size_mode": ("qty", "equity_fraction"),
}


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``lo``/``hi`` bounds (None = unbounded), open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else
                                             value > self.hi))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '≥'} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '≤'} {self.hi:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, "
                f"{self.hi:g}{')' if self.hi_open else ']'}")


def at_least(lo: float) -> Range:
    return Range(lo)


POSITIVE = Range(0, lo_open=True)
FRACTION = Range(0, 1, lo_open=True, hi_open=True)

# The range of every numeric setting, checked at load (by every process, `bdt config show` and
# `bdt doctor` alike). The trading types check the same rules again when they are built
# (StrategyParams, RiskLimits, FillModel); tests/test_config.py holds the two to each other.
RANGES: dict[str, Range] = {
    "bus.tcp_base_port": Range(1024, 65535 - 64),
    "bus.max_message_bytes": at_least(1024),
    "bus.request_timeout_ms": at_least(10),
    "bus.request_retries": Range(0, 10),
    "bus.stream_hwm": at_least(1),
    "bus.heartbeat_ivl_ms": at_least(100),
    "cache.memory_headroom_mb": at_least(0),
    "cache.max_items": at_least(1),
    "cache.max_key_bytes": at_least(1),
    "cache.max_value_bytes": at_least(1),
    "cache.sweep_interval_ms": at_least(10),
    "market.replay_speed": at_least(0),
    "market.sample_bars": at_least(100),
    "market.sample_past_days": at_least(0),
    "market.replay_train_fraction": Range(0, 0.9),
    "history.window_bars": at_least(100),
    "history.compact_keep_days": at_least(0),
    "history.compact_interval_s": at_least(1),
    "history.range_max_rows": at_least(10),
    "bot.wait_subscribers": at_least(0),
    "bot.wait_subscribers_timeout_s": at_least(0),
    "bot.recent_bars": at_least(100),
    "bot.prediction_wait_ms": at_least(1),
    "bot.balance_tolerance": Range(0, 0.5),
    "bot.balance_refresh_s": Range(0.05, 86_400),
    "bot.poll_interval_s": Range(0.05, 3600),
    "bot.order_alert_s": POSITIVE,
    "bot.lost_order_s": Range(61, 86_400),
    "bot.fill_lookups": Range(1, 1000),
    "bot.ack_lookups": Range(1, 100),
    "bot.ack_lookup_delay_s": Range(0, 60),
    "model.horizon_bars": at_least(1),
    "model.train_bars": at_least(500),
    "model.min_train_bars": at_least(500),
    "model.garch_warmup_bars": at_least(10),
    "model.max_gap_bars": at_least(0),
    "model.reload_check_s": POSITIVE,
    "strategy.entry_threshold": at_least(0),
    "strategy.p_up_margin": Range(0, 0.5, hi_open=True),
    "strategy.vol_target": POSITIVE,
    "strategy.max_hold_bars": at_least(1),
    "strategy.stop_vol_multiple": POSITIVE,
    "strategy.qty_step": POSITIVE,
    "strategy.sma_fast": at_least(1),
    "strategy.sma_slow": at_least(2),
    "strategy.sma_size": POSITIVE,
    "risk.max_position_qty": at_least(0),
    "risk.max_notional": POSITIVE,
    "risk.daily_loss_limit": POSITIVE,
    "risk.max_drawdown": FRACTION,
    "risk.max_prediction_age_s": POSITIVE,
    "risk.losses_before_cooldown": at_least(1),
    "risk.cooldown_bars": at_least(1),
    "paper.starting_cash": POSITIVE,
    "backtest.window_days": Range(1, 3650),
    "backtest.chunk_bars": at_least(1000),
    "backtest.min_chunk_bars": at_least(100),
    "backtest.memory_fraction": Range(0.05, 0.9),
    "walkforward.train_days": Range(1, 3650),
    "walkforward.test_days": Range(0.01, 365),
    "walkforward.folds": Range(1, 520),
    "walkforward.purge_bars": at_least(1),
    "walkforward.embargo_bars": at_least(1),
    "walkforward.min_return_margin": Range(-1, 10),
    "walkforward.min_trades": at_least(0),
    "walkforward.min_dsr": Range(0, 1),
    "scheduler.misfire_grace_s": Range(1, 7 * 86400),
    # and each job's time limit (minutes), under the key its program table row names
    **{p.limit_key: Range(0.001, 24 * 60) for p in programs.jobs()},
    "scheduler.stop_grace_s": Range(1, 600),
    "scheduler.poll_interval_s": Range(0.05, 60),
    "paper.fee_taker": Range(0, 1, hi_open=True),
    "paper.fee_maker": Range(0, 1, hi_open=True),
    "paper.spread": Range(0, 1, hi_open=True),
    "paper.slippage": Range(0, 0.5, hi_open=True),
    "monitor.sample_interval_s": Range(0.1, 3600),
    "monitor.ring_samples": at_least(10),
    "monitor.history_step_s": Range(1, 3600),
    "monitor.history_days": at_least(1),
    "monitor.alert_days": at_least(1),
    "monitor.low_memory_mb": at_least(1),
    "monitor.alert_memory_mb": at_least(1),
    "monitor.critical_memory_mb": at_least(1),
    "monitor.low_cpu_pct": Range(0, 1000, lo_open=True),
    "monitor.alert_cpu_pct": Range(0, 1000, lo_open=True),
    "monitor.critical_cpu_pct": Range(0, 1000, lo_open=True),
    "monitor.enter_samples": Range(1, 1000),
    "monitor.exit_samples": Range(1, 1000),
    "monitor.hysteresis": Range(0, 1, hi_open=True),
    "monitor.mode_announce_s": POSITIVE,
    "monitor.restart_fraction": FRACTION,
    "monitor.restart_samples": Range(1, 1000),
    "monitor.leak_window_s": POSITIVE,
    "monitor.leak_grace_s": at_least(0),
    "monitor.leak_min_samples": Range(3, 100_000),
    "monitor.leak_min_mib_per_h": POSITIVE,
    "monitor.leak_min_r2": Range(0, 1),
    "monitor.leak_horizon_s": POSITIVE,
    "monitor.restart_cooldown_s": at_least(0),
    "monitor.critical_stop_after_s": at_least(0),
    "monitor.alert_min_interval_s": at_least(0),
    "monitor.webhook_timeout_s": Range(0.1, 60),
    "monitor.metrics_port": Range(0, 65535),
    "monitor.status_interval_s": POSITIVE,
    "monitor.status_timeout_ms": Range(10, 10_000),
    "monitor.snapshot_ttl_s": POSITIVE,
}


def _parses(module: str, parser: str) -> Callable[[str], str | None]:
    """A form check from a parser that raises ValueError on a bad value: the problem is the
    error's text. The parser's module is imported at first use (apscheduler, behind the
    schedule parser, stays out of services that never check a schedule)."""
    def check(value: str) -> str | None:
        try:
            getattr(importlib.import_module(module), parser)(value)
        except ValueError as exc:
            return str(exc)
        return None
    return check


def _json_object(value: str) -> str | None:
    if not value:
        return None
    try:
        obj = json.loads(value)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(obj, dict):
        return "expected a JSON object"
    secret = sorted({"apiKey", "secret", "password", "privateKey"} & set(obj))
    if secret:
        return f"must not carry credentials ({', '.join(secret)}): they come from bot.keys_file"
    return None


# A market symbol as ccxt writes it: BASE/QUOTE, and :SETTLE for a derivative (BTC/USDT:USDT)
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}/[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
                     r"(:[A-Za-z0-9][A-Za-z0-9._-]{0,31})?")


def symbol_problem(value: object) -> str | None:
    """Why ``value`` is not a market symbol, or None."""
    if isinstance(value, str) and _SYMBOL.fullmatch(value):
        return None
    return ("expected BASE/QUOTE such as BTC/USDT (letters, digits, '.', '_' or '-' on each "
            "side; ':SETTLE' after it for a derivative)")


def _symbols(value: list) -> str | None:
    """``market.symbols``: a non-empty list of distinct symbols; the problem names the bad one."""
    if not value:
        return "expected a non-empty list of symbols such as BTC/USDT"
    for symbol in value:
        problem = symbol_problem(symbol)
        if problem:
            return f"{symbol!r}: {problem}"
    twice = next((s for i, s in enumerate(value) if s in value[:i]), None)
    return None if twice is None else f"{twice!r} is listed twice"


def exchange_options(cfg: Config) -> dict[str, Any]:
    """``market.exchange_options`` (JSON text) as a dict of extra ccxt options; its form (an
    object without credentials) is checked at load by ``_json_object``."""
    text = cfg.get("market.exchange_options")
    return json.loads(text) if text else {}


# Settings whose form a range cannot say: a function returning the problem, or None.
FORMS = {
    "market.timeframe": _parses("shared.market.bars", "timeframe_ms"),
    "market.exchange_options": _json_object,
    "scheduler.timezone": _parses("shared.jobs.schedule", "zone"),
    "batch.dask_scheduler": lambda v: None if v == "" or v.startswith(("tcp://", "tls://",
                                                                         "inproc://"))
    else "expected \"\" (in-process) or a Dask scheduler address such as tcp://host:8786",
    **{p.schedule_key: _parses("shared.jobs.schedule", "parse_schedule")
       for p in programs.jobs()},
    "market.symbols": _symbols,
    "monitor.webhook_url": lambda v: None if v == "" or v.startswith(("http://", "https://"))
    else "expected \"\" (none) or an http:// or https:// URL",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong form."""


# Keys that are gone, and what replaced them: setting one stops the load naming its successor.
MOVED = {"backtest.time_limit_s": "scheduler.backtest_limit_min (minutes), the backtest's one "
         "time limit: the scheduler stops it there, its own watchdog scheduler.stop_grace_s "
         "later"}


def _moved(dotted: str, where: str) -> None:
    if dotted in MOVED:
        raise ConfigError(f"{dotted} ({where}) was removed; set {MOVED[dotted]}")


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
    def reports_dir(self) -> Path:
        return Path(self.get("backtest.reports_dir")).absolute() \
            if self.get("backtest.reports_dir") else self.var_dir / "reports"

    @property
    def model_dir(self) -> Path:
        return Path(self.get("model.dir")).absolute() if self.get("model.dir") \
            else self.var_dir / "models"


def _expected(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _env_list(raw: str, name: str, dotted: str) -> list[str]:
    """A list from the environment: a JSON list of strings (``["BTC/USD","ETH/USD"]``) or
    comma-separated (``BTC/USD,ETH/USD``, items stripped, empty ones dropped)."""
    text = raw.strip()
    if not text.startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} ({dotted}): not a valid JSON list ({exc}); write "
                          "'[\"A/B\", \"C/D\"]' or A/B,C/D") from None
    wrong = [item for item in items if not isinstance(item, str)]   # "[" opens a list
    if wrong:
        raise ConfigError(f"{name}={raw!r} ({dotted}): expected a JSON list of strings, got "
                          f"{wrong[0]!r}")
    return items


def _coerce_env(raw: str, default: Any, name: str, dotted: str = "") -> Any:
    """Environment values are strings; read them as the default's type (a list: see
    ``_env_list``)."""
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
        return _env_list(raw, name, dotted)
    return raw


def _check(dotted: str, value: Any, default: Any, origin: str) -> Any:
    where = f"{dotted} (from {origin})"
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where}: expected {_expected(default)}, got {value!r}")
    if dotted in CHOICES and value not in CHOICES[dotted]:
        raise ConfigError(f"{where}: expected one of {', '.join(CHOICES[dotted])}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        allowed = RANGES.get(dotted)
        if allowed is not None and not allowed.holds(value):
            raise ConfigError(f"{where}: expected a number {allowed}, got {value!r}")
    problem = FORMS[dotted](value) if dotted in FORMS else None
    if problem:
        raise ConfigError(f"{where}: {problem}, got {value!r}")
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
                _moved(f"{section}.{key}", f"from {origin}")
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
    for dotted, value in programs.config_defaults().items():  # the program table's policy
        section, key = dotted.split(".")
        if key in data[section]:
            raise ConfigError(f"{dotted} in {DEFAULTS_PATH}: its default is the program table's "
                              "(shared/programs.py); override it in BDT_CONFIG or BDT_* only")
        data[section][key] = value
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
            _moved(f"{section}.{key}", name)
            raise ConfigError(f"{name}: no config key {section}.{key}")
        overrides.setdefault(section, {})[key] = _coerce_env(raw, data[section][key], name,
                                                             f"{section}.{key}")
        sources.append(name)
    _merge(data, overrides, "environment")
    _check_together(data)
    return Config(data, sources)


def _check_together(data: dict[str, dict[str, Any]]) -> None:
    """Rules that bind two settings; ConfigError names both."""
    strategy, risk = data["strategy"], data["risk"]
    if strategy["allow_short"]:
        raise ConfigError("strategy.allow_short = true: a short sale needs a margin account and "
                          "bitdaytrader has no margin model (spot only: a sell never exceeds "
                          "what is held); set strategy.allow_short = false")
    step = strategy["qty_step"]
    if 0 < risk["max_position_qty"] < step:
        raise ConfigError(f"risk.max_position_qty ({risk['max_position_qty']:g}) is below one lot "
                          f"(strategy.qty_step {step:g}): every entry would be impossible")
    if strategy["name"] == "sma_cross" and strategy["sma_size_mode"] == "qty" \
            and strategy["sma_size"] < step:
        raise ConfigError(f"strategy.sma_size ({strategy['sma_size']:g}) is below one lot "
                          f"(strategy.qty_step {step:g}): every entry would be impossible")
    fast, slow = data["strategy"]["sma_fast"], data["strategy"]["sma_slow"]
    if fast >= slow:
        raise ConfigError(f"strategy.sma_fast ({fast}) must be less than strategy.sma_slow "
                          f"({slow})")
