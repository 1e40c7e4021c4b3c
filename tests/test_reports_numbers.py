"""The numbers of report.html, the walk-forward report and the dashboard's charts (issue
"Trading numbers you can trust", case 9): axes in one style without "-0", prices and money for
people, the headline and the open positions first, a header that says what it does not know,
a walk-forward report whose trades and monthly returns agree with its metrics."""

from __future__ import annotations

import html
import math
import re

import pytest

from services.dashboard import charts
from shared.backtest.jobs import run_walkforward
from shared.backtest.report import render_html
from shared.config import load_config
from shared.market.synthetic import SyntheticMarket
from shared.storage.bar_store import open_store

M, DAY = 60_000, 86_400_000
T0 = 1_700_006_400_000
HEADLINE = ["1 position open at the end: 0.10000 BTC/USDT, marked at 28,400.00, unrealised "
            "+120.50", "62 % of the range lies inside the model's training window (in sample)"]
OPEN = [{"symbol": "BTC/USDT", "qty": 0.1, "avg_price": 27195.123456, "mark": 28400.0,
         "unrealized_pnl": 120.4876543, "cost_to_close": 4.2612345}]


def document(**extra) -> dict:
    """A backtest report whose equity crosses 10,000 (9,979 … 10,100) and whose drawdown
    starts at zero."""
    chart = [{"ts": T0 + i * DAY, "equity": e, "drawdown": d} for i, (e, d) in
             enumerate([(10000.0, 0.0), (10100.0, 0.0), (9979.0, 0.01198), (10050.5, 0.0049)])]
    trades = [{"entry_ts": T0, "exit_ts": T0 + DAY, "side": "long", "qty": 0.0000123,
               "entry_price": 42657.5407361942, "exit_price": 0.000123456, "pnl": -0.0000001,
               "fees": 1234.5, "entry_reason": "enter", "exit_reason": "exit"}]
    return {"id": "r1", "kind": "backtest", "symbol": "BTC/USDT", "strategy": "ml",
            "start_ts": T0, "end_ts": T0 + 4 * DAY, "model_version": "m1", "overrides": {},
            "metrics": {"total_return": 0.00505, "final_equity": 10050.5, "trades": 1},
            "monthly_returns": [{"month": "2023-11", "return": -0.0000001}],
            "run": {"wall_s": 1.5, "peak_bytes": 50 << 20}, "trades": trades,
            "equity_chart": chart, **extra}


