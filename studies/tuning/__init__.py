"""The Ray Tune / Optuna layer: plan, searcher, trainable, callback, cluster, storage, runner."""
