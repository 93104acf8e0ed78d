"""The Streamlit dashboard over results/ (`streamlit run dashboards/app.py`), in layers that import downward only:

ui (the only streamlit importers: the page, its views, widgets and cached reads)
  -> charts (plotly figures) -> shaping (tables, labels and text) -> data (reading and validating results files).
app.py is the entry point; demo.py and demo_stats.py write demo exports (`python -m dashboards.demo DIR`) for
`make dashboard-demo` and the tests. The ui layer is not called `pages`: a pages/ folder beside app.py would make
Streamlit list each of its modules as a page of its own.
"""
