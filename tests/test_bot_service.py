"""The bot service in-process, without the bus or supervisord: when it checkpoints."""

from __future__ import annotations

import time

import services.bot.service as bot_service
from shared.market.bars import Bar


def test_decisions_checkpoint_at_most_once_a_second(cfg, monkeypatch):
    """Replaying as fast as it goes the bot is seldom idle at a tick, so the decision itself
    checkpoints when one is due (before the next bar is published): the WAL stays small."""
    svc = bot_service.BotService(cfg)
    checkpoints = []
    monkeypatch.setattr(svc.db, "checkpoint", lambda: checkpoints.append(1))
    try:
        for i in range(1, 4):
            svc.pending = (Bar("BTC/USDT", i * 60_000, 100, 100, 100, 100, 1.0),
                           time.perf_counter())
            svc._decide(None, note="test")
            if i == 2:
                svc.next_checkpoint = 0.0            # a second has passed
        assert len(checkpoints) == 2                 # bars 1 and 3; not 2, too soon after 1
        assert svc.db.last_decided_ts("BTC/USDT") == 3 * 60_000
    finally:
        svc.close()
