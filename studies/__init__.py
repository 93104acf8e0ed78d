"""Ray Tune + Optuna ablation studies of SALGL: the named studies (scene_count.py, ...), `python -m studies.ablate`
for any other, over four layers that import downward only: tuning (Ray/Optuna) -> analysis (statistics) ->
exports (the export and its schema) -> design (what a study is). README.md's Layout lists every module.
"""
