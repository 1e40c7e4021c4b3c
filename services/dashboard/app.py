"""The dashboard's Streamlit entry point (``streamlit run services/dashboard/app.py``, which
``python -m services.dashboard`` runs after its memory check): one page per file in
``pages/``, all read-only."""

import streamlit as st

from shared.logs import adopt_streamlit

adopt_streamlit()      # Streamlit's own log lines escaped like every other (shared/logs.py)
st.set_page_config(page_title="bitdaytrader", page_icon=":material/monitoring:",
                   layout="wide")

PAGES = [
    st.Page("pages/live.py", title="Live", icon=":material/candlestick_chart:", default=True),
    st.Page("pages/resources.py", title="Resources", icon=":material/memory:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/schedule:"),
    st.Page("pages/backtests.py", title="Backtests and walk-forward", icon=":material/history:"),
    st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
]

st.navigation(PAGES).run()
