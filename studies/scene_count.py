"""Ablation of the number of latent scenes K (`num_scenes`); K = 1 is one global co-occurrence graph.

    python studies/scene_count.py                      # synthetic data, CPU-sized, K in 1 2 4 8, 3 seeds
    python studies/scene_count.py --dataset coco --data-root /data/coco   # recipe paper-coco-r101-448: K = 6 is
                                                                          # the paper's value; 1 GPU per trial
"""

from __future__ import annotations

from studies import script
from studies.design.spec import StudySpec

SPEC = StudySpec(
    study="scene_count", script=__file__, axis="num_scenes", values=(1, 2, 4, 8),
    description="How many latent scenes does SALGL need? One trial per (num_scenes, seed), every trial run to "
                "the end; K = 1 removes scene awareness (one global co-occurrence matrix).")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
