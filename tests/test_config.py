import json

import pytest

from shared.config import ConfigError, load_config


def test_defaults_load_with_their_types():
    cfg = load_config({})
    assert cfg.get("bus.transport") == "ipc"
    assert cfg.get("bus.max_message_bytes") == 1 << 20
    assert cfg.run_dir.name == "run"


def test_environment_overrides_are_typed():
    cfg = load_config({"BDT_CACHE__MAX_ITEMS": "5_000", "BDT_LOG__LEVEL": "DEBUG",
                       "BDT_VAR": "/tmp/x"})
    assert cfg.get("cache.max_items") == 5000
    assert cfg.get("log.level") == "DEBUG"
    assert str(cfg.var_dir) == "/tmp/x"
    assert "BDT_CACHE__MAX_ITEMS" in cfg.sources


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BDT_CACHE__MAX_ITEMS": "lots"}, "BDT_CACHE__MAX_ITEMS='lots': expected an integer"),
        ({"BDT_CACHE__NOPE": "1"}, "no config key cache.nope"),
        ({"BDT_BUS__TRANSPORT": "udp"},
         "bus.transport (from environment): expected one of ipc, tcp"),
        ({"BDT_BUS__REQUEST_TIMEOUT_MS": "1"}, "bus.request_timeout_ms (from environment): "
                                               "expected a number ≥ 10"),
    ],
)
def test_bad_environment_values_name_the_key(env, needle):
    with pytest.raises(ConfigError) as err:
        load_config(env)
    assert needle in str(err.value)


