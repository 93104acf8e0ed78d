"""Benchmarks that print one JSON object each (speed goals live here, not in timed test asserts).

    python -m salgl_core.bench attention [--batch 32] [--step-batch 8] [--device cuda] [--amp bf16]
    python -m salgl_core.bench loader [--workers 0 1 2] [--real-data DIR]

`attention` (bench/attention.py): the bilinear attention and the whole train step, reference vs the
exact fast path. `loader` (bench/loader.py): the training data pipeline vs bare JPEG decoding. Both
default to the paper's shapes; their flags shrink them (the tests run them at tiny shapes on a CPU).
"""
