"""When does SALGL discover scenes? Learned scenes against how visible the scene is in the image.

The synthetic generator's `synthetic_scene_visibility` is the probability that an image's background is
drawn from its true scene (else from a random one; the default 0.6). Arms, at K = the true number of scenes:

    global@0.6    K = 1, default visibility: the floor (no scenes; the reference arm)
    learned@V     SALGL's learned scenes on data of visibility V = 0, 0.6 (the default data) and 1
    oracle@0.6    the true scenes, default visibility: the ceiling (it also sees them at evaluation)

The learned arms' scene NMI (against the true scenes) and their gap to the oracle say whether better
visible scenes are found and whether finding them pays. Only backgrounds change with V: one seed gives the
same labels and objects at every V (salgl_core/data/synthetic.py). Synthetic data only.

    python studies/visibility.py                       # 5 arms x 3 seeds, CPU-sized
    python studies/visibility.py --values learned@1 --seeds 0 1 2 3 4
"""

from __future__ import annotations

from typing import Any

from studies import script
from studies.design.spec import ARM, StudyError, StudySpec

DEFAULT_VISIBILITY = 0.6
LEARNED_AT = (0.0, 0.6, 1.0)


def _name(source: str, visibility: float) -> str:
    return f"{source}@{visibility:g}"


ARMS = (_name("global", DEFAULT_VISIBILITY), *(_name("learned", v) for v in LEARNED_AT),
        _name("oracle", DEFAULT_VISIBILITY))


def arms(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each arm's config fields: its scene source, K, and the data's scene visibility."""
    if base["dataset"] != "synthetic":
        raise StudyError("the visibility study needs the synthetic dataset (its scene visibility is a generator "
                         "setting): drop --dataset/--recipe")
    k = int(base["synthetic_scenes"])
    out = {_name("global", DEFAULT_VISIBILITY): {"num_scenes": 1, "scene_source": "learned",
                                                 "synthetic_scene_visibility": DEFAULT_VISIBILITY}}
    for v in LEARNED_AT:
        out[_name("learned", v)] = {"num_scenes": k, "scene_source": "learned", "synthetic_scene_visibility": v}
    out[_name("oracle", DEFAULT_VISIBILITY)] = {"num_scenes": k, "scene_source": "oracle",
                                                "synthetic_scene_visibility": DEFAULT_VISIBILITY}
    return out


# What the dashboard shows above the study's results (study.json `note`).
NOTE = ("**When are scenes found?** Learned scenes on data whose backgrounds show the true scene more or "
         "less often (synthetic_scene_visibility), against the global graph (the floor, the reference) and "
         "the true scenes (the ceiling), both at the default visibility 0.6. The verdicts compare each arm "
         "with global@0.6, so for learned@0 and learned@1 they mix a change of data (backgrounds only: the "
         "labels and objects are the same image for image) with the change of method; the chart below "
         "sets them against the bands.")

SPEC = StudySpec(
    study="visibility", script=__file__, note=NOTE, axis=ARM, values=ARMS, arms=arms, reference_arm=ARMS[0],
    description="When does SALGL discover scenes? Learned scenes (K = the true number) on synthetic data whose "
                "backgrounds show the true scene with probability 0, 0.6 (the default) or 1, against the global "
                "graph (the floor, the reference) and the true scenes (the ceiling; the oracle also sees them at "
                "evaluation, so it is an upper bound, not a competitor); one trial per (arm, seed).")

get_args_parser, main = script.entry_points(SPEC)


if __name__ == "__main__":
    raise SystemExit(script.run_script(SPEC))
