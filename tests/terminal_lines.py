"""The project's own terminal lines (studies/tuning/runner.py, callback.py, cluster.py, plan.py, trackers.py,
packing.py, studies/analysis/summary.py, salgl_core/pretrain.py and features.py) as regular expressions: anything else
a study prints is Ray's, Optuna's or a tracker's noise (tests/test_studies_terminal.py, tests/test_studies_trackers.py).
"""

from __future__ import annotations

import re

# Each matched against a whole line.
ALLOWED = [re.compile(p) for p in (
    r"",
    # before the trials
    r"note: .+",
    r"WARNING: the Ray dashboard will listen on .+",
    r"Ray dashboard: http://\S+  \(token authentication is .+\)",
    r"joined the Ray cluster at .+",
    r"memory: .+",  # GPU trials: one trial's estimated memory against its GPU share (studies/tuning/packing.py)
    r"pretraining small_cnn.+",
    r"feature cache: .+",
    r"init_from \S+: .+",  # --init-from: what the run starts from, and its table (salgl_core/transfer.py)
    r"  +name +shape +why",
    r"  (loaded|re-initialised|skipped) +\S+.*",
    r"\w+ \S+: \d+ trials, up to \d+ at once, \S+ GPU and \S+ CPU each; export: .+",
    # the trials
    r"start    \w+ .+",
    r"         \w+ epoch \d+/\d+  mAP [\d.]+  EMA mAP [\d.]+  loss .+",
    r"\[\d+/\d+\] (FINISHED|STOPPED|ERROR|DIVERGED) +\w+ .+",
    r"trial \w+ failed.*; retrying from its last checkpoint \(retry \d+\)",
    r"warning: .+",
    # the closing summary
    r"\w+ \S+: (FINISHED|INTERRUPTED|FAILED); export in .+",
    r"  best EMA mAP \(the paper's reported number\), mean over seeds:",
    r"  \w+ = \S+ +[\d.]+ .+",
    r"  best configuration: .+",
    r"    \w+=.+",
    r"\w+/\S+: best_mAP_ema \(percent\)(, reference .+, 95% intervals)?",
    r" +value +seeds +mean .+",
    r" +\S+?\*? +\d+ +(-|[\d.]+) .+",
    r"  \S+: (no detectable difference|not detectable after Holm's correction|better by|worse by|no seed-level test"
    r"|no comparison|no difference|Holm: |.*no test is possible).*",
    r"  (budget|note|conclusion|next|dashboard|optuna|Ray's folder): .+",
    r"  (best|fanova|ped_anova|reference|the synthetic preset's value|the paper's configuration): .+",  # a search
    r"  preparation \d+ s, one-off.*",
    r"  trials \d+ s of work, \d+ at once -> ideal \d+ s; wall .+",
    r"  (ERROR|DIVERGED) \w+: .+",
    r"interrupted; finish it with:",
    r"  \S*python\S* \S+ --resume --name .+",
    r"logged to (MLflow|W&B)( offline)?: .+",  # --log-to (studies/tuning/trackers.py)
    # Ray's own warning about this machine, which a user should see: a /dev/shm too small for the object store
    # (Docker's default 64 MB), so it falls back to /tmp. Not on every machine, so allowed by name.
    r".*WARNING.*The object store is using \S+ instead of /dev/shm because /dev/shm has only \d+ bytes available.*",
)]


def foreign_lines(out: str) -> list[str]:
    """The lines of `out` that are none of the project's."""
    return [ln for ln in out.splitlines() if not any(p.fullmatch(ln) for p in ALLOWED)]
