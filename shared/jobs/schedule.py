"""The batch jobs as data: which program, when (a cron trigger with day names, in the configured
timezone), and how long it may run (arq's ``cron()``: a schedule is a value, not code). The jobs
and the config keys of their schedule and time limit are the program table's
(shared/programs.py); their values are the ``[scheduler]`` settings.

A schedule is written ``daily HH:MM`` or ``DAYS HH:MM`` with DAYS day names (``sun``,
``mon,thu``, ``mon-fri``). A slot — one scheduled run — is named by its local date, time and
zone (``2026-11-29 03:00 Asia/Tokyo``): two firings with one name (the repeated hour when
daylight saving time ends) are one slot, so a job runs once a day even then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from shared.programs import jobs

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SCHEDULE = re.compile(r"^\s*(daily|[a-z]{3}(?:[,-][a-z]{3})*)\s+(\d{1,2}):(\d{2})\s*$")
JOBS = tuple(p.name for p in jobs())   # each is the supervisord program of the same name


class ScheduleError(ValueError):
    """A schedule or timezone that cannot be read; the message shows the accepted form."""


class SlotTrigger(CronTrigger):
    """APScheduler's cron trigger that always moves forward. APScheduler 3.11, asked for the
    firing after the second of two equal local times (01:30 when daylight saving time ends),
    returns that same instant again — a job would fire in a loop until the hour ends. Here a
    next firing is never at or before the previous one."""

    def get_next_fire_time(self, previous_fire_time, now):  # noqa: ANN001 - APScheduler's API
        nxt = super().get_next_fire_time(previous_fire_time, now)
        # as instants: aware datetimes of one zone compare by wall time, ignoring `fold`
        if nxt is not None and previous_fire_time is not None \
                and nxt.timestamp() <= previous_fire_time.timestamp():
            nxt = super().get_next_fire_time(previous_fire_time,
                                             previous_fire_time + timedelta(hours=1, seconds=1))
        return nxt


@dataclass(frozen=True)
class JobSpec:
    """One configured job, as the scheduler runs it."""

    name: str               # the job, and the supervisord program it starts
    schedule: str           # as written in config
    limit_s: float          # wall-clock limit, then stop (and kill after the grace)
    timezone: str

    def trigger(self) -> SlotTrigger:
        days, hour, minute = parse_schedule(self.schedule)
        return SlotTrigger(day_of_week=days, hour=hour, minute=minute,
                           timezone=zone(self.timezone))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r}; expected an IANA name such as "
                            "Asia/Tokyo or UTC") from None


def parse_schedule(text: str) -> tuple[str, int, int]:
    """``"sun 02:00"`` → ("sun", 2, 0); ``"daily 03:00"`` → ("*", 3, 0)."""
    m = _SCHEDULE.match(text.lower())
    if not m:
        raise ScheduleError(f"schedule {text!r}: expected 'daily HH:MM' or day names and a "
                            "time, e.g. 'sun 02:00' or 'mon,thu 04:30'")
    days, hour, minute = m.group(1), int(m.group(2)), int(m.group(3))
    if hour > 23 or minute > 59:
        raise ScheduleError(f"schedule {text!r}: no such time of day")
    if days != "daily":
        bad = [d for d in re.split("[,-]", days) if d not in DAY_NAMES]
        if bad:
            raise ScheduleError(f"schedule {text!r}: unknown day {bad[0]!r}; days are "
                                f"{', '.join(DAY_NAMES)}")
    return ("*" if days == "daily" else days), hour, minute


def slot_name(fire_time: datetime, tz: str) -> str:
    """The slot of a firing: its local date and time to the minute, and the zone — 03:00 in
    Tokyo and 03:00 UTC of one date are two slots (a job moved to another zone runs its first
    slot there even when a slot of the same local name ran in the old one)."""
    return f"{fire_time.astimezone(zone(tz)):%Y-%m-%d %H:%M} {tz}"


def job_table(cfg) -> dict[str, JobSpec]:
    """Every job of the program table with its configured schedule and time limit (the keys
    its row names: ``scheduler.<job>_schedule``, ``scheduler.<job>_limit_min``)."""
    tz = cfg.get("scheduler.timezone")
    return {p.name: JobSpec(p.name, cfg.get(p.schedule_key), cfg.get(p.limit_key) * 60.0, tz)
            for p in jobs()}
