"""The Streamlit layer (the only dashboards modules that import streamlit): the page, its views and widgets."""
