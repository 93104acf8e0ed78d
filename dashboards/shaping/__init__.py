"""Turning what dashboards.data reads into the tables, labels and text the views show (no plotly, no streamlit)."""
