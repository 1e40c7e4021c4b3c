"""Every key programs share through the cache service, declared once: its writer, its TTL and
its readers.

A program that writes its live picture into the cache (``mset`` with a TTL, so a stopped
writer's keys expire on their own) names each key by its constant here, and so does every
reader; nothing writes or reads a key spelled out as a string. ``tests/test_cache_keys.py``
fails when a key-like string is used instead, when a module names a key without being
declared its writer or a reader, or when a declared writer or reader does not name it.

``writer`` and ``readers`` are module names. ``OPERATOR`` as a reader means no program reads
the key: it is there for a person (``bdt cache get KEY``). ``ttl`` is seconds, or the config
key that holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATOR = "bdt cache get (a person; no program reads it)"

BOT_TTL_S = 30.0            # the bot writes at most once a second, between bars too
SCHEDULER_TTL_S = 120.0     # the scheduler writes on a change, else every 30 s
MONITOR_TTL = "monitor.snapshot_ttl_s"    # the monitor writes after each sample

STATUS = "shared.cli.status"            # bdt status: the one screen, one mget
DASHBOARD = "services.dashboard.data"
BACKTEST = "shared.backtest.runner"     # a backtest's chunk sizing follows the resource mode


@dataclass(frozen=True)
class CacheKey:
    """One shared key: ``name`` as stored (``namespace:what``), the module that writes it,
    its TTL (seconds or a config key), the modules that read it, and what the value is."""

    name: str
    writer: str
    ttl: float | str
    readers: tuple[str, ...]
    help: str

    @property
    def namespace(self) -> str:
        """The prefix up to and including the colon (``monitor:``)."""
        return self.name[:self.name.index(":") + 1]


MONITOR_SAMPLE = CacheKey(
    "monitor:sample", "services.monitor.snapshot", MONITOR_TTL, (STATUS, DASHBOARD),
    "the latest sample, compact: the tree, every slice and every program")
MONITOR_MODE = CacheKey(
    "monitor:mode", "services.monitor.snapshot", MONITOR_TTL, (STATUS, DASHBOARD, BACKTEST),
    "the resource mode, since when and why: {mode, since, reason, memory_bytes, cpu_pct, ...}")
MONITOR_ALERTS = CacheKey(
    "monitor:alerts", "services.monitor.snapshot", MONITOR_TTL, (STATUS, DASHBOARD),
    "the alerts of the last hour at warning or worse")
BOT_LAST_BAR = CacheKey(
    "bot:last_bar", "services.bot.service", BOT_TTL_S, (OPERATOR,),
    "the last bar the bot published (a bars stream payload), or null")
BOT_PREDICTION = CacheKey(
    "bot:prediction", "services.bot.service", BOT_TTL_S, (OPERATOR,),
    "the last prediction the bot received (a predictions stream payload), or null")
BOT_POSITION = CacheKey(
    "bot:position", "services.bot.service", BOT_TTL_S, (STATUS,),
    "the position: {symbol, qty, avg_price, ...}")
BOT_EQUITY = CacheKey(
    "bot:equity", "services.bot.service", BOT_TTL_S, (STATUS,),
    "{equity, cash, today_pnl}")
BOT_RISK = CacheKey(
    "bot:risk", "services.bot.service", BOT_TTL_S, (OPERATOR,),
    "the risk manager's state")
SCHEDULER_JOBS = CacheKey(
    "scheduler:jobs", "scheduler.service", SCHEDULER_TTL_S, (STATUS,),
    "every job: schedule, next run, last outcome (the scheduler's jobs op)")
SCHEDULER_CURRENT = CacheKey(
    "scheduler:current", "scheduler.service", SCHEDULER_TTL_S, (STATUS,),
    "the job run in progress, or null")

KEYS: dict[str, CacheKey] = {k.name: k for k in (
    MONITOR_SAMPLE, MONITOR_MODE, MONITOR_ALERTS,
    BOT_LAST_BAR, BOT_PREDICTION, BOT_POSITION, BOT_EQUITY, BOT_RISK,
    SCHEDULER_JOBS, SCHEDULER_CURRENT,
)}
