"""The one alert pipeline (issue 24): kinds declared once (shared/protocol/alerts.py), raised
through ``raise_alert`` by any service, the monitor the one sink — and its metrics endpoint
bound again once its port is free.

- the declarations: each kind's severity, sources and figures; ``raise_alert`` refuses what
  does not fit; docs/monitor.md names every kind;
- the sink: the same kind and subject from two sources within the rate limit is one alert
  (stored once, sent once); a database from before ``sources`` gains the column;
- fault: the bot's and the scheduler's alerts were published with nothing subscribed — the
  real monitor process, on the real bus, stores them (``bdt alerts``) and POSTs them;
- fault: a metrics port busy at start was never bound again — now it is, with an alert.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest

from services.monitor.alerts import AlertBook
from services.monitor.store import MonitorDB
from shared.bus.client import BusClient, wait_for
from shared.bus.endpoints import SERVICES
from shared.bus.streams import Publisher
from shared.config import load_config
from shared.protocol.alerts import KINDS, AlertError, raise_alert
from shared.protocol.events import SEVERITIES, parse_event
from tests.helpers import REPO, child_env, start_module, stop_process, wait_until
from tests.test_monitor_units import Sent, alert, webhook_server  # noqa: F401 - a fixture


# --- the declarations ------------------------------------------------------------------------
def test_every_kind_is_declared_whole_and_documented():
    doc = (REPO / "docs" / "monitor.md").read_text()
    for kind in KINDS.values():
        assert kind.severity in SEVERITIES and kind.description, kind.name
        assert kind.sources and set(kind.sources) <= set(SERVICES), kind.name
        assert f"| `{kind.name}` |" in doc, f"docs/monitor.md: no row for {kind.name}"


class Recorder:
    name = "bot"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def publish(self, stream: str, fields: dict) -> None:
        self.sent.append((stream, fields))


def test_raise_alert_publishes_a_checked_event_and_refuses_what_is_not_declared():
    bot = Recorder()
    fields = raise_alert(bot, "order_unresolved", "bot", "order x unresolved", client_id="x",
                         status="unknown", age_s=130)
    assert bot.sent == [("events", fields)]
    assert parse_event(fields)[1] == {
        "kind": "alert", "alert": "order_unresolved", "severity": "critical", "subject": "bot",
        "message": "order x unresolved", "source": "bot",
        "figures": {"client_id": "x", "status": "unknown", "age_s": 130}}
    with pytest.raises(AlertError, match="undeclared alert kind 'disk_full'"):
        raise_alert(bot, "disk_full", "bot", "no room")
    with pytest.raises(AlertError, match="figure 'age_s'"):
        raise_alert(bot, "order_unresolved", "bot", "x", client_id="x", status="sent")
    with pytest.raises(AlertError, match="severity"):
        raise_alert(bot, "order_unresolved", "bot", "x", severity="fatal", client_id="x",
                    status="sent", age_s=1)
    with pytest.raises(AlertError, match="subject"):
        raise_alert(bot, "supervisor", "", "x")
    with pytest.raises(AlertError, match="plain values"):
        raise_alert(bot, "supervisor", "supervisord", "x", when=object())
    assert len(bot.sent) == 1


# --- the sink -------------------------------------------------------------------------------
def test_one_kind_and_subject_from_two_sources_within_the_interval_is_one_alert(tmp_path):
    """The scheduler and the monitor both see one OOM kill in the batch slice: one row with
    both sources and both figures, one POST. Later, or from the same source again, or of
    another subject, it is another alert."""
    clock = [0.0]
    posted: list[dict] = []
    db = MonitorDB(tmp_path / "monitor.db", 7, 90)
    book = AlertBook(db, 300, webhook=Sent(posted), clock=lambda: clock[0])  # type: ignore[arg-type]
    book.take(alert("oom_kill", "batch", "backtest was OOM-killed", source="scheduler",
                    job="backtest", run_id=3))
    clock[0] += 4
    merged = book.take(alert("oom_kill", "batch", "slice batch: 1 OOM kill", oom_kills=1))
    assert merged["sources"] == ["scheduler", "monitor"] and merged["figures"]["job"] == \
        "backtest" and merged["figures"]["oom_kills"] == 1
    (row,) = db.alerts(kind="oom_kill")
    assert row["sources"] == ["scheduler", "monitor"] and row["figures"]["oom_kills"] == 1
    assert row["message"] == "backtest was OOM-killed" and row["notified"]
    assert len(posted) == 1 and book.counts["oom_kill"] == 1 and book.merged == 1
    book.take(alert("oom_kill", "batch", "again", oom_kills=2))           # the monitor again
    book.take(alert("oom_kill", "bot", "another slice"))
    clock[0] += 300
    book.take(alert("oom_kill", "batch", "later", source="scheduler"))
    assert [a["sources"] for a in db.alerts(kind="oom_kill")] == [
        ["scheduler", "monitor"], ["monitor"], ["monitor"], ["scheduler"]]
    assert len(posted) == 2                       # the rest within the kind's rate limit
    db.close()


def test_a_database_from_before_sources_gains_the_column(tmp_path):
    path = tmp_path / "monitor.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE alerts (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                    "kind TEXT NOT NULL, severity TEXT NOT NULL, subject TEXT NOT NULL, "
                    "message TEXT NOT NULL, figures TEXT NOT NULL, notified INTEGER NOT NULL)")
        con.execute("INSERT INTO alerts VALUES (1, 5, 'crash', 'warning', 'bot', 'old', '{}', 1)")
    con.close()
    db = MonitorDB(path, 7, 90)
    assert not db.error
    db.add_alert(6, "oom_kill", "critical", "batch", "new", {}, True, ["scheduler"])
    assert [(a["message"], a["sources"]) for a in db.alerts()] == [
        ("old", ["monitor"]), ("new", ["scheduler"])]
    db.close()


# --- the real monitor process on the real bus ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bdt(var_dir, *args: str) -> subprocess.CompletedProcess:
    """``bdt ARGS`` as a user types it, against the var directory of the test."""
    return subprocess.run(["bdt", *args], env=child_env(var_dir), capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def stored(cfg, kind: str) -> list[dict]:
    with BusClient("monitor", cfg, timeout_ms=2000) as client:
        return client.call("alerts", kind=kind)


def test_the_bots_and_the_schedulers_alerts_reach_the_monitor(var_dir, webhook_server):  # noqa: F811
    """Before, the bot and the scheduler published their alerts on ``events`` and nothing
    subscribed: they never reached monitor.db, ``bdt alerts`` or the webhook."""
    url, received = webhook_server
    proc = start_module("services.monitor", var_dir, BDT_MONITOR__SAMPLE_INTERVAL_S="0.2",
                        BDT_MONITOR__WEBHOOK_URL=url)
    cfg = load_config({"BDT_VAR": str(var_dir)})
    publishers = [Publisher("bot", cfg), Publisher("scheduler", cfg)]
    bot, scheduler = publishers
    try:
        wait_for("monitor", cfg, timeout_s=15)
        for pub in publishers:              # the monitor's subscription reached each one
            wait_until(lambda p=pub: p.subscribers("events") >= 1, what="the monitor's SUB")
        raise_alert(bot, "book_mismatch", "bot", "opening refused: book and exchange disagree",
                    book_cash=10_000.0, book_qty=0.0, exchange_cash=500.0, exchange_qty=0.0)
        raise_alert(scheduler, "oom_kill", "batch", "backtest was OOM-killed at 80 MiB",
                    memory_peak=80 << 20, cap_bytes=80 << 20, job="backtest", run_id=1)
        wait_until(lambda: stored(cfg, "book_mismatch") and stored(cfg, "oom_kill"),
                   what="both alerts stored")
        wait_until(lambda: {"book_mismatch", "oom_kill"} <= {a["kind"] for a in received},
                   what="both alerts at the webhook")
        out = bdt(var_dir, "alerts")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert any("book_mismatch" in line and "bot" in line and "critical" in line
                   for line in lines), out.stdout
        assert any("oom_kill" in line and "scheduler" in line for line in lines), out.stdout
        hook = next(a for a in received if a["kind"] == "book_mismatch")
        assert hook["sources"] == ["bot"] and hook["figures"]["exchange_cash"] == 500.0
    finally:
        for pub in publishers:
            pub.close()
        assert stop_process(proc) == 0


def test_a_busy_metrics_port_is_bound_once_it_is_free(var_dir):
    """Before, a port busy at start was alerted once and never bound again. Held 3 s: the
    endpoint answers within 15 s of its release, and ``metrics_listening`` is stored."""
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    proc = start_module("services.monitor", var_dir, BDT_MONITOR__SAMPLE_INTERVAL_S="0.2",
                        BDT_MONITOR__METRICS_PORT=str(port))
    cfg = load_config({"BDT_VAR": str(var_dir)})
    try:
        wait_for("monitor", cfg, timeout_s=15)
        wait_until(lambda: [a for a in stored(cfg, "monitor") if a["subject"] == "metrics"],
                   what="the alert that the port is busy")
        time.sleep(3)
        holder.close()
        freed = time.monotonic()

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    return b"bdt_alerts_total" in r.read()
            except OSError:
                return False

        wait_until(answers, timeout=15, interval=0.2, what="the metrics endpoint")
        assert time.monotonic() - freed < 15
        (back,) = wait_until(lambda: stored(cfg, "metrics_listening"), what="the alert")
        assert back["severity"] == "info" and back["figures"]["port"] == port
        assert back["figures"]["attempts"] >= 2 and back["figures"]["waited_s"] >= 3
        with BusClient("monitor", cfg, timeout_ms=2000) as client:
            assert client.call("status")["metrics"]["listening"] is True
    finally:
        holder.close()
        assert stop_process(proc) == 0
