"""The scheduler's clock (issue 14) without waiting for 03:00: APScheduler's own reads of the
time are pointed at an injected clock, so the real triggers, job store, misfire grace and
coalescing decide — at instants the test chooses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.clock import JobClock
from shared.config import load_config
from shared.jobs.runs import JobRuns
from shared.jobs.schedule import JobSpec, ScheduleError, job_table, parse_schedule, slot_name

TOKYO = "Asia/Tokyo"


class FakeNow:
    """A settable clock with datetime.now's signature."""

    def __init__(self, when: datetime) -> None:
        self.when = when

    def __call__(self, tz=None) -> datetime:
        return self.when.astimezone(tz) if tz else self.when.replace(tzinfo=None)


@pytest.fixture
def fake(monkeypatch):
    """APScheduler's modules see the fake clock; returns it."""
    import apscheduler.executors.base as executors
    import apscheduler.schedulers.base as base

    now = FakeNow(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return now(tz)

    monkeypatch.setattr(base, "datetime", FakeDatetime)
    monkeypatch.setattr(executors, "datetime", FakeDatetime)
    return now


def jst(*args: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo(TOKYO))


def clock(tmp_path, now: FakeNow, tz: str = TOKYO, grace_s: float = 3600,
          monotonic: Callable[[], float] = time.monotonic) -> JobClock:
    """A started clock on ``tmp_path``'s stores, the default jobs in ``tz``."""
    runs = JobRuns(tmp_path / "jobs.db")
    jobs = job_table(load_config({"BDT_SCHEDULER__TIMEZONE": tz}))
    c = JobClock(jobs, runs, tmp_path / "scheduler.db", tz, grace_s, now=lambda: now.when,
                 monotonic=monotonic)
    c.start()
    return c


def settle(c: JobClock, now: FakeNow) -> None:
    """Let APScheduler look at the (fake) time, run what is due and report it."""
    c.sched.wakeup()
    deadline = time.monotonic() + 5
    while c.firings.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    c.take_firings()


def test_the_default_triggers_fire_at_0300_daily_and_sunday_0200_in_tokyo():
    jobs = job_table(load_config({}))
    after = jst(2026, 11, 30, 10, 0)                    # a Monday
    bt = jobs["backtest"].trigger().get_next_fire_time(None, after)
    wf = jobs["walkforward"].trigger().get_next_fire_time(None, after)
    assert bt == jst(2026, 12, 1, 3, 0)
    assert wf == jst(2026, 12, 6, 2, 0) and wf.strftime("%a") == "Sun"
    assert parse_schedule("mon,thu 04:30") == ("mon,thu", 4, 30)
    for bad in ("sometimes 03:00", "daily 25:00", "sun 2pm"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)


@pytest.mark.parametrize("schedule, start, end", [
    ("daily 02:30", datetime(2026, 3, 5), datetime(2026, 3, 12)),     # 02:30 does not exist
    ("daily 01:30", datetime(2026, 10, 29), datetime(2026, 11, 5)),   # 01:30 comes twice
])
def test_a_dst_zone_gives_exactly_one_run_a_day(schedule, start, end, tmp_path):
    """America/New_York, across both transitions of 2026: every day one slot, neither zero
    nor two (the repeated 01:30 fires twice; the second firing is the same slot)."""
    from zoneinfo import ZoneInfo

    tz = "America/New_York"
    spec = JobSpec("backtest", schedule, 60, tz)
    trigger = spec.trigger()
    runs = JobRuns(tmp_path / "jobs.db")
    when, fired = trigger.get_next_fire_time(None, start.replace(tzinfo=ZoneInfo(tz))), []
    while when < end.replace(tzinfo=ZoneInfo(tz)):
        fired.append(when)
        run = runs.add("backtest", slot_name(when, tz), "scheduled")
        if run is not None:
            runs.update(run.id, state="ok")
        nxt = trigger.get_next_fire_time(when, when + timedelta(seconds=1))
        assert nxt.timestamp() > when.timestamp(), f"the trigger did not move on from {when}"
        when = nxt
    days = {r.slot[:10] for r in runs.history(100)}
    assert len(runs.history(100)) == (end - start).days == len(days)
    assert len(fired) in ((end - start).days, (end - start).days + 1)


def test_a_restart_across_a_fire_time_runs_the_slot_once(fake, tmp_path):
    fake.when = jst(2026, 12, 1, 2, 59)
    c = clock(tmp_path, fake)
    assert c.next_run("backtest") == jst(2026, 12, 1, 3, 0)
    c.shutdown()                                        # down over 03:00 …
    fake.when = jst(2026, 12, 1, 3, 10)                 # … back 10 min later, within the grace
    c = clock(tmp_path, fake)
    settle(c, fake)
    runs = c.runs.history(10)
    assert [(r.job, r.slot, r.trigger, r.state) for r in runs] == \
        [("backtest", "2026-12-01 03:00 Asia/Tokyo", "catch_up", "queued")]
    settle(c, fake)                                     # nothing fires twice
    assert len(c.runs.history(10)) == 1
    assert c.next_run("backtest") == jst(2026, 12, 2, 3, 0)
    c.shutdown()


def test_down_past_the_grace_records_one_skipped_slot(fake, tmp_path):
    fake.when = jst(2026, 12, 1, 2, 59)
    clock(tmp_path, fake).shutdown()
    fake.when = jst(2026, 12, 1, 5, 0)                  # 2 h late, grace 1 h
    c = clock(tmp_path, fake)
    settle(c, fake)
    [run] = c.runs.history(10)
    assert (run.slot, run.state) == ("2026-12-01 03:00 Asia/Tokyo", "skipped")
    assert run.reason == ("missed: machine asleep or scheduler down from 2026-12-01 02:59 to "
                          "2026-12-01 05:00 (Asia/Tokyo); 120 min late, past "
                          "scheduler.misfire_grace_s (3600 s)")
    c.shutdown()


def test_down_for_days_every_missed_slot_gets_one_outcome(fake, tmp_path):
    """Down three days: coalescing runs only the latest missed slot; the others are recorded
    skipped — each slot one outcome."""
    fake.when = jst(2026, 12, 1, 2, 59)
    clock(tmp_path, fake).shutdown()
    fake.when = jst(2026, 12, 4, 3, 20)
    c = clock(tmp_path, fake)
    settle(c, fake)
    got = sorted((r.slot, r.state) for r in c.runs.history(10) if r.job == "backtest")
    assert got == [(f"2026-12-0{d} 03:00 Asia/Tokyo", "skipped") for d in (1, 2, 3)] + \
        [("2026-12-04 03:00 Asia/Tokyo", "queued")]
    c.shutdown()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_new_timezone_replaces_the_stored_job(fake, tmp_path):
    """Issue 24 (a): Tokyo → UTC, restart. The trigger's str leaves its zone out, so the stored
    job was kept and fired at 18:00 UTC; compared whole, it is replaced: 03:00 UTC. The first
    UTC slot runs although a Tokyo slot of the same local name ran 9 hours before."""
    fake.when = utc(2026, 11, 30, 17, 59)
    c = clock(tmp_path, fake)
    assert c.next_run("backtest") == utc(2026, 11, 30, 18, 0)        # 03:00 in Tokyo
    fake.when = utc(2026, 11, 30, 18, 0, 5)
    settle(c, fake)
    c.shutdown()
    fake.when = utc(2026, 11, 30, 20, 0)
    c = clock(tmp_path, fake, tz="UTC")
    assert c.next_run("backtest") == utc(2026, 12, 1, 3, 0)
    assert "timezone='UTC'" in repr(c.sched.get_job("backtest").trigger)
    assert c.next_run("walkforward") == utc(2026, 12, 6, 2, 0)
    fake.when = utc(2026, 12, 1, 3, 0, 5)
    settle(c, fake)
    got = [(r.slot, r.state) for r in c.runs.history(10) if r.job == "backtest"]
    assert got == [("2026-12-01 03:00 UTC", "queued"), ("2026-12-01 03:00 Asia/Tokyo", "queued")]
    c.shutdown()
    c = clock(tmp_path, fake, tz="UTC", grace_s=600)                  # any other difference too
    assert c.sched.get_job("backtest").misfire_grace_time == 600
    c.shutdown()



def test_a_slot_missed_under_the_replaced_schedule_is_recorded_skipped(fake, tmp_path):
    """Down across a Tokyo 03:00 and back in UTC: the old job is replaced, and its missed slot
    still gets its outcome."""
    fake.when = jst(2026, 12, 1, 2, 59)
    clock(tmp_path, fake).shutdown()
    fake.when = jst(2026, 12, 1, 3, 10)
    c = clock(tmp_path, fake, tz="UTC")
    [run] = c.runs.history(10)
    assert (run.job, run.slot, run.state) == ("backtest", "2026-12-01 03:00 Asia/Tokyo",
                                              "skipped")
    assert run.reason == ("missed: machine asleep or scheduler down from 2026-11-30 17:59 to "
                          "2026-11-30 18:10 (UTC); the schedule has changed since")
    assert c.next_run("backtest") == utc(2026, 12, 1, 3, 0)
    c.shutdown()

def test_a_corrupt_job_store_is_moved_aside_and_rebuilt(fake, tmp_path, caplog):
    """Issue 24 (b): 16 KiB of random bytes over scheduler.db. It is derived from config: moved
    aside (renamed, never deleted), named in one log line, rebuilt — and the slot missed while
    down still catches up, from the heartbeat in jobs.db."""
    fake.when = jst(2026, 12, 1, 2, 59)
    clock(tmp_path, fake).shutdown()
    store = tmp_path / "scheduler.db"
    garbage = os.urandom(16 << 10)
    with store.open("r+b") as f:
        f.write(garbage)
    fake.when = jst(2026, 12, 1, 3, 10)
    c = clock(tmp_path, fake)
    [aside] = tmp_path.glob("scheduler.db.corrupt-*")            # -<UTC time>
    assert aside.read_bytes()[:16 << 10] == garbage
    [line] = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert line.startswith(f"job store {store} is unreadable (file is not a database): moved "
                           f"aside to {aside}") and "\n" not in line
    settle(c, fake)
    assert [(r.slot, r.trigger, r.state) for r in c.runs.history(10)] == \
        [("2026-12-01 03:00 Asia/Tokyo", "catch_up", "queued")]
    assert c.next_run("backtest") == jst(2026, 12, 2, 3, 0)
    c.shutdown()


@pytest.mark.parametrize("woke, latest", [
    ((2026, 12, 4, 3, 20), ("queued", None)),
    ((2026, 12, 4, 5, 0), ("skipped", "; 120 min late, past scheduler.misfire_grace_s (3600 s)")),
])
@pytest.mark.parametrize("first_awake", ["the tick", "APScheduler"])
def test_a_machine_asleep_for_days_gives_every_slot_an_outcome(fake, tmp_path, woke, latest,
                                                               first_awake):
    """Issue 24 (c): the machine suspends for 3 days while the scheduler runs. From inside,
    the wall clock jumps while the monotonic one stood still: the next tick notices and wakes
    APScheduler (whose own wait is monotonic, so it may wake first or much later), and every
    slot slept through gets its outcome — the latest one catch-up within the grace (else
    skipped), the others skipped with why (coalescing alone runs one and forgets the rest)."""
    mono = [1000.0]
    fake.when = jst(2026, 12, 1, 2, 0)
    c = clock(tmp_path, fake, monotonic=lambda: mono[0])
    c.take_firings()                                    # a tick before the sleep
    time.sleep(0.3)                 # APScheduler has looked at 02:00: it waits for 03:00 now
    fake.when, mono[0] = jst(*woke), mono[0] + 1.0      # asleep: monotonic time stood still
    if first_awake == "APScheduler":
        c.sched.wakeup()                                # its wait ended before our next tick
    else:
        c.take_firings()                                # the first tick awake wakes it
    deadline = time.monotonic() + 5
    while c.firings.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    c.take_firings()
    got = sorted((r.slot, r.state, r.reason) for r in c.runs.history(10) if r.job == "backtest")
    asleep = (f"missed: machine asleep or scheduler down from 2026-12-01 02:00 to "
              f"2026-12-04 {woke[3]:02d}:{woke[4]:02d} (Asia/Tokyo)")
    assert got == [(f"2026-12-0{d} 03:00 Asia/Tokyo", "skipped",
                    asleep + "; only the latest missed slot may catch up") for d in (1, 2, 3)] \
        + [("2026-12-04 03:00 Asia/Tokyo", latest[0], latest[1] and asleep + latest[1])]
    assert c.next_run("backtest") == jst(2026, 12, 5, 3, 0)
    c.shutdown()
