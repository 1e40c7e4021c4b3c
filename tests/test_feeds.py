import numpy as np
import polars as pl
import pytest
from scipy import stats

from shared.config import load_config
from shared.market.bars import Bar
from shared.market.feeds import Pacer, ReplayFeed, SyntheticFeed, open_feed
from shared.market.files import FeedError, read_ohlcv
from shared.market.gate import BarGate
from shared.market.sample import ensure_sample_data, sample_paths
from shared.market.synthetic import SyntheticMarket
from shared.storage.bar_store import newest_ts, open_store

M = 60_000


def test_synthetic_is_deterministic_per_seed():
    a = SyntheticMarket("X", M, seed=3).frame(500)
    b = SyntheticMarket("X", M, seed=3).frame(500)
    c = SyntheticMarket("X", M, seed=4).frame(500)
    assert a.equals(b) and not a.equals(c)


def test_synthetic_has_clustering_fat_tails_and_only_valid_bars():
    df = SyntheticMarket("X", M, seed=11).frame(20_000)
    r = np.diff(np.log(df["close"].to_numpy()))
    abs_acf = np.corrcoef(np.abs(r[1:]), np.abs(r[:-1]))[0, 1]
    assert abs_acf > 0.1                       # volatility clustering: |r| is autocorrelated
    assert stats.kurtosis(r) > 3               # fat tails (normal: 0)
    gate = BarGate(M)
    assert all(gate.check(Bar("X", *row)) is None for row in df.iter_rows())
    minutes = (df["ts"] // M) % 1440
    quiet = df.filter((minutes > 120) & (minutes < 240))["volume"].mean()     # 02-04 UTC
    busy = df.filter((minutes > 840) & (minutes < 960))["volume"].mean()      # 14-16 UTC
    assert busy > quiet * 1.2                  # intraday volume pattern


def test_synthetic_resume_skips_to_the_same_bars():
    full = list(SyntheticFeed("X", M, seed=5, limit=10).bars())
    resumed = SyntheticFeed("X", M, seed=5, limit=4)
    resumed.market.skip_until(full[5].ts)
    assert list(resumed.bars()) == full[6:10]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def csv_file(tmp_path):
    df = SyntheticMarket("X", M, seed=1).frame(5)
    path = tmp_path / "bars.csv"
    df.with_columns(pl.from_epoch("ts", time_unit="ms")).write_csv(path)
    return path, df


def test_replay_reads_csv_with_datetimes_and_paces(csv_file):
    path, df = csv_file
    clock = FakeClock()
    feed = ReplayFeed(path, "X", M, pacer=Pacer(60.0, clock.clock, clock.sleep))
    bars = list(feed.bars())
    assert [b.ts for b in bars] == df["ts"].to_list()
    assert bars[0].close == pytest.approx(df["close"][0])
    # speed 60: a one-minute bar every second, released at its close
    assert clock.sleeps == pytest.approx([1.0] * 5)


def test_replay_as_fast_as_possible_and_resume(csv_file):
    path, df = csv_file
    clock = FakeClock()
    feed = ReplayFeed(path, "X", M, speed=0, start_after=df["ts"][2],
                      pacer=Pacer(0, clock.clock, clock.sleep))
    assert [b.ts for b in feed.bars()] == df["ts"].to_list()[3:]
    assert clock.sleeps == []


def test_replay_starts_after_what_is_stored_when_it_starts(csv_file):
    """Where the store ends is asked when the replay starts, not when the feed is made: a bot
    made before history (or the first run's training) has stored anything still goes on
    after the stored bars."""
    path, df = csv_file
    ts = df["ts"].to_list()
    store_end: list[int | None] = [None]
    asked = []

    def stored_until() -> int | None:
        asked.append(store_end[0])
        return store_end[0]

    feed = ReplayFeed(path, "X", M, stored_until=stored_until)
    assert asked == []
    store_end[0] = ts[1]
    assert [b.ts for b in feed.bars()] == ts[2:]
    assert asked == [ts[1]]
    store_end[0] = ts[-1]                              # everything stored: nothing to replay
    assert list(feed.bars()) == []
    store_end[0] = None                                # an empty store: from the first bar
    assert [b.ts for b in feed.bars()] == ts


def test_open_feed_goes_on_after_the_store_the_bot_reads(var_dir, csv_file):
    """The bot hands the feed its own reading of where the store ends (newest_ts, not
    through history): a replay file or the seeded synthetic market goes on after it."""
    path, df = csv_file
    seeded = list(SyntheticFeed("Y", M, seed=7, limit=6).bars())
    store = open_store(load_config({"BDT_VAR": str(var_dir)}))
    try:
        store.insert_frame("X", df.head(3))
        store.insert(seeded[:4])
    finally:
        store.close()
    env = {"BDT_VAR": str(var_dir), "BDT_MARKET__REPLAY_SPEED": "0"}
    replay_cfg = load_config({**env, "BDT_MARKET__REPLAY_PATH": str(path)})
    replay = open_feed(replay_cfg, "X", stored_until=lambda: newest_ts(replay_cfg, "X"))
    assert [b.ts for b in replay.bars()] == df["ts"].to_list()[3:]
    synthetic_cfg = load_config({**env, "BDT_MARKET__FEED": "synthetic",
                                 "BDT_MARKET__SYNTHETIC_SEED": "7"})
    synthetic = open_feed(synthetic_cfg, "Y", stored_until=lambda: newest_ts(synthetic_cfg, "Y"))
    assert next(iter(synthetic.bars())) == seeded[4]


def test_replay_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(FeedError, match="no such file"):
        read_ohlcv(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,open,high,low\n1,2,3,4\n")
    with pytest.raises(FeedError, match="bad.csv: missing column.*close"):
        read_ohlcv(bad)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(FeedError, match="corrupt.parquet: unreadable"):
        read_ohlcv(corrupt)
    odd = tmp_path / "x.xlsx"                      # JSON is a format now; a spreadsheet is not
    odd.write_bytes(b"PK")
    with pytest.raises(FeedError, match="unknown file type; expected .csv, .tsv, .txt, "
                                        ".parquet or .json"):
        read_ohlcv(odd)


def test_sample_data_is_made_once(cfg):
    import shared.config as config

    small = config.load_config({"BDT_VAR": str(cfg.var_dir), "BDT_MARKET__SAMPLE_BARS": "300",
                                "BDT_MODEL__TRAIN_BARS": "500",
                                "BDT_MARKET__SAMPLE_PAST_DAYS": "0"})   # past: train_bars
    path = ensure_sample_data(small, "BTC/USDT")
    mtime = path.stat().st_mtime_ns
    assert read_ohlcv(path).height == 300
    assert ensure_sample_data(small, "BTC/USDT") == path and path.stat().st_mtime_ns == mtime
    past = read_ohlcv(sample_paths(small, "BTC/USDT")[0])
    replay = read_ohlcv(path)
    assert past.height == 500 and past["ts"][-1] + M == replay["ts"][0]   # one path, no seam
    assert past["close"][-1] == replay["open"][0]
