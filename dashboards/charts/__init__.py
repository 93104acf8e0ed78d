"""Plotly figures of the views, built from dashboards.shaping's tables (no streamlit, so tests can call them)."""
