"""The running stack, under the real supervisord, on the synthetic feed.

1. latency at a live-like pace (a 1m bar every 20 ms, so the stack is idle between bars):
   from the bot's own clock, bar published → its prediction received (through the bus both
   ways) and bar → prediction → decision; the predictor's inference time — alone, then while
   two CPU-bound processes run in the `batch` slice (the CPU weights must protect the bot);
2. a soak as fast as the pipeline goes, then every slice's memory (cgroup usage and peak) and
   the rolling window's size per 10,000 bars.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from bench import common
from shared.models.training import train
from shared.programs import always_on_slices
from shared.resources.allocation import load_allocation
from shared.resources.cgexec import load_table, slice_report
from tests.stack import AUTOSTART, Stack


def _stack(speed: str, **env: str) -> Stack:
    stack = Stack(BDT_MARKET__FEED="synthetic", BDT_MARKET__REPLAY_SPEED=speed,
                  BDT_BOT__WAIT_SUBSCRIBERS="2", BDT_MODEL__TRAIN_BARS="20000", **env)
    train(stack.cfg)
    return stack.start()


def _throttled(stack: Stack) -> dict[str, int]:
    """Quota periods each slice (and the parent) has been throttled in, so far."""
    report = slice_report(stack.cfg, load_table(stack.cfg))
    return {r["slice"]: r["cpu_throttled"] for r in report["slices"]
            if r["cpu_throttled"] is not None}


def _collect(stack: Stack, seconds: float) -> dict[str, Any]:
    """The bot's and the predictor's own timings of this window's bars."""
    before, before_predictor = stack.status("bot"), stack.status("predictor")
    throttled_before = _throttled(stack)
    time.sleep(seconds)
    bot = stack.status("bot")
    predictor = stack.status("predictor")
    bot_window = stack.call("bot", "latency", last=max(1, bot["decisions"] - before["decisions"]))
    predictor_window = stack.call("predictor", "latency", last=max(
        1, predictor["predictions_published"] - before_predictor["predictions_published"]))
    throttled = {name: after - throttled_before.get(name, 0)
                 for name, after in _throttled(stack).items()}
    return {"bot_bar_to_prediction": bot_window["bar_to_prediction"],
            "throttled_periods": throttled,
            "bot_bar_to_decision": bot_window["bar_to_decision"],
            "bot_decision_to_record": bot_window["decision_to_record"],
            "predictor_inference": predictor_window["inference"],
            "decisions": bot["decisions"]}


def latency(quick: bool) -> dict[str, Any]:
    stack = _stack("3000")                        # a 1m bar every 20 ms
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        stack.wait_running(AUTOSTART)
        time.sleep(5)                              # warm-up: features need 60 bars
        seconds = 10 if quick else 40
        alone = _collect(stack, seconds)
        for _ in range(2):
            hogs.append(subprocess.Popen(["bdt", "cgexec", "batch", "--", sys.executable, "-c",
                                          common.HOG], env=stack.env))
        time.sleep(1)
        busy = _collect(stack, seconds)
        report = slice_report(stack.cfg, load_table(stack.cfg))
        batch_cpu = next(r for r in report["slices"] if r["slice"] == "batch")
        return {"alone": alone, "batch_busy": busy, "enforced": report["enforced"],
                "batch_cpu_s": batch_cpu["cpu_usage_seconds"]}
    finally:
        for hog in hogs:
            common.stop(hog)
        stack.remove()


def soak(quick: bool, minutes: float) -> dict[str, Any]:
    stack = _stack("0")                           # as fast as the pipeline goes
    try:
        stack.wait_running(AUTOSTART)
        time.sleep(60 * (0.5 if quick else minutes))
        report = slice_report(stack.cfg, load_table(stack.cfg))
        status = {name: stack.status(name) for name in ("bot", "predictor", "cache", "history")}
        history, bot = status["history"], status["bot"]
        window = next(iter(history["symbols"].values()))
        return {
            "minutes": 0.5 if quick else minutes, "bars": bot["bars_published"],
            "decisions": bot["decisions"], "fills": len(stack_fills(stack)),
            "slices": {r["slice"]: {"usage": r["memory_current"], "peak": r["memory_peak"],
                                    "anon": r["memory_anon"], "file": r["memory_file"],
                                    "cap": r["cap_bytes"]} for r in report["slices"]},
            "rss": {name: s["rss_bytes"] for name, s in status.items()},
            "window_bytes_per_10k_bars":
                window["window_bytes"] * 10_000 // max(1, window["window"]),
            "store_bytes": history["store_bytes"],
        }
    finally:
        stack.remove()


def stack_fills(stack: Stack) -> list[Any]:
    from shared.bus.client import BusClient

    with BusClient("bot", stack.cfg) as bot:
        return bot.call("trades", limit=1000)   # one reply stays under bus.max_message_bytes


def bench(quick: bool, minutes: float = 30.0) -> dict[str, Any]:
    lat = latency(quick)
    rows = []
    for name in ("alone", "batch_busy"):
        r = lat[name]
        rows.append([name] + [r[timing][q] for timing in (
            "bot_bar_to_prediction", "predictor_inference", "bot_bar_to_decision",
            "bot_decision_to_record") for q in ("p50_us", "p99_us")])
    common.print_table("latency, a 1m bar every 20 ms (µs)",
                       ["", "bar→pred p50", "p99", "inference p50", "p99",
                        "bar→decision p50", "p99", "then exec+record p50", "p99"], rows)
    for name in ("alone", "batch_busy"):
        print(f"  throttled quota periods, {name}: {lat[name]['throttled_periods']}")
    common.verdict(lat["alone"]["predictor_inference"]["p99_us"] <= 1000,
                   "predictor inference p99 ≤ 1 ms")
    common.verdict(lat["alone"]["bot_bar_to_decision"]["p99_us"] <= 2000,
                   "bar→decision p99 ≤ 2 ms alone")
    common.verdict(lat["batch_busy"]["bot_bar_to_decision"]["p99_us"] <= 5000,
                   "bar→decision p99 ≤ 5 ms with the batch slice busy")
    soaked = soak(quick, minutes)
    mib = 1 << 20
    always_on = always_on_slices(load_allocation().slices.values())
    rss = soaked["rss"]

    def mb(value: int | None) -> str:
        return "-" if not value else f"{value / mib:.0f}"

    rows = [[name, mb(s["usage"]), mb(s["peak"]), mb(s["anon"]), mb(s["file"]), mb(s["cap"]),
             mb(rss.get(name))] for name, s in soaked["slices"].items()]
    common.print_table(f"memory after {soaked['minutes']} min of replay as fast as it goes "
                       f"({soaked['bars']:,} bars, ≥{soaked['fills']} fills) MiB",
                       ["slice", "usage", "peak", "of it: anon", "page cache", "cap",
                        "service RSS"], rows)
    total = sum(soaked["slices"][s]["usage"] or 0 for s in always_on)
    anon = sum(soaked["slices"][s]["anon"] or 0 for s in always_on)
    print(f"  always-on slices together: {total / mib:.0f} MiB ({anon / mib:.0f} MiB of it "
          "process memory, the rest page cache); rolling window: "
          f"{soaked['window_bytes_per_10k_bars'] / 1024:.0f} KiB per 10,000 bars")
    common.verdict(total <= 600 * mib, "always-on slices together ≤ 600 MiB")
    return {"latency": lat, "soak": soaked, "always_on_bytes": total}
