"""Every service's op table, by service name (services not listed answer the common ops)."""

from __future__ import annotations

from shared.protocol import bot, cache, history, monitor, predictor, scheduler
from shared.protocol.common import table
from shared.protocol.ops import OpTable

TABLES: dict[str, OpTable] = {t.service: t for t in (cache.OPS, history.OPS, predictor.OPS,
                                                     bot.OPS, monitor.OPS, scheduler.OPS)}


def ops_of(service: str) -> OpTable:
    """The op table of ``service``: its own, or the common ops alone."""
    return TABLES.get(service) or table(service)
