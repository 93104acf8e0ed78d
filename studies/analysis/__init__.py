"""The statistics of an export (numpy/scipy): intervals, paired tests, Holm, the bootstrap, the verdicts."""
