"""The Service base, in process: timing rings and the `latency` op a benchmark reads."""

from __future__ import annotations

import pytest

from shared.bus.service import Service
from shared.config import load_config
from shared.protocol import errors


class Timed(Service):
    name = "timed"


def test_latency_reports_only_the_last_samples_asked_for(var_dir):
    svc = Timed(load_config({"BDT_VAR": str(var_dir)}))
    ring = svc.timing("step")
    assert svc.timing("step") is ring                     # one ring per name
    ring.extend([1000.0] * 100 + [10.0] * 10)             # a slow phase, then a fast one
    everything = svc.handle("latency", {})["step"]
    assert (everything["n"], everything["p99_us"]) == (110, 1000.0)
    window = svc.handle("latency", {"last": 10})["step"]
    assert window == {"p50_us": 10.0, "p99_us": 10.0, "max_us": 10.0, "n": 10}
    assert everything["max_us"] == 1000.0
    ring.extend([5.0] * 6000)
    assert len(ring) == 5000                              # bounded: the newest 5000 only
    for bad in (0, -3, "7"):
        with pytest.raises(errors.MessageError, match="last"):
            svc.handle("latency", {"last": bad})
