"""Jobs: every job run the scheduler recorded (``var/data/jobs.db``) with its outcome,
duration and peak memory against its slice's cap."""

import pandas as pd
import streamlit as st

from services.dashboard import charts, ui

st.title("Jobs")
runs = ui.job_runs(ui.var())
if not runs:
    st.info("no job run recorded yet (the scheduler writes var/data/jobs.db)")
    st.stop()

df = pd.DataFrame(runs)
counts = df.groupby(["job", "state"]).size().unstack(fill_value=0)
st.subheader("Outcomes")
st.dataframe(counts, width="stretch")

measured = [r for r in runs if r["peak_bytes"] is not None and r["cap_bytes"]][::-1]
if measured:
    st.subheader("Peak memory against the cap")
    st.altair_chart(charts.jobs(measured), width="stretch")
timed = [r for r in runs if r["duration_s"] is not None][::-1]
if timed:
    st.subheader("Duration")
    st.altair_chart(charts.durations(timed), width="stretch")

st.subheader(f"Runs ({len(runs)}, newest first)")
table = pd.DataFrame([{
    "id": r["id"], "job": r["job"], "trigger": r["trigger"], "slot": r["slot"],
    "outcome": r["state"], "started (UTC)": ui.at(r["started_at"]),
    "duration (s)": None if r["duration_s"] is None else round(r["duration_s"], 1),
    "peak": ui.mib(r["peak_bytes"]), "cap": ui.mib(r["cap_bytes"]),
    "peak % of cap": round(100 * r["peak_bytes"] / r["cap_bytes"], 1)
    if r["peak_bytes"] is not None and r["cap_bytes"] else None,
    "OOM kills": r["oom_kills"], "exit": r["exit_status"], "report": r["report"],
    "reason": r["reason"]} for r in runs])
st.dataframe(table, hide_index=True, width="stretch")
