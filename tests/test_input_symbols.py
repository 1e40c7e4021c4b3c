"""market.symbols from the environment (issue "Trading numbers you can trust", case 8):
BDT_MARKET__SYMBOLS reads a JSON list or the comma form, and what is not BASE/QUOTE is refused
at load naming the value. Each test runs `bdt` as a user types it, BDT_VAR in a temporary
directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import child_env


def bdt(var: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bdt", *args], env=child_env(var, **env), capture_output=True,
                          text=True, timeout=120)


# --- market.symbols from the environment -----------------------------------------------------
@pytest.mark.parametrize("value", ['["BTC/USD","ETH/USD"]', "BTC/USD,ETH/USD",
                                   ' [ "BTC/USD" , "ETH/USD" ] ', " BTC/USD , ETH/USD "])
def test_symbols_read_as_a_json_list_or_the_comma_form(tmp_path, value):
    """'["BTC/USD"]' was one symbol literally named ["BTC/USD"]."""
    out = bdt(tmp_path, "config", "show", "--json", BDT_MARKET__SYMBOLS=value)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["config"]["market"]["symbols"] == ["BTC/USD", "ETH/USD"]


@pytest.mark.parametrize(("value", "named"), [
    ('["BTC/USD"', "'[\"BTC/USD\"'"),                  # broken JSON
    ("BTCUSD", "'BTCUSD'"),
    ("BTC/USD/EUR", "'BTC/USD/EUR'"),
    ("BTC/ USD", "'BTC/ USD'"),
    ('["BTC/USD", 5]', "5"),
    ("BTC/USD,BTC/USD", "'BTC/USD'"),
    ('[]', "[]"),
])
def test_a_symbol_that_is_not_base_quote_is_refused_at_load_naming_it(tmp_path, value, named):
    out = bdt(tmp_path, "config", "show", BDT_MARKET__SYMBOLS=value)
    assert out.returncode == 2, out.stdout
    assert "market.symbols" in out.stderr and named in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
