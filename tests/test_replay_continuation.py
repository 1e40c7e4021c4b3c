"""Issue "Trading numbers you can trust", case 7: ``BDT_MARKET__REPLAY_PATH=FILE make run``
trained on the file's first 30 %, then the bot replayed the file from its first bar whenever
history was not answering within the bot's first seconds (the slices' CPU weights start the
bot well before history): history rejected every bar as "time going backwards", every
decision was "no prediction", no fill came. The replay now starts after the newest stored bar,
read from the store when the feed starts — on the first run and after every restart."""

from __future__ import annotations

import json
import sqlite3

import pytest

from shared.bus.client import wait_for
from shared.resources.supervisor import connect
from tests.helpers import wait_until
from tests.stack import Stack
from tests.test_real_replay import REAL

MINUTE = 60_000
MARKET = ("cache", "history", "predictor", "bot")


def serving(s: Stack, *names: str) -> None:
    """Each program answers on the bus (sooner than supervisord's RUNNING, after startsecs)."""
    for name in names:
        wait_for(name, s.cfg, timeout_s=60)


def start(s: Stack, name: str) -> None:
    """``supervisorctl start`` without waiting for startsecs; then it serves."""
    connect(s.cfg).supervisor.startProcess(f"bitdaytrader:{name}", False)
    serving(s, name)


def make_run_training(s: Stack) -> None:
    """What the Makefile's run target runs before supervisord (BDT_VAR is the stack's)."""
    out = s.bdt("cgexec", "batch", "--", "bdt", "train", "--if-missing")
    assert out.returncode == 0, out.stderr


def stored(s: Stack) -> dict:
    """The store's one symbol: bars, first and last ts, gaps (``bdt data list --json``)."""
    out = s.bdt("data", "list", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    return row


def decided(s: Stack) -> list[int]:
    """Every decided bar's ts, in the order the decisions were made."""
    with sqlite3.connect(f"file:{s.var / 'data' / 'trading.db'}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT bar_ts FROM decisions ORDER BY created_at")]


def fills(s: Stack) -> list:
    out = s.bdt("trades", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else []


def new_decisions(s: Stack, n: int) -> None:
    """The (re)started bot has decided ``n`` bars."""
    def enough() -> bool:
        try:
            return s.call("bot", "status")["decisions"] >= n
        except Exception:            # noqa: BLE001 - still starting
            return False
    wait_until(enough, timeout=60, interval=0.5, what=f"{n} decisions of the bot")


def assert_continuous(s: Stack, head_end: int, resumed_after: int | None = None) -> None:
    """Decisions only on bars after the trained head, each after the one before, none
    skipped except a bar a stop caught between publication and decision (and after a restart,
    the first on the bar after ``resumed_after``, the store's newest then); the store has
    every bar; history refused none."""
    ts = decided(s)
    assert ts and ts[0] == head_end + MINUTE, (ts[:3], head_end)
    backwards = [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b <= a]
    assert not backwards, f"decided bars going backwards, e.g. {backwards[:3]}"
    skipped = [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b - a > 2 * MINUTE]
    assert not skipped, f"bars skipped between decisions, e.g. {skipped[:3]}"
    if resumed_after is not None:
        assert resumed_after + MINUTE in ts, f"no decision on the bar after {resumed_after}"
    row = stored(s)
    assert row["gaps"] == 0 and row["last_ts"] >= ts[-1], row
    history_log = (s.var / "log" / "history.log").read_text()
    assert "time going backwards" not in history_log and "duplicate bar" not in history_log
    assert "Traceback" not in (s.var / "log" / "bot.log").read_text()


@pytest.mark.slow
def test_make_run_on_a_replay_file_trades_its_continuation_and_resumes_after_restarts():
    if not REAL.exists():
        pytest.skip(f"{REAL} is not beside the checkout")
    # costs and margins at zero: the point is the pipeline reaching fills, not March 2023's edge
    s = Stack(BDT_MARKET__REPLAY_PATH=str(REAL), BDT_MARKET__REPLAY_SPEED="3000",
              BDT_STRATEGY__ENTRY_THRESHOLD="0", BDT_STRATEGY__P_UP_MARGIN="0",
              BDT_PAPER__FEE_TAKER="0", BDT_PAPER__SPREAD="0", BDT_PAPER__SLIPPAGE="0")
    try:
        make_run_training(s)
        head = stored(s)
        assert head["bars"] == int(30_240 * 0.3)                  # the file's first 30 %
        head_end = head["last_ts"]

        s.start()                                      # `make run`'s supervisord
        serving(s, *MARKET)
        wait_until(lambda: len(fills(s)) >= 2, timeout=60, interval=0.5, what="paper fills")
        status = s.call("bot", "status")
        assert status["decided_without_prediction"] <= 1, status
        assert_continuous(s, head_end)

        # the bot restarted while history is down (restarting, or slower to start than the
        # bot, as it is under the slices' CPU weights): the store says where to go on
        assert "stopped" in s.ctl("stop", "bitdaytrader:bot")
        assert "stopped" in s.ctl("stop", "bitdaytrader:history")
        before = stored(s)["last_ts"]
        start(s, "bot")                # serving: it has made its feed, history still down
        start(s, "history")
        new_decisions(s, 50)
        assert_continuous(s, head_end, resumed_after=before)

        # the whole stack restarted (Ctrl-C, then `make run` again on the same var directory)
        s.shutdown()
        before = stored(s)["last_ts"]
        make_run_training(s)
        s.start()
        serving(s, *MARKET)
        new_decisions(s, 50)
        assert_continuous(s, head_end, resumed_after=before)
    finally:
        s.remove()
