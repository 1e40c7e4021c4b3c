"""`bdt train` trains on what the user asked for, says what it trained on, and never lies
(issue "Training that cannot lie"): --symbol, synthetic pre-history only into an empty store
of the embedded default, a one-line refusal with the figures, a gappy real export that trains
(was `ValueError: Out of range float values are not JSON compliant: nan`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.config import load_config
from shared.market.bars import utc
from shared.models.registry import ModelRegistry
from tests.helpers import child_env

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "BTCUSDT-1m-2023-03-01_21-binanceus.csv"
REAL_LAST_TS = 1679443140000            # 2023-03-21 23:59 UTC, the file's last minute


def real_csv() -> Path:
    if not REAL.exists():
        pytest.skip(f"{REAL} is not beside the checkout")
    return REAL


def bdt(var_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """What the user types, in a private var directory."""
    return subprocess.run(["bdt", *args], env=child_env(var_dir, **env), capture_output=True,
                          text=True, timeout=300)


def stored(var_dir: Path) -> dict[str, int]:
    """Bars per stored symbol, as `bdt data list` says."""
    out = bdt(var_dir, "data", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {row["symbol"]: row["bars"] for row in json.loads(out.stdout)}


def rows_of(source: Path, target: Path, keep) -> Path:
    """A CSV of the real export's rows whose index (= minutes since its start: the file has
    no missing minute) ``keep`` accepts."""
    header, *lines = source.read_text().splitlines()
    target.write_text("\n".join([header, *(x for i, x in enumerate(lines) if keep(i))]) + "\n")
    return target


def metadata(var_dir: Path, version: str) -> dict:
    """A version's metadata.json, parsed as strict JSON (NaN or Infinity fail)."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"metadata.json holds {constant}: not JSON")

    cfg = load_config({"BDT_VAR": str(var_dir)})
    path = ModelRegistry(cfg.model_dir).versions_dir / version / "metadata.json"
    return json.loads(path.read_text(), parse_constant=refuse)


def test_train_symbol_trains_on_the_imported_bars_and_stores_no_synthetic(var_dir):
    """After `bdt data import FILE --symbol BTC/USD`, a plain `bdt train` wrote 20,000
    synthetic BTC/USDT bars into the store and trained on them."""
    csv = real_csv()
    assert bdt(var_dir, "data", "import", str(csv), "--symbol", "BTC/USD").returncode == 0

    plain = bdt(var_dir, "train")                 # BTC/USDT, of which nothing is stored
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.count("\n") == 1
    assert "BTC/USDT: 0 bars stored, 5000 needed (model.min_train_bars)" in plain.stderr
    assert stored(var_dir) == {"BTC/USD": 30240}  # no synthetic bars beside the user's

    out = bdt(var_dir, "train", "--symbol", "BTC/USD", "--json",
              BDT_MODEL__TRAIN_BARS="8000")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["symbol"], result["synthetic"], result["stored_now"]) == ("BTC/USD", False, 0)
    assert result["source"] == f"store: BTC/USD {utc(REAL_LAST_TS - 7999 * 60_000)} → " \
                               f"{utc(REAL_LAST_TS)} (8,000 bars)"
    meta = metadata(var_dir, result["version"])
    assert (meta["symbol"], meta["synthetic"]) == ("BTC/USD", False)
    assert meta["window"]["to_ts"] == REAL_LAST_TS and meta["window"]["rows"] == 8000
    assert stored(var_dir) == {"BTC/USD": 30240}


def test_too_few_bars_of_the_symbol_is_a_one_line_refusal_with_the_figures(var_dir, tmp_path):
    short = rows_of(real_csv(), tmp_path / "short.csv", lambda i: i < 1200)
    assert bdt(var_dir, "data", "import", str(short), "--symbol", "BTC/USD").returncode == 0
    out = bdt(var_dir, "train", "--symbol", "BTC/USD")
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.startswith("bdt train: BTC/USD: 1200 bars stored, 5000 needed "
                                 "(model.min_train_bars)")
    assert out.stderr.count("\n") == 1


def test_a_users_own_bars_of_the_default_symbol_get_no_synthetic_company(var_dir, tmp_path):
    """On the embedded default's own symbol too: a store holding the user's bars is never
    topped up with synthetic ones."""
    short = rows_of(real_csv(), tmp_path / "short.csv", lambda i: i < 1000)
    assert bdt(var_dir, "data", "import", str(short)).returncode == 0   # as BTC/USDT
    out = bdt(var_dir, "train")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "BTC/USDT: 1000 bars stored, 5000 needed" in out.stderr
    assert "only into an empty store" in out.stderr
    assert stored(var_dir) == {"BTC/USDT": 1000}
    assert not (var_dir / "data" / "sample").exists()


