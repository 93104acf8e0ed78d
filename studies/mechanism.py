"""Does SALGL's gain come from scenes, and does it find them? Five arms over paired seeds, compared with
the global graph (one co-occurrence matrix for every image):

    no_graph   T = 0: no label graph at all (the floor of the graph's contribution)
    global     K = 1: one global co-occurrence graph (the reference arm)
    learned    K = true K, scenes from SALGL's scene classifier (the method)
    oracle     K = true K, every image's true scene (synthetic data only): perfect scene discovery
    random     K = true K, a fixed random scene per image (a negative control: scenes that mean nothing)

The oracle also sees the true scene at evaluation time, so it is an upper bound on what perfect scene
discovery could give, not a fair competitor. On a real dataset (no true scenes) the oracle arm is left out
and K is the recipe's.

    python studies/mechanism.py                        # synthetic data, CPU-sized, 5 arms x 5 seeds
    python studies/mechanism.py --values learned oracle --seeds 0 1 2
"""

from __future__ import annotations

from typing import Any

from studies import script
from studies.design.spec import ARM, StudySpec

ARMS = ("no_graph", "global", "learned", "oracle", "random")


def arms(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each arm's config fields. K for the scene arms is the synthetic world's true K (the recipe's on a real
    dataset, where there is no oracle). `no_graph` keeps K = 1: with T = 0 the scenes would only feed the
    entropy terms, which would still train the backbone towards them."""
    synthetic = base["dataset"] == "synthetic"
    k = int(base["synthetic_scenes"]) if synthetic else int(base["num_scenes"])
    out = {"no_graph": {"gnn_steps": 0, "num_scenes": 1, "scene_source": "learned"},
           "global": {"num_scenes": 1, "scene_source": "learned"},
           "learned": {"num_scenes": k, "scene_source": "learned"},
           "oracle": {"num_scenes": k, "scene_source": "oracle"},
           "random": {"num_scenes": k, "scene_source": "random"}}
    if not synthetic:
        del out["oracle"]  # no true scenes to give it
    return out


# What the dashboard shows above the study's results (study.json `note`).
NOTE = ("**Where the gain comes from.** Arms: no_graph (T = 0, no label graph), global (K = 1, one "
        "co-occurrence graph: the reference), learned (SALGL's own scenes), oracle (each image's true "
        "scene), random (a fixed random scene per image: scenes that mean nothing). The oracle also sees "
        "the true scene at evaluation time: it is an upper bound on what perfect scene discovery could "
        "give, not a fair competitor. The trials table's scene_nmi says how close each trial's scenes are "
        "to the true ones (random assignment scores about 0, the true scenes 1).")

SPEC = StudySpec(
    study="mechanism", script=__file__, note=NOTE, axis=ARM, values=ARMS, arms=arms, reference_arm="global",
    default_seeds=(0, 1, 2, 3, 4),  # five, not three: telling the arms apart is this study's point
    description="Where does SALGL's gain come from? Arms no_graph (T = 0), global (K = 1, the reference), learned "
                "(SALGL's scenes), oracle (the true scenes, synthetic data only; it also sees them at evaluation, "
                "so it is an upper bound, not a competitor) and random (a fixed random scene per image), K = the "
                "true number of scenes; one trial per (arm, seed), every trial run to the end.")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
