"""A corrupt Parquet partition is named, moved aside (never deleted) and reported; every other
day goes on being served, by the store and by history (no crash at start)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.history.service import HistoryService
from shared.market.bars import Bar
from shared.market.synthetic import SyntheticMarket
from shared.storage.bar_store import DAY_MS, BarStore

M = 60_000
SYMBOL = "BTC/USDT"


def ts_of(store: BarStore, start: int | None = None, end: int | None = None) -> list[int]:
    return store.scan(SYMBOL, start, end).collect()["ts"].to_list()


@pytest.fixture
def days():
    """Four days of one-minute bars, grouped by UTC day start."""
    start = 1_700_000_040_000 // DAY_MS * DAY_MS                # midnight UTC, 2023-11-14
    df = SyntheticMarket(SYMBOL, M, 2, start_ts=start).frame(4 * 1440)
    out: dict[int, list[Bar]] = {}
    for row in df.iter_rows():
        bar = Bar(SYMBOL, *row)
        out.setdefault(bar.ts // DAY_MS * DAY_MS, []).append(bar)
    assert len(out) == 4 and all(len(b) == 1440 for b in out.values())
    return out


def build(data_dir: Path, days: dict[int, list[Bar]]) -> list[Path]:
    """A store whose first three days are compacted into Parquet (the fourth stays in SQLite);
    returns the three partition files, oldest first."""
    store = BarStore(data_dir)
    store.insert([b for bars in days.values() for b in bars])
    store.compact(SYMBOL, keep_days=0)
    store.close()
    parts = sorted(data_dir.glob("parquet/symbol=BTCUSDT/date=*/bars.parquet"))
    assert len(parts) == 3
    return parts


def truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.read_bytes()


def test_a_truncated_partition_is_moved_aside_and_the_other_days_are_served(
        tmp_path, days, caplog):
    parts = build(tmp_path, days)
    d0, d1, d2, d3 = sorted(days)
    bad = truncate(parts[1])                                    # day d1: not in SQLite any more
    store = BarStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bdt.store"):
        assert ts_of(store, d0, d0 + DAY_MS) == [b.ts for b in days[d0]]
        assert ts_of(store, d2, d2 + DAY_MS) == [b.ts for b in days[d2]]
    assert ts_of(store) == [b.ts for d in (d0, d2, d3) for b in days[d]]
    assert ts_of(store, d1, d1 + DAY_MS) == []                  # a gap, not an error
    assert store.recent(SYMBOL, 3) == days[d3][-3:]

    # moved aside with the same bytes, named in one warning and in the quarantine list
    assert not parts[1].exists()
    [record] = store.quarantined
    moved = Path(record["moved_to"])
    assert moved.parent == parts[1].parent and moved.name.startswith("bars.parquet.corrupt-")
    assert moved.read_bytes() == bad
    assert record["path"] == str(parts[1]) and "unreadable" in record["reason"]
    assert record["sqlite_bars"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(parts[1]) in warnings[0] and "gap" in warnings[0]
    store.close()

    again = BarStore(tmp_path)                                  # a restart still reports it
    assert [q["moved_to"] for q in again.quarantined] == [str(moved)]
    assert ts_of(again) == [b.ts for d in (d0, d2, d3) for b in days[d]]
    again.close()


def test_a_quarantined_day_still_in_sqlite_is_served_complete_and_recompacted(tmp_path, days):
    parts = build(tmp_path, days)
    d1 = sorted(days)[1]
    store = BarStore(tmp_path)
    store.insert(days[d1])          # a crash between the Parquet write and the SQLite delete
    truncate(parts[1])
    assert ts_of(store, d1, d1 + DAY_MS) == [b.ts for b in days[d1]]
    assert ts_of(store) == [b.ts for bars in days.values() for b in bars]
    assert store.quarantined[0]["sqlite_bars"] == 1440
    store.compact(SYMBOL, keep_days=0)                          # rewrites the partition
    assert parts[1].exists()
    assert store.db.execute("SELECT count(*) FROM bars WHERE ts < ?",
                            (d1 + DAY_MS,)).fetchone()[0] == 0
    assert ts_of(store) == [b.ts for bars in days.values() for b in bars]
    store.close()


def test_a_bad_data_page_found_at_read_time_is_quarantined_and_the_read_retried(tmp_path, days):
    parts = build(tmp_path, days)
    d0, d1, d2, d3 = sorted(days)
    store = BarStore(tmp_path)
    assert store.count(SYMBOL) == 4 * 1440                      # every partition checked once
    data = bytearray(parts[2].read_bytes())
    data[4:68] = b"\xff" * 64                                   # the footer is intact
    parts[2].write_bytes(bytes(data))
    assert store.count(SYMBOL) == 3 * 1440
    assert not parts[2].exists()
    assert store.quarantined[0]["path"] == str(parts[2])
    assert Path(store.quarantined[0]["moved_to"]).read_bytes() == bytes(data)
    got = store.collect(SYMBOL).get_column("ts").to_list()
    assert got == [b.ts for d in (d0, d1, d3) for b in days[d]]
    store.close()


def test_history_starts_and_serves_ranges_with_a_corrupt_partition(cfg, var_dir, days):
    data_dir = var_dir / "data" / "market"
    parts = build(data_dir, days)
    d0, d1, d2, d3 = sorted(days)
    truncate(parts[0])
    service = HistoryService(cfg)                               # no crash at start
    try:
        got = service.handle("range", {"symbol": SYMBOL, "start": d2, "end": d2 + DAY_MS})
        assert got["ts"] == [b.ts for b in days[d2]] and got["truncated"] is False
        assert got["close"] == [b.close for b in days[d2]]
        got = service.handle("range", {"symbol": SYMBOL, "start": 0, "end": 2**62})
        assert got["ts"] == [b.ts for d in (d1, d2, d3) for b in days[d]]
        status = service.service_status()
        assert status["symbols"][SYMBOL]["window"] == 3 * 1440
        [record] = status["quarantined"]
        assert record["path"] == str(parts[0]) and Path(record["moved_to"]).exists()
    finally:
        service.close()


def test_bdt_doctor_names_a_quarantined_partition(tmp_path):
    """The moved-aside file is reported by bdt doctor until an operator deals with it."""
    import subprocess

    from tests.helpers import child_env

    var = tmp_path / "var"
    part = var / "data" / "market" / "parquet" / "symbol=BTCUSDT" / "date=2023-11-15"
    part.mkdir(parents=True)
    moved = part / "bars.parquet.corrupt-20261130T000000.000000Z"
    moved.write_bytes(b"PAR1 truncated")
    out = subprocess.run(["bdt", "doctor"], env=child_env(var), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert f"corrupt market-data partition moved aside: {moved}" in out.stdout