def svg_labels(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", page)]


def test_chart_axes_share_one_number_style_and_never_say_minus_zero():
    """The axes mixed `1.01e+04` and `9,979`, and showed "-0"."""
    labels = [t for t in svg_labels(render_html(document())) if not t[:4].isdigit()
              or "," in t]
    assert labels, "no axis labels"
    assert not any("e+" in t or "e-" in t for t in labels), labels
    assert "-0" not in labels and "-0.00" not in labels, labels
    assert "10,000" in labels and "10,100" in labels


def test_trades_and_months_are_shown_for_people():
    page = render_html(document())
    assert "42,657.54" in page and "0.00012346" in page and "0.0000123" in page
    assert "1,234.50" in page and "e-05" not in page and "-0.00" not in page


def test_the_headline_and_open_positions_come_first():
    page = render_html(document(headline=HEADLINE, open_positions=OPEN))
    equity_at = page.index("<h2>Equity")
    for text in HEADLINE:
        assert 0 < page.index(html.escape(text)) < equity_at
    row = page.index("28,400.00")
    assert row < equity_at
    assert "27,195.12" in page[:equity_at] and "+120.49" in page[:equity_at]


def test_an_old_report_has_no_headline_section():
    page = render_html(document())
    assert "Open at the end" not in page and "class=headline" not in page


def test_a_header_without_figures_says_so_in_words():
    """The walk-forward report's header read "- s, peak 0 MiB"."""
    page = render_html(document(run={}))
    header = re.search(r"<p class=muted>report .*?</p>", page, re.S).group(0)
    assert "- s" not in header and "0 MiB" not in header
    assert "not recorded" in header
    assert "1.5 s" in render_html(document()) and "50 MiB" in render_html(document())


def test_the_dashboard_charts_format_like_the_reports():
    """Tooltips said `1.01e+4`; the drawdown series held -0.0."""
    points = document()["equity_chart"]
    rows = next(iter(charts.drawdown(points).to_dict()["datasets"].values()))
    assert all(math.copysign(1.0, r["drawdown_pct"]) > 0 for r in rows if r["drawdown_pct"] == 0)
    assert [r["drawdown_pct_shown"] for r in rows] == ["0.00 %", "0.00 %", "-1.20 %", "-0.49 %"]
    equity = charts.equity(points).to_dict()
    assert [r["equity_shown"] for r in next(iter(equity["datasets"].values()))] == \
        ["10,000.00", "10,100.00", "9,979.00", "10,050.50"]
    assert ",.4g" not in str(equity)
    prices = charts.price([{"ts": T0, "close": 42657.5407361942, "action": "hold"}],
                          [{"ts": T0, "side": "buy", "kind": "entry", "qty": 0.0000123,
                            "price": 42657.5407361942, "realized_pnl": -0.0000001,
                            "reason": "enter"}]).to_dict()
    fills = next(iter(r for r in prices["datasets"].values() if "qty" in r[0]))[0]
    assert (fills["price_shown"], fills["qty_shown"], fills["realized_pnl_shown"]) == \
        ("42,657.54", "0.0000123", "0.00")
    tips = {t["field"] for t in prices["layer"][1]["encoding"]["tooltip"]}
    assert {"qty_shown", "price_shown", "realized_pnl_shown"} <= tips and "qty" not in tips


# --- the walk-forward report ----------------------------------------------------------------
@pytest.fixture(scope="module")
def walkforward(tmp_path_factory):
    """40 days of a synthetic market, walked forward in 3 folds of 2 days."""
    var = tmp_path_factory.mktemp("wfr") / "var"
    cfg = load_config({"BDT_VAR": str(var)})
    store = open_store(cfg)
    store.insert_frame("BTC/USDT", SyntheticMarket("BTC/USDT", M, 17, start_ts=T0)
                       .frame(40 * 1440))
    store.compact("BTC/USDT", 0)
    store.close()
    cfg = load_config({"BDT_VAR": str(var), "BDT_WALKFORWARD__TRAIN_DAYS": "6",
                       "BDT_WALKFORWARD__TEST_DAYS": "2", "BDT_WALKFORWARD__FOLDS": "3",
                       "BDT_WALKFORWARD__MIN_TRADES": "1", "BDT_WALKFORWARD__MIN_DSR": "0"})
    return run_walkforward(cfg, "BTC/USDT")


def test_walkforward_trades_and_months_agree_with_its_metrics(walkforward):
    """The report showed "Trades (0)" and no monthly returns while its metrics said 30."""
    doc, folder = walkforward
    trades = doc["metrics"]["trades"]
    assert trades > 0 and len(doc["trades"]) == trades
    compounded = math.prod(1 + m["return"] for m in doc["monthly_returns"]) - 1
    assert doc["monthly_returns"] and compounded == pytest.approx(
        doc["metrics"]["oos_total_return"], abs=1e-9)
    page = (folder / "report.html").read_text()
    assert f"Trades ({trades})" in page
    header = re.search(r"<p class=muted>report .*?</p>", page, re.S).group(0)
    assert "- s" not in header and "peak 0 MiB" not in header


# --- one schema for both kinds --------------------------------------------------------------
def test_both_report_kinds_fit_the_one_schema(walkforward):
    """A backtest report is the common fields; a walk-forward report the common fields plus
    its folds and gate — both built by shared.backtest.report, as written and as read back."""
    from shared.backtest.jobs import run_and_report
    from shared.backtest.report import COMMON_FIELDS, SECTIONS, load_report, validate
    from shared.backtest.runner import BacktestSpec

    wf, wf_folder = walkforward
    cfg = load_config({"BDT_VAR": str(wf_folder.parent.parent)})
    bt, _ = run_and_report(cfg, BacktestSpec("BTC/USDT", T0 + 30 * DAY, T0 + 31 * DAY,
                                             {"strategy.name": "sma_cross"}))
    for doc in (wf, bt, load_report(cfg.reports_dir, wf["id"]),
                load_report(cfg.reports_dir, bt["id"])):
        assert validate(doc) == [], doc["kind"]
    assert list(bt) == list(COMMON_FIELDS)
    assert list(wf) == [*COMMON_FIELDS, *SECTIONS["walkforward"]]


def test_a_document_off_the_schema_is_caught_and_not_written(walkforward, tmp_path):
    from shared.backtest.report import validate, write_report

    doc, _ = walkforward
    assert validate({**doc, "html_extra": "<h2>"}) == [
        "html_extra: not a field of a walkforward report"]
    assert validate({k: v for k, v in doc.items() if k != "folds"}) == ["folds: missing"]
    assert validate({**doc, "start_ts": "yesterday"}) == ["start_ts: str, not int"]
    assert validate({**doc, "folds": [{"index": 0}]})[0].startswith("folds[0]: missing train_")
    assert validate({**doc, "kind": "backtest"}) == [
        "folds: not a field of a backtest report", "gate: not a field of a backtest report"]
    with pytest.raises(ValueError, match="does not fit the schema: gate: missing"):
        write_report({k: v for k, v in doc.items() if k != "gate"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_report_html_draws_a_walkforward_from_its_document_alone(walkforward):
    """The folds and the gate come from the document's own fields (no HTML stored in it)."""
    doc, folder = walkforward
    page = render_html(doc)
    assert page == (folder / "report.html").read_text()
    assert "Folds: out-of-sample return" in page and "Promotion gate" in page
    assert page.count("<tr><td>") >= len(doc["folds"])
    assert "Folds:" not in render_html({**doc, "kind": "backtest"})
