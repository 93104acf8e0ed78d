"""`python -m studies.analyze RUN_DIR`: (re)compute a study export's analysis.json and comparisons.csv.

The statistics live in studies/analysis/analyze.py; this is their command line.
"""

from studies.analysis.analyze import main

if __name__ == "__main__":
    raise SystemExit(main())
