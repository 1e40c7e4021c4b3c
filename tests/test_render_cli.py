"""Numbers ``bdt`` prints for people (issue "Trading numbers you can trust", case 9): prices to
a sensible precision, money to cents, separators, percentages, no "-0", no word or number cut
— each test a fault seen on the running system. The formatting functions first, then the
verbs as the user types them (a subprocess with BDT_VAR at a tmp dir), or the verb's function
with the bot's reply faked where a stack would be needed."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from shared import formatting
from shared.cli import trading as trading_cli
from shared.cli import verbs
from shared.cli.render import table_lines
from tests.helpers import child_env

SOURCE = "store: BTC/USDT 1700006400000..1701206340000 (20000 bars)"
REASON = ("enter long: er +0.000412 > 0.0003 and p_up 0.6123 ≥ 0.55, vol 0.00123456 under "
          "0.01, size 0.12345 BTC")


def words_whole(text: str, out: str) -> bool:
    """Every word of ``text`` is printed whole somewhere in ``out`` (wrapped is fine)."""
    return set(text.split()) <= set(out.split())


# --- the formatting functions ---------------------------------------------------------------
@pytest.mark.parametrize(("value", "text"), [
    (42657.5407361942, "42,657.54"), (28400, "28,400.00"), (0.000123456, "0.00012346"),
    (1.23456789, "1.23457"), (-0.0, "0.00"), (None, "-")])
def test_a_price_without_a_tick_has_sensible_significant_digits(value, text):
    assert formatting.price(value) == text


def test_a_price_with_a_tick_has_the_ticks_decimals():
    assert formatting.price(42657.5407361942, tick=0.1) == "42,657.5"
    assert formatting.price(0.5, tick=1e-8) == "0.50000000"
    assert formatting.price(42657.54, tick=10) == "42,658"


@pytest.mark.parametrize(("value", "signed", "text"), [
    (-0.001, True, "0.00"), (-0.0, False, "0.00"), (120.5, True, "+120.50"),
    (-1234567.891, False, "-1,234,567.89"), (float("nan"), False, "-")])
def test_money_is_to_cents_with_separators_and_never_minus_zero(value, signed, text):
    assert formatting.money(value, signed=signed) == text


def test_percentages_quantities_counts_and_durations():
    assert formatting.percent(0.012345) == "1.23 %"
    assert formatting.percent(-0.00001, signed=True) == "0.00 %"
    assert formatting.quantity(0.1) == "0.1" and formatting.quantity(20000) == "20,000"
    assert formatting.quantity(0.1, step=0.00001) == "0.10000"
    assert formatting.quantity(0.0000123) == "0.0000123"          # never 1.23e-05
    assert formatting.count(20000) == "20,000"
    assert formatting.duration(3.14159) == "3.1 s" and formatting.duration(185) == "3 min 05 s"


def test_a_metric_reads_as_what_it_is():
    f = formatting.figure
    assert f("total_return", 0.0123456) == "1.23 %"
    assert f("final_equity", 10120.456) == "10,120.46"
    assert f("trades", 30) == "30" and f("bars", 20000) == "20,000"
    assert f("sharpe", 1.234567) == "1.23"
    assert f("avg_trade_duration_min", 125.0) == "2 h 05 min"
    assert f("sharpe", {"withheld": "3.0 days: too short"}) == "withheld: 3.0 days: too short"
    assert f("rejected_entries", {}) == "none"
    assert f("rejected_entries", {"max_position": 1200}) == "max_position: 1,200"
    assert f("promoted", False) == "no"


def test_clip_cuts_at_a_word_with_an_ellipsis_never_inside_a_number():
    assert formatting.clip(SOURCE, 50) == "store: BTC/USDT 1700006400000..1701206340000…"
    assert formatting.clip("short", 50) == "short"
    assert formatting.clip("x" * 80, 50) == "x" * 80


def test_a_table_wraps_text_between_words_to_the_width_and_never_cuts():
    lines = table_lines([["1", SOURCE, "promote"]], ["live", "source", "gate"], 50)
    assert max(len(line) for line in lines) <= 50 and len(lines) > 2
    assert words_whole(SOURCE, "\n".join(lines))
    unlimited = table_lines([["1", SOURCE, "promote"]], ["live", "source", "gate"])
    assert SOURCE in unlimited[1]


def test_axis_labels_share_one_style_and_never_say_minus_zero():
    labels = [label for _, label in formatting.axis(9979.0, 10100.0)]
    assert labels == ["10,000", "10,050", "10,100"]
    drawdown = [label for _, label in formatting.axis(-3.2, -0.0)]
    assert "-0" not in drawdown and drawdown[-1] == "0"
    assert not any("e+" in label or "e-" in label for _, label in formatting.axis(0.0, 1e7))


# --- the verbs ------------------------------------------------------------------------------
def test_models_list_keeps_the_source_whole(var_dir):
    """`bdt models list` printed "… (2000" for a source ending "(20000 bars)"."""
    folder = var_dir / "models" / "versions" / "20261122T031500Z-a1b2c3"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({
        "version": folder.name, "created_at": "2026-11-22T03:15:00+00:00", "source": SOURCE,
        "gate": {"promote": True, "reasons": []}}))
    for columns in ("", "80"):
        env = child_env(var_dir, **({"COLUMNS": columns} if columns else {}))
        done = subprocess.run(["bdt", "models", "list"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert words_whole(SOURCE, done.stdout), done.stdout
        assert "(2000\n" not in done.stdout and "(2000 " not in done.stdout


def test_trades_keep_reasons_whole_and_prices_readable(cfg, monkeypatch, capsys):
    """`bdt trades` cut reasons mid-number."""
    fills = [{"ts": 1_700_006_400_000, "side": "buy", "qty": 0.12345, "price": 42657.5407361942,
              "fee": 5.2661, "realized_pnl": -0.0000004, "reason": REASON}]
    monkeypatch.setattr(trading_cli, "send", lambda cfg, args: fills)
    monkeypatch.setenv("COLUMNS", "100")
    assert trading_cli.cmd_trades(cfg, argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert words_whole(REASON, out), out
    assert "42,657.54" in out and "42657.54" not in out and "-0.00" not in out
    assert max(len(line) for line in out.splitlines()) <= 100


class FakeBot:
    """The bot's `status` reply, as BusClient would return it."""

    reply: dict = {
        "mode": "paper", "feed": "synthetic", "symbol": "BTC/USDT", "bars_published": 20000,
        "decisions": 19990, "risk": {"mode": "normal", "paused": False},
        "last_bar": {"ts": 1_700_006_400_000, "close": 42657.5407361942},
        "last_prediction": {"expected_return": 0.000412, "p_up": 0.61, "volatility": 0.00123,
                            "model_version": "20261122T031500Z-a1b2c3"},
        "position": {"symbol": "BTC/USDT", "qty": 0.1, "avg_price": 42001.123456789,
                     "realized_pnl": 1234.5678},
        "equity": 10123.456789, "cash": 5923.1, "today_pnl": -0.0000001,
        "bar_to_prediction": {}, "bar_to_decision": {}, "decision_to_record": {}}

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> FakeBot:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def call(self, op: str, **args) -> dict:
        return self.reply


