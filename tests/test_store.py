import sqlite3

import pytest

from services.history.window import RollingWindow
from shared.market.bars import Bar
from shared.market.synthetic import SyntheticMarket
from shared.storage.bar_store import DAY_MS, BarStore, StoreError

M = 60_000


def bars(n: int, seed: int = 2) -> list[Bar]:
    df = SyntheticMarket("BTC/USDT", M, seed).frame(n)
    return [Bar("BTC/USDT", *row) for row in df.iter_rows()]


def test_insert_is_idempotent_and_recent_is_ordered(tmp_path):
    store = BarStore(tmp_path)
    data = bars(100)
    assert store.insert(data) == 100
    assert store.insert(data[-10:]) == 0
    assert store.recent("BTC/USDT", 3) == data[-3:]
    assert store.last_ts("BTC/USDT") == data[-1].ts
    assert store.count("BTC/USDT") == 100


def test_compaction_moves_old_days_to_parquet_without_loss(tmp_path):
    store = BarStore(tmp_path)
    data = bars(4 * 1440)                        # four days of minutes
    store.insert(data)
    moved = store.compact("BTC/USDT", keep_days=1)
    assert moved > 1440
    assert list((tmp_path / "parquet" / "symbol=BTCUSDT").glob("date=*/bars.parquet"))
    remaining = store.db.execute("SELECT count(*) FROM bars").fetchone()[0]
    assert remaining == len(data) - moved
    df = store.scan("BTC/USDT").collect()
    assert df["ts"].to_list() == [b.ts for b in data]
    assert store.recent("BTC/USDT", 5) == data[-5:]
    day = data[0].ts // DAY_MS * DAY_MS
    part = store.scan("BTC/USDT", day, day + DAY_MS).collect()
    assert part.height == sum(1 for b in data if day <= b.ts < day + DAY_MS)


def test_crash_between_parquet_and_delete_loses_nothing(tmp_path, monkeypatch):
    store = BarStore(tmp_path)
    data = bars(3 * 1440)
    store.insert(data)
    real_execute = store.db.execute

    class Crash(Exception):
        pass

    def crashing(sql, *args):
        if sql.startswith("DELETE"):
            raise Crash
        return real_execute(sql, *args)

    store.db = type("DB", (), {"execute": staticmethod(crashing)})()
    with pytest.raises(Crash):
        store.compact("BTC/USDT", keep_days=0)
    store.db = sqlite3.connect(tmp_path / "market.db", isolation_level=None)
    assert store.scan("BTC/USDT").collect()["ts"].to_list() == [b.ts for b in data]
    store.compact("BTC/USDT", keep_days=0)     # the next run finishes the job
    assert store.scan("BTC/USDT").collect()["ts"].to_list() == [b.ts for b in data]


def test_corrupt_database_is_a_clear_error_and_left_untouched(tmp_path):
    db = tmp_path / "market.db"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="market.db.*left untouched"):
        BarStore(tmp_path)
    assert db.read_bytes() == before


def test_rolling_window_keeps_the_newest_and_exact_prices():
    window = RollingWindow("BTC/USDT", 50)
    data = bars(120)
    for bar in data:
        window.append(bar)
    latest = window.latest(50)
    assert [b.ts for b in latest] == [b.ts for b in data[-50:]]
    assert [b.close for b in latest] == [b.close for b in data[-50:]]   # float64: exact
    assert window.latest(500)[0].ts == data[-50].ts
    assert window.nbytes == 50 * (8 + 32 + 4 + 4)
