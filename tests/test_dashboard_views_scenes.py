"""dashboards/shaping/scenes.py: typical labels per scene, and the learned-vs-true NMI beside its baselines."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from dashboards import demo
from dashboards.data.files import load_scene
from dashboards.data.runs import load_run
from dashboards.shaping import scenes as S


def test_typical_labels(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    scene = load_scene(run.scene_files["sc_4_0"])
    assert scene.contingency.shape == (4, 4)
    top = S.typical_labels(scene, top=3)
    assert len(top) == 12
    # The demo makes scene k favour labels 5k..5k+4.
    for k in range(4):
        labels = top[top["scene"] == k]["label"]
        assert all(5 * k <= int(name[-2:]) < 5 * k + 5 for name in labels)
    assert (top["lift"] > 1).all() and top["share"].between(0, 1).all()
    # Counts are the file's soft (fractional) diagonal entries, as exported.
    first = top.iloc[0]
    assert first["count"] == scene.diag[0, scene.class_names.index(first["label"])]
    assert (top["count"] % 1 != 0).any()
    coco = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    coco_scene = load_scene(coco.scene_files["gd_0_0"])
    assert coco_scene.class_names[0] == "person" and coco_scene.nmi is None and coco_scene.contingency is None


def test_contingency_nmi_matches_the_trainer_nmi():
    """The same number salgl_core.metrics.nmi wrote as true_scene_nmi, from the table alone."""
    metrics = pytest.importorskip("salgl_core.metrics")
    rng = np.random.default_rng(0)
    for k, kt, n, noise in ((4, 4, 500, 0.3), (2, 5, 300, 0.8), (6, 3, 1000, 0.0), (3, 3, 50, 1.0)):
        true = rng.integers(0, kt, n)
        learned = np.where(rng.random(n) < noise, rng.integers(0, k, n), true % k)
        table = metrics.contingency(learned, true, k, kt)
        assert S.contingency_nmi(table) == pytest.approx(metrics.nmi(learned, true), abs=1e-12)
    # Edge cases as sklearn: one group on both sides matches perfectly, on one side carries no information.
    assert S.contingency_nmi(np.array([[7, 0], [0, 0]])) == 1.0
    assert S.contingency_nmi(np.array([[3, 4, 5]])) == 0.0
    assert S.contingency_nmi(np.array([[10, 0], [0, 10]])) == pytest.approx(1.0)
    assert S.contingency_nmi(np.array([[10, 0, 0], [0, 10, 0], [0, 0, 0]])) == pytest.approx(1.0)
    assert S.contingency_nmi(np.array([[10, 10], [10, 10]])) == 0.0


def test_random_assignment_keeps_the_marginals_and_scores_near_zero():
    table = np.array([[200, 3, 9, 1], [4, 180, 2, 7], [5, 6, 210, 3], [8, 2, 1, 190]])
    rnd = S.random_assignment_nmis(table)
    assert rnd.shape == (S.RANDOM_PERMUTATIONS,)
    # Seeded: the same table gives the same numbers; another seed other numbers of the same size.
    assert np.array_equal(rnd, S.random_assignment_nmis(table))
    other = S.random_assignment_nmis(table, seed=1)
    assert not np.array_equal(rnd, other) and other.mean() == pytest.approx(rnd.mean(), rel=0.3)
    # Chance level on 830 images: about (K-1)(K_true-1) / (2N) nats of MI, so NMI of a few thousandths.
    assert 0 < rnd.mean() < 0.02 and rnd.max() < 0.05
    assert S.contingency_nmi(table) > 0.7
    # Both marginals are kept: a table whose learned scenes hold 0 or all images scores 0 whatever the shuffle.
    assert np.all(S.random_assignment_nmis(np.array([[0, 0], [30, 70]]), n=20) == 0.0)
    # On 6 images the exact chance level is the mean over all 720 orders of the true labels (every table
    # with the same row and column sums, each as often as a uniform shuffle draws it).
    small = np.array([[2, 1], [0, 3]])
    learned = np.array([0, 0, 0, 1, 1, 1])  # small's row sums; its column sums are the true labels below
    exact = np.mean([S.contingency_nmi(np.bincount(learned * 2 + np.array(t), minlength=4).reshape(2, 2))
                     for t in itertools.permutations([0, 0, 1, 1, 1, 1])])
    assert S.random_assignment_nmis(small, n=4000).mean() == pytest.approx(exact, abs=0.015)
    assert exact > 0.05  # so few images score well above 0 by chance: the reason to show this baseline


def test_nmi_context_from_a_scene_file(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    scene = load_scene(run.scene_files["sc_4_0"])
    ctx = S.nmi_context(scene)
    assert ctx.learned == scene.nmi == json.loads(run.scene_files["sc_4_0"].read_text())["true_scene_nmi"]
    # The demo's true_scene_nmi is the contingency table's own NMI, as the trainer writes it.
    assert ctx.learned == pytest.approx(S.contingency_nmi(scene.contingency), abs=1e-4)
    assert 0 < ctx.random_mean < ctx.random_high < 0.05 < ctx.learned <= ctx.oracle == 1.0
    assert (ctx.learned_scenes, ctx.true_scenes, ctx.capped) == (4, 4, False)
    # Passing cached shuffles gives the same context.
    assert S.nmi_context(scene, S.random_assignment_nmis(scene.contingency)) == ctx
    # K = 2 learned scenes for 4 true ones: even a perfect grouping stays below 1.
    two = S.nmi_context(load_scene(run.scene_files["sc_2_0"]))
    assert two.capped and two.learned_scenes == 2
    # No NMI in the file but a table: computed from it. No table: no baselines.
    scene.nmi = None
    assert S.nmi_context(scene).learned == pytest.approx(S.contingency_nmi(scene.contingency))
    scene.contingency, scene.nmi = None, 0.3
    assert S.nmi_context(scene) == S.NmiContext(0.3, None, None, 1.0, 0, 0)
