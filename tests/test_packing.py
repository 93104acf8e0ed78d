"""Packing trials onto GPUs (studies/tuning/packing.py): a trial whose estimated memory exceeds its GPU share is
refused before Ray starts, one that fits is let through with one line, CPU trials pay nothing, and one GPU's
memory comes from --gpu-memory-gb or Ray's accelerator types. No GPU is needed: --gpu-memory-gb stands for it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray

from salgl_core.memory import GB
from salgl_core.presets import SMOKE
from studies import scene_count
from studies.design.spec import StudyError
from studies.script import run_script
from studies.tuning import packing
from studies.tuning.plan import make_plan

ARGV = ["--smoke", "--values", "2", "--seeds", "0"]
CLASSES = SMOKE["synthetic_classes"]


def _args(tmp: Path, *argv: str):
    return scene_count.get_args_parser().parse_args(
        [*ARGV, *argv, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray")])


@pytest.fixture(scope="module")
def smoke_plan(tmp_path_factory):
    return make_plan(_args(tmp_path_factory.mktemp("plan")), scene_count.SPEC)


@pytest.fixture(scope="module")
def smoke_estimate(smoke_plan):
    """The smoke study's plan and the estimate of its largest trial (a second or two to trace)."""
    est, _ = packing.estimate(smoke_plan, CLASSES)
    return smoke_plan, est


@pytest.mark.slow
def test_a_trial_larger_than_its_gpu_share_is_refused_before_ray_starts(tmp_path, capsys, smoke_estimate):
    _, est = smoke_estimate
    card = math.ceil(est.total / GB * 100) / 100 + 0.01  # one such GPU holds a trial, half of one does not
    argv = [*ARGV, "--gpus-per-trial", "0.5", "--gpu-memory-gb", f"{card:g}",
            "--results-dir", str(tmp_path / "results"), "--storage-path", str(tmp_path / "ray")]
    assert run_script(scene_count.SPEC, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: a trial needs about {est.total / GB:.1f} GB of GPU memory")
    assert f"more than its share, 0.5 of one {card:g} GB GPU (--gpu-memory-gb {card:g}) = {card / 2:.1f} GB" in err[0]
    assert "raise --gpus-per-trial to 1 (1 trial per GPU)" in err[0]
    assert not ray.is_initialized()
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_trial_that_fits_its_share_goes_on_with_one_line(tmp_path, capsys, smoke_estimate):
    plan, est = smoke_estimate
    card = 2.5 * est.total / GB
    packing.before_ray(_args(tmp_path, "--gpus-per-trial", "0.5", "--gpu-memory-gb", str(card)), plan, CLASSES)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"memory: a trial needs about {est.total / GB:.1f} GB")
    assert out[0].endswith("holds it")


def test_cpu_trials_are_not_estimated(tmp_path, capsys, monkeypatch, smoke_plan):
    plan = smoke_plan

    def no_estimate(*_args, **_kwargs):
        raise AssertionError("a CPU study must not trace the model")

    monkeypatch.setattr("salgl_core.memory.estimate_train_memory", no_estimate)
    args = _args(tmp_path, "--gpus-per-trial", "0", "--gpu-memory-gb", "1")
    packing.before_ray(args, plan, CLASSES)
    packing.after_ray(args, plan, CLASSES, 0.0, [])
    packing.before_ray(_args(tmp_path, "--gpu-memory-gb", "1"), plan, CLASSES)  # no --gpus-per-trial: Ray decides
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_ambiguous_card_and_unknown_card_say_packing_was_not_checked(tmp_path, capsys, smoke_estimate):
    plan, est = smoke_estimate
    total = est.total / GB
    line = packing.check(plan, CLASSES, 1.0, ((0.8 * total, 1.5 * total), "Ray's accelerator type A100"))
    assert "may not hold it: packing not checked (give --gpu-memory-gb)" in line
    with pytest.raises(StudyError, match="more than its share"):
        packing.check(plan, CLASSES, 1.0, ((0.5 * total, 0.9 * total), "two sizes, both too small"))
    nodes = [{"Alive": True, "Resources": {"GPU": 4.0, "accelerator_type:RTX-PRO-6000": 1.0}}]
    packing.after_ray(_args(tmp_path, "--address", "10.0.0.1:6379"), plan, CLASSES, 1.0, nodes)
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"memory: a trial needs about {total:.1f} GB") and "packing not checked: Ray reports GPU " \
        "type RTX-PRO-6000, whose memory this study does not know (give --gpu-memory-gb)" in out


def test_an_estimate_that_fails_does_not_stop_the_study(tmp_path, capsys, monkeypatch, smoke_plan):
    def broken(*_args, **_kwargs):
        raise RuntimeError("an operator fake tensors cannot run\nmore detail")

    monkeypatch.setattr("salgl_core.memory.estimate_train_memory", broken)
    packing.before_ray(_args(tmp_path, "--gpus-per-trial", "0.5", "--gpu-memory-gb", "80"), smoke_plan, CLASSES)
    assert capsys.readouterr().out == ("memory: the GPU memory estimate failed (RuntimeError: an operator fake tensors "
                                       "cannot run); packing not checked\n")


def test_every_value_of_the_axis_is_estimated(smoke_plan):
    """A batch or image size may be a study's axis: each value's config is estimated, not only the first point's."""
    configs = packing.memory_configs(smoke_plan)
    assert {c.model.num_scenes for c in configs} == set(smoke_plan.values) == {2, 4}


def test_one_gpus_memory_from_rays_accelerator_types():
    def node(kind: str | None, gpus: float = 8.0, alive: bool = True) -> dict:
        res = {"CPU": 16.0, **({"GPU": gpus} if gpus else {})}
        return {"Alive": alive, "Resources": {**res, **({f"accelerator_type:{kind}": 1.0} if kind else {})}}

    assert packing.ray_gpu([node("H100")]) == ((80,), "Ray's accelerator type H100")
    assert packing.ray_gpu([node("H100"), node("A10G"), node("L4", alive=False)])[0] == (24,)  # the smallest card
    assert packing.ray_gpu([node("A100")])[0] == (40, 80)
    assert packing.ray_gpu([node("A100-80G")])[0] == (80,)
    assert packing.ray_gpu([node(None, gpus=0)]) == "Ray reports no GPU type"
    assert "GPU type B200" in packing.ray_gpu([node("B200")])


def test_gpu_memory_flag_wins_and_must_be_positive(tmp_path):
    assert packing.driver_gpu(_args(tmp_path, "--gpu-memory-gb", "80")) == ((80.0,), "--gpu-memory-gb 80")
    with pytest.raises(StudyError, match="--gpu-memory-gb 0 is invalid"):
        packing.driver_gpu(_args(tmp_path, "--gpu-memory-gb", "0"))
    # Joining a cluster: the driver's own GPU (if any) says nothing about the workers'.
    assert packing.driver_gpu(_args(tmp_path, "--address", "10.0.0.1:6379")) is None


def test_a_share_is_what_ray_packs_on_one_card():
    # Ray puts floor(1 / g) trials on a GPU: 0.4 shares a card between two, 0.6 has one to itself.
    assert [packing.gpu_share(g) for g in (0.25, 0.333, 0.4, 0.5, 0.6, 1, 2)] == pytest.approx(
        [0.25, 1 / 3, 0.5, 0.5, 1.0, 1.0, 1.0])
