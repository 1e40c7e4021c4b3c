"""Resources: every slice's memory and CPU over time against its cap, OOM kills, restarts,
the mode and the alerts — from the monitor's cache snapshot (now) and its SQLite history."""

import pandas as pd
import streamlit as st

from services.dashboard import charts, ui

MIB = ui.MIB

st.title("Resources")
hours = ui.window("resources_window", "24 hours")
snap = ui.snapshot(ui.var())
quotas = ui.cpu_quotas(ui.var())
order = {name: i for i, name in enumerate(quotas)}        # the tree, then the table's order
tree = next(iter(quotas))

mode = snap.get("mode") or {}
sample = snap.get("sample") or {}
if mode:
    since = mode.get("since")                            # epoch s (a sample's time)
    st.markdown(f"mode **{ui.plain(mode.get('mode'))}** since {ui.at(since or None)} UTC — "
                f"{ui.plain(mode.get('reason', ''))}")
if sample:
    enforced = "enforced" if sample.get("enforced") else \
        f"NOT ENFORCED ({sample.get('cgroup_reason')})"
    st.caption(f"sample of {ui.when(sample['ts'] * 1000)} UTC · cgroup limits {enforced} · "
               f"tree {ui.mib(sample.get('memory_bytes'))}, CPU "
               f"{sample.get('cpu_pct') or 0:.1f} % of its quota")
    now = [{"slice": name, "process memory": ui.mib(s["memory_process"]),
            "page cache": ui.mib(s["memory_page_cache"]), "cap": ui.mib(s["cap"]),
            "% of cap": None if not s["cap"] or s["memory_process"] is None
            else round(100 * s["memory_process"] / s["cap"], 1),
            "CPU cores": s["cpu_cores"],
            "CPU quota": s["cpu_quota"] if s["cpu_quota"] is not None else quotas.get(name),
            "OOM kills": s["oom_kills"], "source": s["source"]}
           for name, s in [(tree, sample["tree"]),
                           *sample["slices"].items()]]
    st.subheader("Slices now")
    st.dataframe(pd.DataFrame(now), hide_index=True, width="stretch")
    programs = [{"program": name, **p, "memory_process": ui.mib(p["memory_process"])}
                for name, p in sample["programs"].items()]
    st.subheader("Programs now")
    st.dataframe(pd.DataFrame(programs), hide_index=True, width="stretch")
else:
    st.info(snap.get("error", "no monitor snapshot"))

rows = ui.resource_history(ui.var(), hours)
st.subheader("Memory and CPU over time")
if rows:
    for row in rows:
        row["order"] = order.get(row["name"], len(order))
        row["memory_mib"] = None if row["memory"] is None else row["memory"] / MIB
        row["cap_mib"] = None if row["cap"] is None else row["cap"] / MIB
        row["quota"] = quotas.get(row["name"], quotas[tree])
    st.caption("process memory (MiB; the page cache is reclaimed first and is not shown) and "
               "CPU (cores, mean over each step); the dashed red line is the slice's cap")
    st.altair_chart(charts.against_cap(rows, "memory_mib", "cap_mib", "MiB"))
    st.altair_chart(charts.against_cap(rows, "cpu", "quota", "cores"))
    kills = {}
    for row in rows:
        if row["oom_kills"] is not None:
            kills[row["name"]] = max(kills.get(row["name"], 0), row["oom_kills"])
    st.subheader("OOM kills")
    st.dataframe(pd.DataFrame([{"slice": k, "OOM kills (counter)": v}
                               for k, v in sorted(kills.items(), key=lambda kv: order.get(
                                   kv[0], len(order)))]), hide_index=True)
else:
    st.info("no monitor history in this window (the monitor writes var/data/monitor.db)")

progs = ui.program_history(ui.var(), hours)
st.subheader("Restarts")
if progs:
    st.dataframe(pd.DataFrame([{
        "program": p["name"], "state": p["state"],
        "restarts in window": (p["restarts"] or 0) - (p["restarts_first"] or 0),
        "restarts seen": p["restarts"], "peak process memory": ui.mib(p["memory_peak"]),
        "last sample": ui.when(p["last_ts"])} for p in progs]), hide_index=True,
        width="stretch")
else:
    st.info("no program history in this window")

found = ui.alerts(ui.var(), hours)
st.subheader(f"Alerts ({len(found)})")
if found:
    df = pd.DataFrame(found).assign(time=lambda d: d["ts"].map(ui.when))
    counts = df.groupby(["kind", "severity"]).size().reset_index(name="alerts")
    st.dataframe(counts, hide_index=True)
    st.dataframe(df[["time", "severity", "kind", "subject", "message", "notified"]],
                 hide_index=True, width="stretch")
else:
    st.info("no alert in this window")

changes = ui.mode_changes(ui.var())
if changes:
    st.subheader("Mode changes")
    st.dataframe(pd.DataFrame(changes).assign(
        time=lambda d: d["ts"].map(ui.when),
        memory=lambda d: d["memory_bytes"].map(ui.mib))[
            ["time", "old", "mode", "reason", "memory", "cpu_pct"]],
        hide_index=True, width="stretch")
