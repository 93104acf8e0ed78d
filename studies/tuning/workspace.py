"""What a study leaves on disk: the trial checkpoints in Ray's experiment folder, and dropping them once
the study has finished.

A run writes two folders: its export, `<results-dir>/<study>/<run>/` (default `runs/`, git-ignored; the
committed examples are in `results/`), which is what lasts, and Ray's experiment folder,
`<storage-path>/<study>/<run>/` (default `.ray_results/`, git-ignored), which holds the experiment state
and each trial's last checkpoint (model, EMA model and optimiser: megabytes per trial on the synthetic
preset, hundreds on ResNet-101). Those checkpoints serve `--resume` only: once every trial has ended,
nothing reads them, so by default they are deleted then (`--keep-checkpoints` keeps them). An
unfinished run keeps them, its resume needs them. What stays is kilobytes per trial. Only a local
folder is cleaned; a URI --storage-path (studies.tuning.storage) keeps everything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Ray Tune names a trial's checkpoints <trial folder>/checkpoint_000000, checkpoint_000001, ...
CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dirs(exp_dir: str | Path) -> list[Path]:
    """The trial checkpoint folders of one Ray experiment folder."""
    return sorted(d for d in Path(exp_dir).glob(f"*/{CHECKPOINT_PREFIX}*")
                  if d.is_dir() and not d.is_symlink() and d.name[len(CHECKPOINT_PREFIX):].isdigit())


def folder_bytes(path: str | Path) -> int:
    """Bytes of the files under `path` (links not followed); 0 if it does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def drop_checkpoints(exp_dir: str | Path) -> int:
    """Delete the trial checkpoints of a finished run's Ray folder; returns the bytes freed. The experiment
    state and the trials' result logs stay: Ray can still read the run (`ExperimentAnalysis`)."""
    freed = 0
    for d in checkpoint_dirs(exp_dir):
        size = folder_bytes(d)
        shutil.rmtree(d)
        freed += size
    return freed


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def finish_ray_folder(exp_dir: str | Path, keep_checkpoints: bool, shown: str) -> str:
    """After a FINISHED run: drop its checkpoints unless asked to keep them; the summary line saying so
    (`shown`: the folder as the summary names it)."""
    if keep_checkpoints:
        return f"  Ray's folder: {shown} ({megabytes(folder_bytes(exp_dir))}, trial checkpoints kept)"
    freed = drop_checkpoints(exp_dir)
    if not freed:
        return f"  Ray's folder: {shown} ({megabytes(folder_bytes(exp_dir))}, no trial checkpoints)"
    return (f"  Ray's folder: {shown} ({megabytes(folder_bytes(exp_dir))}; deleted the trial checkpoints, "
            f"{megabytes(freed)}: only --resume needs them, --keep-checkpoints keeps them)")
