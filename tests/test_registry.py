"""Registry: versions, atomic promotion, checksums, lazy loading."""

from __future__ import annotations

import json
import math
import os
import weakref
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shared.market.synthetic import SyntheticMarket
from shared.models.artifacts import ARTIFACTS, ModelError
from shared.models.finite import finite_json
from shared.models.fitting import train_and_register, train_model_set
from shared.models.model_set import ModelSet
from shared.models.registry import LazyModel, ModelRegistry


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return SyntheticMarket("BTC/USDT", 60_000, 8).frame(3000)


@pytest.fixture(scope="module")
def trained(bars: pl.DataFrame) -> tuple[ModelSet, dict]:
    return train_model_set(bars)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_register_promote_current_versions(registry, trained) -> None:
    model_set, report = trained
    assert registry.current() is None and registry.versions() == []
    v1 = registry.register(model_set, report)
    v2 = registry.register(model_set, report)
    assert registry.versions() == sorted([v1, v2])
    assert registry.current() is None  # registered is not live
    registry.promote(v1)
    assert registry.current() == v1
    registry.promote(v2)
    assert registry.current() == v2
    loaded = registry.load()
    assert loaded.version == v2
    meta = loaded.metadata
    assert meta["version"] == v2 and meta["window"] == report["window"]
    assert set(meta["sha256"]) == set(ARTIFACTS)
    assert {"lightgbm", "scikit-learn", "arch", "numpy", "polars", "python"} <= set(
        meta["libraries"])
    assert registry.load(v1).version == v1
    assert not any(p.name.startswith(".tmp") for p in registry.versions_dir.iterdir())
    # current() re-reads the pointer only when the file changed: every change is still seen,
    # by this instance and by another process's (a fresh instance)
    registry.promote(v1)
    assert registry.current() == v1 == ModelRegistry(registry.root).current()
    registry.pointer.write_text(v2 + "\n")                  # edited in place by hand
    assert registry.current() == v2
    registry.pointer.unlink()
    assert registry.current() is None


def test_train_and_register(registry, bars) -> None:
    version = train_and_register(bars, registry, promote=False)
    assert registry.current() is None and registry.versions() == [version]
    assert train_and_register(bars, registry) == registry.current()


def test_crash_mid_promotion_keeps_old_pointer(registry, trained, monkeypatch) -> None:
    old = registry.register(*trained)
    new = registry.register(*trained)
    registry.promote(old)

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        registry.promote(new)
    monkeypatch.undo()
    assert (registry.root / "CURRENT.tmp").read_text().strip() == new  # written, not swapped
    restarted = ModelRegistry(registry.root)
    assert restarted.current() == old
    assert restarted.load().version == old


def test_stray_pointer_temp_file_is_ignored(registry, trained) -> None:
    version = registry.register(*trained)
    registry.promote(version)
    (registry.root / "CURRENT.tmp").write_text("half-writ")
    assert ModelRegistry(registry.root).load().version == version
    registry.promote(version)  # and a later promotion simply overwrites it
    assert registry.current() == version


def test_flipped_byte_is_named(registry, trained) -> None:
    version = registry.register(*trained)
    path = registry.versions_dir / version / "ridge.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{version}.*ridge\.json.*corrupt"):
        registry.load(version)
    with pytest.raises(ModelError, match="ridge.json"):
        registry.promote(version)


def test_truncated_or_missing_artifact_is_named(registry, trained) -> None:
    version = registry.register(*trained)
    lgbm = registry.versions_dir / version / "lgbm.txt"
    lgbm.write_text(lgbm.read_text()[:1000])
    with pytest.raises(ModelError, match=rf"{version}.*lgbm\.txt"):
        registry.load(version)
    lgbm.unlink()
    with pytest.raises(ModelError, match=rf"{version}.*lgbm\.txt.*missing"):
        registry.load(version)


def test_current_naming_missing_version(registry, trained) -> None:
    registry.pointer.write_text("20260101T000000Z-abcdef\n")
    with pytest.raises(ModelError, match="20260101T000000Z-abcdef.*does not exist"):
        registry.load()
    with pytest.raises(ModelError, match="does not exist"):
        registry.promote("20260101T000000Z-abcdef")
    registry.pointer.write_text("../../etc\n")  # not a version name at all
    with pytest.raises(ModelError, match="CURRENT.*does not exist"):
        registry.load()
    with pytest.raises(ModelError, match="no version promoted"):
        ModelRegistry(registry.root / "empty").load()


def test_lazy_load_and_unload(registry, trained) -> None:
    version = registry.register(*trained)
    registry.promote(version)
    lazy = LazyModel(registry)
    assert not lazy.loaded and lazy.version is None
    first = lazy.get()
    assert lazy.loaded and lazy.version == version and lazy.get() is first
    ref = weakref.ref(first.model_set)
    del first
    lazy.unload()
    assert not lazy.loaded and lazy.version is None
    assert ref() is None  # nothing kept the model alive: its memory can be returned
    assert lazy.get().version == version


def strict(text: str):
    """JSON as the standard has it: NaN and Infinity are refused."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_are_stored_as_null_with_the_reason(registry, trained) -> None:
    """`metrics.garch.holdout_var_ratio` NaN ended `bdt train` in `ValueError: Out of range
    float values are not JSON compliant: nan`."""
    model_set, report = trained
    metrics = {**report["metrics"],
               "garch": {**report["metrics"]["garch"], "holdout_var_ratio": float("nan")},
               "ridge": {**report["metrics"]["ridge"], "corr": np.float64("inf"),
                         "corr_why": "the forecasts are constant"}}
    version = registry.register(model_set, {**report, "metrics": metrics})
    path = registry.versions_dir / version / "metadata.json"
    meta = strict(path.read_text())
    assert meta["metrics"]["garch"]["holdout_var_ratio"] is None
    assert meta["metrics"]["garch"]["holdout_var_ratio_why"] == "not finite: nan"
    assert meta["metrics"]["ridge"]["corr"] is None                  # the producer's reason
    assert meta["metrics"]["ridge"]["corr_why"] == "the forecasts are constant"
    assert meta["metrics"]["lgbm"] == report["metrics"]["lgbm"]     # the rest as given
    registry.promote(version)
    assert registry.load().metadata == meta


def test_audit_log_lines_are_strict_json(registry) -> None:
    registry.log_event("gate.jsonl", {"dsr": {"dsr": float("nan"), "sharpe": -math.inf},
                                      "trades": np.int64(3)})
    line = strict((registry.root / "gate.jsonl").read_text().splitlines()[0])
    assert line["dsr"] == {"dsr": None, "dsr_why": "not finite: nan", "sharpe": None,
                           "sharpe_why": "not finite: -inf"}
    assert line["trades"] == 3


def test_finite_json_leaves_finite_values_alone() -> None:
    value = {"a": [1.5, np.float32(2.5), None, True, "x"], "b": {"c": np.int64(7)}}
    assert finite_json(value) == {"a": [1.5, 2.5, None, True, "x"], "b": {"c": 7}}
    assert finite_json([float("nan"), {"x": np.nan}]) == [None, {"x": None,
                                                                  "x_why": "not finite: nan"}]
