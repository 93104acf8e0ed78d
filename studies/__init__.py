"""Ray Tune + Optuna ablation studies of SALGL (scene count, graph depth, co-occurrence momentum, joint search).

Each study script (scene_count.py, graph_depth.py, momentum.py, tune.py) is a `StudySpec` plus
`get_args_parser()` and `main(args)`. The shared modules, one job each:

    spec.py       what a study is (StudySpec), the searched metric, StudyError
    cli.py        the command line: parser, --set, what --resume restores
    plan.py       GridPlan / SearchPlan: the base config and everything a run will do, checked before Ray
    search.py     Optuna sampler + Ray searcher + scheduler; the only use of Ray/Optuna internals
    trainable.py  the Ray trainable (all a Ray worker imports)
    callback.py   the Ray callback: trial events -> export, console lines
    cluster.py    start/join Ray (an unreachable --address fails in seconds), dashboard safety, resources per trial
    storage.py    Ray's experiment folder on a path or a URI; a multi-node cluster's shared-storage check
    monitor.py    what Ray's dashboard shows of a trial: its name, its progress as Ray metrics, its node
    runner.py     main(): the run from plan to summary; run_script(), the scripts' entry point
    export.py     study.json / trials.csv / epochs.csv / scenes/ writer (portable paths)
    schema.py     the results schema: file names, columns, keys (no torch/ray/streamlit)
    bench_overhead.py  `python -m studies.bench_overhead`: the study machinery's overhead, one node vs a cluster
"""
