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
    (``model.train_bars`` bars, stored and trained on at first run) and the *replay* that
    follows (``market.sample_bars`` bars). One path: no seam, and no replayed bar was ever
    trained on."""
    base = f"{symbol_slug(symbol)}_{cfg.get('market.timeframe')}_seed" \
        f"{cfg.get('market.synthetic_seed')}"
    folder = cfg.var_dir / "data" / "sample"
    return (folder / f"{base}_past{cfg.get('model.train_bars')}.parquet",
            folder / f"{base}_replay{cfg.get('market.sample_bars')}.parquet")


def ensure_sample_data(cfg: Config, symbol: str) -> Path:
    """Generate the sample market once (both parts, written atomically); the replay part."""
    past, replay = sample_paths(cfg, symbol)
    if not (past.exists() and replay.exists()):
        past.parent.mkdir(parents=True, exist_ok=True)
        n_past = cfg.get("model.train_bars")
        market = SyntheticMarket(symbol, timeframe_ms(cfg.get("market.timeframe")),
                                 cfg.get("market.synthetic_seed"))
        frame = market.frame(n_past + cfg.get("market.sample_bars"))
        for path, part in ((past, frame.head(n_past)), (replay, frame.slice(n_past))):
            tmp = path.with_suffix(".tmp")
            part.write_parquet(tmp)
            os.replace(tmp, path)
    return replay
