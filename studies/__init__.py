"""Ray Tune + Optuna ablation studies of SALGL (scene count, graph depth, co-occurrence momentum, joint search).

`studies/ablation.py` holds the shared wiring (command line, Ray, Optuna, the trainable); `studies/export.py`
writes the study export in results/ (schema: results/README.md). Each study script is a few lines on top.
"""