def test_config_file_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cache\nmax_items = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config({"BDT_CONFIG": str(bad)})
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[cache]\nmax_items = "many"\n')
    with pytest.raises(ConfigError, match=r"cache.max_items \(from .*wrong.toml\): expected an "
                                          r"integer, got 'many'"):
        load_config({"BDT_CONFIG": str(wrong)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[cahce]\nmax_items = 3\n")
    with pytest.raises(ConfigError, match="cahce .*unknown section"):
        load_config({"BDT_CONFIG": str(unknown)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"BDT_CONFIG": str(tmp_path / "missing.toml")})


def test_file_then_environment_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmax_items = 10\nmax_key_bytes = 64\n")
    cfg = load_config({"BDT_CONFIG": str(path), "BDT_CACHE__MAX_ITEMS": "20"})
    assert cfg.get("cache.max_items") == 20
    assert cfg.get("cache.max_key_bytes") == 64


# --- issue 12 case 2: every setting validated at load, with its range ----------------------
@pytest.mark.parametrize("name, value, text", [
    ("BDT_RISK__MAX_DRAWDOWN", "5", "risk.max_drawdown (from environment): expected a number "
                                    "in (0, 1), got 5.0"),
    ("BDT_MARKET__TIMEFRAME", "0m", "market.timeframe (from environment): timeframe '0m'"),
    ("BDT_MARKET__REPLAY_SPEED", "-5", "market.replay_speed (from environment): expected a "
                                       "number ≥ 0, got -5.0"),
    ("BDT_PAPER__FEE_TAKER", "nan", "paper.fee_taker (from environment): expected a finite"),
    ("BDT_MARKET__SYMBOLS", "", "market.symbols"),
])
def test_a_value_out_of_range_is_refused_at_load_naming_key_value_and_range(name, value, text):
    with pytest.raises(ConfigError) as info:
        load_config({name: value})
    assert text in str(info.value)


def test_bdt_config_show_refuses_what_a_service_would_crash_on(var_dir):
    import subprocess

    from tests.helpers import child_env

    out = subprocess.run(["bdt", "config", "show"], capture_output=True, text=True,
                         env=child_env(var_dir, BDT_RISK__MAX_DRAWDOWN="5"), timeout=60)
    assert out.returncode == 2
    assert "risk.max_drawdown" in out.stderr and "Traceback" not in out.stderr


def test_config_ranges_and_the_trading_types_agree():
    """The ranges at load and the checks the trading types make when built are two copies of
    one rule: every edge the config accepts, the types accept; just past it, both refuse."""
    from shared.config import RANGES, Config
    from shared.trading.fills import FillModel
    from shared.trading.risk import RiskLimits
    from shared.trading.strategies import strategy_from_config
    from shared.trading.strategy import StrategyParams

    def sma(cfg):
        data = cfg.as_dict()
        data["strategy"]["name"] = "sma_cross"
        return strategy_from_config(Config(data, []))

    builders = {"strategy": StrategyParams.from_config, "risk": RiskLimits.from_config,
                "paper": FillModel.from_config}
    defaults = load_config({})
    for dotted, allowed in RANGES.items():
        section, key = dotted.split(".")
        if section not in builders or key == "starting_cash":
            continue
        build = sma if key.startswith("sma_") else builders[section]
        fixed = {"BDT_STRATEGY__SMA_FAST": "1"} if key == "sma_slow" else {}
        is_int = isinstance(defaults.get(dotted), int)
        step = 1 if is_int else 1e-6
        for edge, open_, sign in ((allowed.lo, allowed.lo_open, 1), (allowed.hi, allowed.hi_open,
                                                                     -1)):
            if edge is None:
                continue
            inside = edge + sign * step if open_ else edge
            outside = edge if open_ else edge - sign * step
            if is_int:
                inside, outside = int(inside), int(outside)
            ok = load_config({**fixed, f"BDT_{section.upper()}__{key.upper()}": str(inside)})
            build(ok)                                   # the type accepts the edge
            with pytest.raises(ConfigError):
                load_config({**fixed, f"BDT_{section.upper()}__{key.upper()}": str(outside)})
            bad = {**ok.as_dict()}
            bad[section] = {**bad[section], key: outside}
            with pytest.raises(ValueError, match=key):
                build(Config(bad, []))                  # and refuses past it


# --- issue "Trading numbers you can trust", case 8: list values and symbols -----------------
def test_list_values_from_the_environment_read_as_json_or_comma_separated():
    for raw in ('["backtest", "walkforward"]', "backtest, walkforward"):
        assert load_config({"BDT_MONITOR__NEVER_RESTART": raw}).get(
            "monitor.never_restart") == ["backtest", "walkforward"]
    assert load_config({"BDT_CACHE__LIVE_NAMESPACES": '["a:b", "c,d"]'}).get(
        "cache.live_namespaces") == ["a:b", "c,d"]                # a comma inside JSON is kept
    with pytest.raises(ConfigError, match=r"BDT_MONITOR__NEVER_RESTART='\[\"backtest\"' "
                                          r"\(monitor.never_restart\): not a valid JSON list"):
        load_config({"BDT_MONITOR__NEVER_RESTART": '["backtest"'})
    with pytest.raises(ConfigError, match="expected a JSON list of strings, got None"):
        load_config({"BDT_MONITOR__NEVER_RESTART": "[null]"})


@pytest.mark.parametrize("symbol", ["BTC/USDT", "1000SHIB/USDT", "BTC/USDT:USDT", "stETH/ETH",
                                    "BTC-PERP/USD", "BTC/USD:BTC-231229"])
def test_symbols_as_ccxt_writes_them_are_accepted(symbol):
    assert load_config({"BDT_MARKET__SYMBOLS": symbol}).get("market.symbols") == [symbol]


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTC/", "/USDT", "BTC/USDT/EUR", "BTC /USDT",
                                    "BTC/USDT:", "BTC\\USDT", "'BTC/USDT'", "BTC/USD;rm"])
def test_symbols_that_are_not_base_quote_are_refused_naming_them(symbol, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f"[market]\nsymbols = [{json.dumps(symbol)}]\n")   # a TOML string
    with pytest.raises(ConfigError) as err:
        load_config({"BDT_CONFIG": str(path)})
    assert f"market.symbols (from {path}): {symbol!r}: expected BASE/QUOTE" in str(err.value)