def test_bot_status_prints_prices_and_money_for_people(cfg, monkeypatch, capsys):
    """`bdt bot status` printed `close 42657.5407361942`."""
    monkeypatch.setattr(verbs, "BusClient", FakeBot)
    assert trading_cli.cmd_status(cfg, argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert "42657.5407361942" not in out and "close 42,657.54" in out
    assert "42,001.12" in out and "10,123.46" in out and "+1,234.57" in out
    assert "-0.00" not in out and "20,000 bars" in out


def test_the_one_screen_prints_position_and_money_for_people(capsys):
    """`bdt status`'s position line, from the cache snapshot."""
    from shared.cli.status import print_screen

    print_screen({
        "monitor:sample": {"tree": {"memory_process": 64 << 20, "cap": 512 << 20},
                           "enforced": True, "cgroup_mode": "v2", "programs": {},
                           "slices": {}, "cpu_pct": 3.0},
        "bot:position": {"symbol": "BTC/USDT", "qty": 0.1, "avg_price": 42657.5407361942},
        "bot:equity": {"equity": 10123.456789, "today_pnl": -0.0000001}})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("position"))
    assert line == "position +0.1 BTC/USDT @ 42,657.54   equity 10,123.46  today 0.00"


# --- bdt reports show -----------------------------------------------------------------------
def write_report(var_dir, **extra) -> str:
    run_id = "20261122T031500Z-backtest-ml-ab12"
    folder = var_dir / "reports" / run_id
    folder.mkdir(parents=True)
    doc = {"id": run_id, "kind": "backtest", "symbol": "BTC/USDT", "strategy": "ml",
           "start_ts": 1_700_006_400_000, "end_ts": 1_700_265_600_000, "model_version": "m1",
           "metrics": {"total_return": 0.0123456789, "final_equity": 10123.456789,
                       "trades": 30, "bars": 20000, "max_drawdown": 0.0345678,
                       "sharpe": {"withheld": "3.0 days: annualized figures need at least 30 "
                                              "days"},
                       "rejected_entries": {"max_position": 1200}, "profit_factor": 1.23456,
                       "avg_trade": -0.0000001},
           "run": {"wall_s": 1.234, "peak_bytes": 50 << 20}, **extra}
    (folder / "report.json").write_text(json.dumps(doc))
    return run_id


