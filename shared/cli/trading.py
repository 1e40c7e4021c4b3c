"""``bdt bot …``, ``bdt trades``, ``bdt equity``, ``bdt decisions``: the bot and its record."""

from __future__ import annotations

import argparse

from shared.cli.render import print_json, table, ts_text
from shared.cli.verbs import JSON, call_service, op_verb, send, verb
from shared.config import Config
from shared.formatting import count, money, price, quantity
from shared.protocol import bot


@verb("bot status", "mode, feed, last bar and prediction, position, P&L, risk", JSON)
def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    s = call_service(cfg, "bot", "status")
    if args.json:
        print_json(s)
        return 0
    if s.get("error") or s.get("state_error"):
        print(f"NOT TRADING: {s.get('error') or s.get('state_error')}")
    if s.get("trading_blocked"):
        print(f"OPENING BLOCKED: {s['trading_blocked']}")
    for order in s.get("orders_not_final") or []:
        print(f"order not final: {order['client_id']} {order['side']} "
              f"{quantity(order['qty'])} "
              f"({order['status']})")
    if s.get("pnl_note"):
        print(f"note: {s['pnl_note']}")
    risk = s.get("risk", {})
    bar, pred, pos = s.get("last_bar") or {}, s.get("last_prediction") or {}, s.get("position", {})
    print(f"mode {s['mode']}  feed {s['feed']} {s['symbol']}  resource mode "
          f"{risk.get('mode', '-')}  {'PAUSED' if risk.get('paused') else 'active'}"
          + (f"  KILLED: {risk.get('kill_reason')}" if risk.get("killed") else ""))
    print(f"last bar   {ts_text(bar.get('ts'))}  close {price(bar.get('close'))}"
          f"  ({count(s['bars_published'])} bars, {count(s['decisions'])} decisions)")
    if pred:
        print(f"prediction er {pred['expected_return']:+.5f}  p_up {pred['p_up']:.3f}  "
              f"vol {pred['volatility']:.5f}  model {pred['model_version']}")
    if pos:
        print(f"position   {quantity(pos['qty'], signed=True)} @ {price(pos['avg_price'])}  "
              f"realized {money(pos['realized_pnl'], signed=True)}")
        print(f"equity     {money(s['equity'])}  cash {money(s['cash'])}  "
              f"today {money(s['today_pnl'], signed=True)}")
    pred, lat = s.get("bar_to_prediction", {}), s.get("bar_to_decision", {})
    rec = s.get("decision_to_record", {})
    if lat.get("n"):
        print(f"bar→prediction p50 {pred.get('p50_us')} µs  p99 {pred.get('p99_us')} µs;  "
              f"bar→decision p50 {lat['p50_us']} µs  p99 {lat['p99_us']} µs;  "
              f"then execution + record p50 {rec.get('p50_us')} µs  p99 {rec.get('p99_us')} µs")
    return 0


def _control(cfg: Config, args: argparse.Namespace) -> int:
    reply = send(cfg, args)
    print(f"{args.verb.op.name}: done" + (" (already flat)" if reply.get("flattened") is False
                                          else ""))
    return cmd_status(cfg, argparse.Namespace(json=False))


for _name in ("pause", "resume", "flatten"):
    op_verb(bot.OPS, _name)(_control)


@op_verb(bot.OPS, "trades", JSON)
def cmd_trades(cfg: Config, args: argparse.Namespace) -> int:
    fills = send(cfg, args)
    if args.json:
        print_json(fills)
        return 0
    rows = [[ts_text(f["ts"]), f["side"], quantity(f["qty"]), price(f["price"]),
             money(f["fee"]), money(f["realized_pnl"], signed=True), f["reason"]]
            for f in fills]
    table(rows, ["time", "side", "qty", "price", "fee", "realized", "reason"])
    print(f"{len(fills)} fill(s)")
    return 0


@op_verb(bot.OPS, "equity", JSON)
def cmd_equity(cfg: Config, args: argparse.Namespace) -> int:
    curve = send(cfg, args)
    if args.json:
        print_json(curve)
        return 0
    step = max(1, len(curve) // 20)
    rows = [[ts_text(c["ts"]), money(c["equity"]), money(c["cash"]),
             money(c["position_value"])] for c in curve[::step]]
    table(rows, ["time", "equity", "cash", "position"])
    if curve:
        first, last = curve[0]["equity"], curve[-1]["equity"]
        print(f"{count(len(curve))} points; first {money(first)}, last {money(last)}")
    return 0


@op_verb(bot.OPS, "decisions", JSON)
def cmd_decisions(cfg: Config, args: argparse.Namespace) -> int:
    rows_in = send(cfg, args)
    if args.json:
        print_json(rows_in)
        return 0
    rows = [[ts_text(d["bar_ts"]), price(d["close"]), d["action"],
             quantity(d["target_qty"], signed=True), d["reason"]] for d in rows_in]
    table(rows, ["bar", "close", "action", "target", "reason"])
    print(f"{len(rows_in)} decision(s)")
    return 0
