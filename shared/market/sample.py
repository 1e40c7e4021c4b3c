"""The embedded default's sample market: one seeded path, stored in two parts (its past, for
training, and the replay that follows)."""

from __future__ import annotations

import os
from pathlib import Path

from shared.config import Config
from shared.market.bars import symbol_slug, timeframe_ms
from shared.market.synthetic import SyntheticMarket


def sample_paths(cfg: Config, symbol: str) -> tuple[Path, Path]:
    """The embedded default's market, one seeded path in two parts: its *past*
    (``past_bars``: stored at first run, the newest ``model.train_bars`` trained on, the
    whole of it what the default walk-forward reads) and the *replay* that
    follows (``market.sample_bars`` bars). One path: no seam, and no replayed bar was ever
    trained on."""
    base = f"{symbol_slug(symbol)}_{cfg.get('market.timeframe')}_seed" \
        f"{cfg.get('market.synthetic_seed')}"
    folder = cfg.var_dir / "data" / "sample"
    return (folder / f"{base}_past{past_bars(cfg)}.parquet",
            folder / f"{base}_replay{cfg.get('market.sample_bars')}.parquet")


def past_bars(cfg: Config) -> int:
    """Bars of the sample's past: ``market.sample_past_days`` of bars (what the default
    walk-forward needs), never fewer than ``model.train_bars``."""
    per_day = 86_400_000 // timeframe_ms(cfg.get("market.timeframe"))
    return max(cfg.get("model.train_bars"), round(cfg.get("market.sample_past_days") * per_day))


def ensure_sample_data(cfg: Config, symbol: str) -> Path:
    """Generate the sample market once (both parts, written atomically); the replay part."""
    past, replay = sample_paths(cfg, symbol)
    if not (past.exists() and replay.exists()):
        past.parent.mkdir(parents=True, exist_ok=True)
        n_past = past_bars(cfg)
        market = SyntheticMarket(symbol, timeframe_ms(cfg.get("market.timeframe")),
                                 cfg.get("market.synthetic_seed"))
        frame = market.frame(n_past + cfg.get("market.sample_bars"))
        for path, part in ((past, frame.head(n_past)), (replay, frame.slice(n_past))):
            tmp = path.with_suffix(".tmp")
            part.write_parquet(tmp)
            os.replace(tmp, path)
    return replay
