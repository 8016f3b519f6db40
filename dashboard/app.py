"""The devcompare dashboard: the entry file only routes; each page is one file under dashboard/views/
(not pages/: Streamlit would serve that directory by itself, without this router, to a first visitor who opens a
page URL directly after a restart).

Run it with `runner dashboard [--port P] [--db URL]`, or `streamlit run dashboard/app.py -- --db URL`.
"""
import streamlit as st

from dashboard import _data as data
from dashboard import _ui as ui

st.set_page_config(page_title="devcompare", page_icon=":material/compare_arrows:", layout="wide")
page = st.navigation([
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/trends.py", title="Trends", icon=":material/show_chart:"),
    st.Page("views/problems.py", title="Problems", icon=":material/rule:"),
    st.Page("views/runs.py", title="Runs", icon=":material/list:"),
    st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
    st.Page("views/serving.py", title="Serving", icon=":material/speed:"),
])
ui.sidebar(data.store_url())
page.run()
