"""The Streamlit dashboard over results/ (app.py) and its streamlit-free loader and charts."""
