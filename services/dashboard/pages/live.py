"""Live: the price with the bot's entries and exits, its position, equity, today's P&L and
the modes — from the bot's trading state (read-only) and the monitor's cache snapshot."""

import pandas as pd
import streamlit as st

from services.dashboard import charts, ui

cfg = ui.config()
st.title("Live")
symbols = cfg.get("market.symbols")
left, right = st.columns(2)
symbol = left.selectbox("symbol", symbols) if len(symbols) > 1 else symbols[0]
with right:
    hours = ui.window("live_window", longest="24 hours")     # every bar: a day at most


@st.fragment(run_every=15)
def live() -> None:
    t = ui.trading(ui.var(), symbol, hours)
    snap = ui.snapshot(ui.var())
    if "error" in t:
        st.info(t["error"])
        return
    risk, pos, latest = t["risk"], t["position"], t["latest"]
    resource = (snap.get("mode") or {}).get("mode") or risk.get("mode", "-")
    flags = [f for f in ("paused", "killed", "day_loss_hit") if risk.get(f)]
    st.markdown(f"**{cfg.get('bot.mode')}** trading · resource mode **{ui.plain(resource)}** · "
                f"last bar {ui.when(t['last_bar_ts'])} UTC"
                + (f" · :red[{', '.join(flags)}]" if flags else "")
                + (f" · {ui.plain(risk['kill_reason'])}" if risk.get("kill_reason") else ""))
    cols = st.columns(5)
    cols[0].metric("last close", "-" if t["last_close"] is None else f"{t['last_close']:,.2f}")
    side = "flat" if abs(pos["qty"]) < 1e-12 else ("long" if pos["qty"] > 0 else "short")
    at = "" if side == "flat" else f" @ {pos['avg_price']:,.2f}"
    cols[1].metric(f"position, {side}{at}", f"{pos['qty']:+.6g}")
    cols[2].metric("equity", "-" if latest is None else f"{latest['equity']:,.2f}")
    cols[3].metric("cash", "-" if latest is None else f"{latest['cash']:,.2f}")
    pnl = t["today_pnl"]
    cols[4].metric("today's P&L", "-" if pnl is None else f"{pnl:+,.2f}",
                   None if pnl is None else f"{pnl:+,.2f}")
    if t["prices"]:
        st.subheader("Price, entries and exits")
        st.altair_chart(charts.price(t["prices"], t["fills"]), width="stretch")
    else:
        st.info("no decided bar in this window")
    if t["equity"]:
        st.subheader("Equity")
        st.altair_chart(charts.equity(t["equity"]), width="stretch")
    st.subheader(f"Fills in the window ({len(t['fills'])} of {t['fills_total']} in all)")
    if t["fills"]:
        df = pd.DataFrame(t["fills"]).assign(time=lambda d: d["ts"].map(ui.when))
        st.dataframe(df[["time", "kind", "side", "qty", "price", "fee", "realized_pnl",
                         "reason"]].iloc[::-1], hide_index=True, width="stretch")
    if "error" in snap:
        st.caption(snap["error"])


live()
