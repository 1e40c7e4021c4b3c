"""Models: every registered version with its training window and holdout figures, which one
is promoted, and each version's promotion decision when the walk-forward gate recorded one —
from each version's metadata.json (no model is loaded)."""

from typing import Any

import pandas as pd
import streamlit as st

from services.dashboard import ui


def dig(meta: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(meta, dict):
            return None
        meta = meta.get(key)
    return meta


def rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


st.title("Models")
mdir = str(ui.config().model_dir)
versions = ui.models(mdir)
if not versions:
    st.info(f"no model version in {mdir} yet (bdt train registers and promotes one)")
    st.stop()

current = next((v["version"] for v in versions if v["current"]), None)
st.markdown(f"promoted: **{ui.plain(current or 'none')}** · {len(versions)} version(s)")
st.dataframe(pd.DataFrame([{
    "version": v["version"], "promoted": v["current"],
    "created": dig(v["metadata"], "created_at"),
    "trained on": f"{ui.when(dig(v['metadata'], 'window', 'from_ts'))} → "
                  f"{ui.when(dig(v['metadata'], 'window', 'train_to_ts'))}",
    "rows": dig(v["metadata"], "window", "rows"),
    "horizon": dig(v["metadata"], "horizon"),
    "lgbm AUC": rounded(dig(v["metadata"], "metrics", "lgbm", "auc")),
    "lgbm accuracy": rounded(dig(v["metadata"], "metrics", "lgbm", "accuracy")),
    "always-up accuracy": rounded(dig(v["metadata"], "metrics", "baseline",
                                      "always_up_accuracy")),
    "ridge corr": rounded(dig(v["metadata"], "metrics", "ridge", "corr")),
    "GARCH persistence": rounded(dig(v["metadata"], "metrics", "garch", "persistence")),
    "gate": ({True: "promote", False: "reject"}.get(dig(v["metadata"], "gate", "promote"))
             or ("promoted" if v["current"] else "-")),
    "error": dig(v["metadata"], "error")} for v in versions]), hide_index=True, width="stretch")

chosen = st.selectbox("version", [v["version"] for v in versions])
meta = next(v["metadata"] for v in versions if v["version"] == chosen)
gate = meta.get("gate")
if gate:
    st.subheader("Promotion gate decision")
    st.json(gate)
left, right = st.columns(2)
with left:
    st.subheader("Holdout figures")
    st.json(meta.get("metrics") or {})
with right:
    st.subheader("Training window and source")
    st.json({"window": meta.get("window"), "source": meta.get("source"),
             "features": meta.get("features"), "libraries": meta.get("libraries")})
