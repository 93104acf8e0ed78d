"""The Streamlit dashboard over results/: app.py lays out the pages; the other modules have no streamlit.

files (reading and validating results files), runs (listing and summarising runs), paper (the paper's
numbers), views (shaping data for the views), fmt (formatting), charts (plotly figures), paths (the
results root), demo (demo exports for `python -m dashboards.demo DIR` and the tests).
"""