def test_make_run_first_train_on_the_embedded_default_is_synthetic_and_says_so(var_dir):
    """`make run` runs `bdt train --if-missing` at first start: the sample market's past
    (``market.sample_past_days``: here 5 days, 7,200 bars) is stored, its newest
    ``model.train_bars`` trained on, and the output and the metadata say it is synthetic."""
    env = {"BDT_MODEL__TRAIN_BARS": "6000", "BDT_MARKET__SAMPLE_BARS": "500",
           "BDT_MARKET__SAMPLE_PAST_DAYS": "5"}
    out = bdt(var_dir, "train", "--if-missing", **env)
    assert out.returncode == 0, out.stderr
    assert "stored 7200 synthetic bars of the sample market's past as BTC/USDT first" \
        in out.stdout
    assert "SYNTHETIC data: the embedded sample market" in out.stdout
    assert stored(var_dir) == {"BTC/USDT": 7200}
    version = ModelRegistry(load_config({"BDT_VAR": str(var_dir)}).model_dir).current()
    meta = metadata(var_dir, version)
    assert (meta["symbol"], meta["synthetic"], meta["stored_now"]) == ("BTC/USDT", True, 7200)
    assert meta["source"].endswith("(6,000 bars); synthetic: the embedded sample market's")
    again = bdt(var_dir, "train", "--if-missing", **env)
    assert again.returncode == 0 and f"model {version} already promoted" in again.stdout
    retrained = bdt(var_dir, "train", "--json", **env)   # later runs still say so
    assert retrained.returncode == 0, retrained.stderr
    assert json.loads(retrained.stdout)["synthetic"] is True
    assert stored(var_dir) == {"BTC/USDT": 7200}


def gappy(i: int) -> bool:
    """Every 13th minute missing, and the first 20 minutes of every 4 hours: 2,237 gaps, on
    which arch's GARCH fit lands at α + β = 1.0000000001 and (before the fix) the holdout's
    variance ratio was NaN."""
    return i % 13 != 3 and i % 240 >= 20


def test_a_gappy_real_export_trains_and_its_metadata_is_json(var_dir, tmp_path):
    """A gappy 1m export ended in `ValueError: Out of range float values are not JSON
    compliant: nan` (the GARCH holdout ratio ran through the gaps' missing returns)."""
    csv = rows_of(real_csv(), tmp_path / "gappy.csv", gappy)
    imported = bdt(var_dir, "data", "import", str(csv), "--symbol", "BTC/USD", "--json")
    assert imported.returncode == 0, imported.stderr
    holding = json.loads(bdt(var_dir, "data", "list", "--json").stdout)[0]
    assert (holding["bars"], holding["gaps"]) == (25588, 2237)

    out = bdt(var_dir, "train", "--symbol", "BTC/USD", BDT_MODEL__TRAIN_BARS="30000")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "GARCH fit not used (persistence alpha + beta = 1.0000000001" in out.stderr
    version = ModelRegistry(load_config({"BDT_VAR": str(var_dir)}).model_dir).current()
    garch = metadata(var_dir, version)["metrics"]["garch"]
    assert 0.5 < garch["holdout_var_ratio"] < 2.0           # a number, not NaN
    assert garch["converged"] is False and "not stationary" in garch["converged_why"]
    assert garch["fitted"]["persistence"] == pytest.approx(1.0000000001, abs=1e-10)
    assert (garch["model"], garch["persistence"]) == ("fallback", pytest.approx(0.99))
    shown = bdt(var_dir, "models", "show", version)
    assert shown.returncode == 0 and '"converged": false' in shown.stdout


def test_the_gappy_report_is_strict_json_with_a_finite_holdout_ratio():
    """The same frame at the function the registry and the walk-forward both take metrics
    from: no NaN reaches the report."""
    import polars as pl

    from shared.market.files import read_ohlcv
    from shared.models.fitting import train_model_set

    bars = read_ohlcv(real_csv())
    bars = bars.filter(pl.Series([gappy(i) for i in range(bars.height)]))
    _, report = train_model_set(bars, horizon=15)
    json.dumps(report, allow_nan=False)
    garch = report["metrics"]["garch"]
    assert 0.5 < garch["holdout_var_ratio"] < 2.0
    assert garch["converged"] is False and garch["fitted"]["persistence"] >= 1.0


@pytest.mark.parametrize("content", [None, "date,open,high,low,close,volume\n"
                                           "01/02/2024 00:00,1,1,1,1,1\n"
                                           "01/02/2024 00:01,1,1,1,1,1\n"])
def test_make_runs_first_train_on_a_bad_replay_file_is_one_line(var_dir, tmp_path, content):
    """`bdt train --if-missing` (make run's first step) on a replay_path that is missing or
    whose dates cannot be read ended in a traceback."""
    path = tmp_path / "candles.csv"
    if content is not None:
        path.write_text(content)
    done = bdt(var_dir, "train", "--if-missing", BDT_MARKET__REPLAY_PATH=str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"bdt train: market.replay_path: {path}")
    assert done.stderr.count("\n") == 1, done.stderr