HEADLINE = ["1 position open at the end: 0.10000 BTC/USDT, marked at 28,400.00, unrealised "
            "+120.50", "3 entries reduced by buying power"]
OPEN = [{"symbol": "BTC/USDT", "qty": 0.1, "avg_price": 27195.123456, "mark": 28400.0,
         "unrealized_pnl": 120.4876543, "cost_to_close": 4.2612345}]


def bdt_show(var_dir, run_id: str) -> str:
    done = subprocess.run(["bdt", "reports", "show", run_id], env=child_env(var_dir),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reports_show_formats_the_metrics(var_dir):
    """`bdt reports show` dumped raw floats and dicts."""
    out = bdt_show(var_dir, write_report(var_dir))
    assert "0.0123456789" not in out and "10123.456789" not in out and "{" not in out
    assert "1.23 %" in out and "10,123.46" in out and "20,000" in out and "3.46 %" in out
    assert "withheld: 3.0 days" in out and "max_position: 1,200" in out and "-0" not in out


def test_reports_show_puts_the_headline_and_open_positions_first(var_dir):
    out = bdt_show(var_dir, write_report(var_dir, headline=HEADLINE, open_positions=OPEN))
    lines = out.splitlines()
    first_metric = next(i for i, line in enumerate(lines) if line.startswith("total return"))
    for text in HEADLINE:
        assert any(text in line for line in lines[:first_metric]), out
    position = next(i for i, line in enumerate(lines) if line.startswith("BTC/USDT"))
    assert position < first_metric
    assert "27,195.12" in lines[position] and "+120.49" in lines[position]
    assert "4.26" in lines[position]


def test_an_old_report_without_a_headline_shows_none(var_dir):
    out = bdt_show(var_dir, write_report(var_dir))
    assert "open at the end" not in out.lower() and "headline" not in out.lower()


def test_text_from_outside_never_drives_the_terminal(var_dir):
    """Issue 24 item 7, the CLI side: a report (or a cache value, an alert) can hold escape
    sequences from outside; `bdt` prints them escaped, line breaks kept."""
    run_id = write_report(var_dir, label="\x1b]0;pwned\x07", headline=["\x1b[2Jcleared"])
    done = subprocess.run(["bdt", "reports", "show", run_id], capture_output=True, text=True,
                          env=child_env(var_dir), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b[2Jcleared" in done.stdout and done.stdout.count("\n") > 5
