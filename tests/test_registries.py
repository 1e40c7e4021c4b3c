"""The strategy and feed registries: each name config accepts (and ``bdt backtest
--strategy`` offers) is a registered class, each registered class is buildable from the
settings, and a name nothing is registered under is an error naming the choices — never a
fallback to another strategy or feed."""

import polars as pl
import pytest

import shared.market.feeds as feeds
import shared.trading.strategies as strategies
from shared.config import CHOICES, Config, ConfigError, load_config
from shared.market.feeds import feed_kinds, open_feed, register_feed
from shared.market.synthetic import SyntheticMarket
from shared.trading.strategies import (
    MlStrategy,
    SmaCross,
    register_strategy,
    strategy_class,
    strategy_from_config,
    strategy_names,
)


def with_setting(dotted: str, value: str, env: dict[str, str] | None = None) -> Config:
    """The defaults (and ``env``) with ``dotted`` set to ``value`` unchecked (as a bad file
    would have been, had config not refused it)."""
    section, key = dotted.split(".")
    data = load_config(env or {}).as_dict()
    data[section][key] = value
    return Config(data, [])


@pytest.fixture
def registry(monkeypatch):
    """A copy of the strategy registry for the test to add to."""
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))


def backtest_option(flag: str) -> dict:
    import shared.cli  # noqa: F401  (declares every verb)
    from shared.cli.verbs import VERBS

    return dict(VERBS["backtest"].options)[(flag,)]


# --- strategies ----------------------------------------------------------------------------

def test_config_strategy_names_are_the_registry():
    """Drift: a strategy registered but not in config's choices (or the reverse) fails."""
    assert CHOICES["strategy.name"] == strategy_names()


def test_backtest_cli_strategy_choices_are_the_registry():
    """Drift: ``bdt backtest --strategy`` offers exactly the registered strategies."""
    assert tuple(backtest_option("--strategy")["choices"]) == strategy_names()


@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_builds_from_the_settings(name):
    cls = strategy_class(name)
    built = strategy_from_config(with_setting("strategy.name", name))
    assert type(built) is cls and built.name == name
    assert isinstance(cls.needs_prediction, bool)
    assert cls.bytes_per_bar > 0                     # the backtest's first chunk is sized by it


def test_the_built_ins_are_built_as_before():
    cfg = load_config({})
    ml = strategy_from_config(cfg)
    assert type(ml) is MlStrategy and ml.params == MlStrategy.from_config(cfg).params
    sma = strategy_from_config(load_config({"BDT_STRATEGY__NAME": "sma_cross",
                                            "BDT_STRATEGY__SMA_FAST": "3",
                                            "BDT_STRATEGY__SMA_SLOW": "7"}))
    assert isinstance(sma, SmaCross) and (sma.fast, sma.slow) == (3, 7)
    assert (MlStrategy.bytes_per_bar, SmaCross.bytes_per_bar) == (1200.0, 600.0)


def test_an_unknown_strategy_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"strategy.name: expected one of ml, sma_cross, "
                                          r"got 'breakout'"):
        strategy_from_config(with_setting("strategy.name", "breakout"))


def test_a_registered_class_is_built_by_its_name(registry):
    @register_strategy
    class Breakout(SmaCross):
        name = "breakout"
        bytes_per_bar = 700.0

    assert strategy_names()[-1] == "breakout"
    built = strategy_from_config(with_setting("strategy.name", "breakout"))
    assert type(built) is Breakout
    assert CHOICES["strategy.name"] != strategy_names()    # the drift test would now fail


def test_registering_refuses_a_taken_name_and_a_class_that_is_not_a_strategy(registry):
    assert register_strategy(SmaCross) is SmaCross               # the same class again: no-op
    with pytest.raises(ValueError, match="strategy 'ml' is already registered "
                                         r"\(shared.trading.strategies.MlStrategy\)"):
        register_strategy(type("Other", (SmaCross,), {"name": "ml"}))
    with pytest.raises(TypeError, match="Half is not a strategy: no bytes_per_bar, "
                                        "from_config"):
        register_strategy(type("Half", (), {"name": "half", "needs_prediction": False,
                                            "decide": lambda self: None}))


# --- feeds ---------------------------------------------------------------------------------

@pytest.fixture
def feed_registry(monkeypatch):
    """A copy of the feed registry for the test to add to."""
    monkeypatch.setattr(feeds, "_KINDS", dict(feeds._KINDS))


def test_config_feed_kinds_are_the_registry():
    """Drift: a feed kind registered but not in config's choices (or the reverse) fails."""
    assert CHOICES["market.feed"] == feed_kinds()


@pytest.mark.parametrize("kind", feed_kinds())
def test_every_registered_feed_kind_opens_its_feed(kind, var_dir):
    if kind == "live":
        pytest.importorskip("ccxt.pro")
    path = var_dir / "bars.csv"
    SyntheticMarket("X", 60_000, seed=1).frame(5) \
        .with_columns(pl.from_epoch("ts", time_unit="ms")).write_csv(path)
    feed = open_feed(load_config({"BDT_VAR": str(var_dir), "BDT_MARKET__FEED": kind,
                                  "BDT_MARKET__REPLAY_PATH": str(path)}), "BTC/USDT")
    assert feed.name == kind


def test_an_unknown_feed_kind_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"market.feed: expected one of replay, synthetic, "
                                          r"live, got 'kafka'"):
        open_feed(with_setting("market.feed", "kafka"), "BTC/USDT")


def test_a_registered_feed_kind_is_opened_by_its_name(feed_registry):
    calls = []

    @register_feed("kafka")
    def open_kafka(cfg, symbol, timeframe, start_after, stored_until):
        calls.append((symbol, timeframe, start_after, callable(stored_until)))
        return "the kafka feed"

    assert feed_kinds()[-1] == "kafka"
    assert open_feed(with_setting("market.feed", "kafka"), "X", start_after=5) == \
        "the kafka feed"
    assert calls == [("X", 60_000, 5, True)]
    assert CHOICES["market.feed"] != feed_kinds()           # the drift test would now fail
    assert register_feed("kafka")(open_kafka) is open_kafka  # the same opener again: no-op
    with pytest.raises(ValueError, match="feed kind 'replay' is already registered "
                                         r"\(shared.market.feeds._open_replay\)"):
        register_feed("replay")(open_kafka)
