"""`python -m studies.ablate`: any config field as an axis and named arms from the command line or a file
(studies/ablate.py, studies/design/arms.py), checked before Ray starts; the catalog of named studies."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_rows

from salgl_core.config import FIELD_OWNER, field_label, field_spec
from studies import ablate, catalog
from studies.design.arms import collect_arms, parse_arm, read_arms_file
from studies.design.cli import axis_value
from studies.design.spec import ARM, StudyError
from studies.tuning import resume
from studies.tuning.monitor import trial_name
from studies.tuning.plan import make_plan

REPO = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> argparse.Namespace:
    return ablate.get_args_parser(list(argv)).parse_args(list(argv))


def run_ablate(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studies.ablate", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("field", ablate.scalar_fields())
def test_every_scalar_field_is_an_axis_with_its_range_in_the_help(field):
    spec = ablate.build_spec(parse(field, "--values", "1"))
    assert spec.axis == field and spec.study == field and spec.arms is None
    f = field_spec(field)
    help_text = " ".join(ablate.get_args_parser([field]).format_help().split())
    assert " ".join(f.check.expected(f.type).split()) in help_text


def test_the_seed_recipe_and_dataset_are_not_axes():
    assert not {"seed", "recipe", "dataset"} & set(ablate.scalar_fields())
    assert set(ablate.scalar_fields()) | {"seed", "recipe", "dataset"} == set(FIELD_OWNER)
    for field in ("seed", "recipe", "dataset"):
        with pytest.raises(StudyError, match="not an ablation axis"):
            ablate.build_spec(parse(field, "--values", "1"))


@pytest.mark.parametrize(("field", "raw", "expected"), [
    ("sample_entropy_weight", "0.5", 0.5), ("num_scenes", "6", 6), ("soft_assignment", "TRUE", True),
    ("loss", "bce", "bce"), ("comat_momentum", "1", 1.0)])
def test_values_take_the_fields_type(field, raw, expected):
    value = axis_value(field, raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("field", "raw", "says"), [
    ("sample_entropy_weight", "-1", "sample_entropy_weight takes a number in [0.0, inf)"),
    ("num_scenes", "0", "num_scenes takes an integer >= 1"),
    ("comat_momentum", "1.5", "comat_momentum takes a number in [0.0, 1.0]"),
    ("soft_assignment", "yes", "soft_assignment takes true or false"),
    ("loss", "mse", "loss takes one of ['asl', 'bce']")])
def test_a_value_outside_the_fields_range_is_refused_naming_it(field, raw, says):
    with pytest.raises(StudyError) as e:
        axis_value(field, raw)
    assert says in str(e.value) and repr(raw) in str(e.value)


def test_mistakes_answer_before_ray_and_torch_are_imported():
    """Each is one line on stderr, exit code 2, without importing the heavy packages."""
    code = ("import runpy, sys\nsys.argv = ['ablate'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('studies.ablate', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 2, e.code\n"
            "heavy = [m for m in ('torch', 'ray', 'optuna') if m in sys.modules]\nassert not heavy, heavy\n")
    for argv, says in ((["sample_entropy_weight", "--values", "-1"], "takes a number in [0.0, inf)"),
                       (["sample_entropy_weight"], "--values is required"),
                       (["num_scene", "--values", "2"], "unknown config field 'num_scene' (did you mean num_scenes?)"),
                       ([], "nothing to ablate"),
                       (["--arm", "a:num_scenes=2", "--arm", "b:num_scenes=1"], "needs a name: --study NAME"),
                       (["--study", "s", "--arm", "a:num_scenes=2", "--arm", "b:num_scenes=0"],
                        "arm 'b': num_scenes = 0 is invalid: expected an integer >= 1"),
                       (["num_scenes", "--values", "2", "--arm", "a:num_scenes=2"], "not both")):
        out = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, (argv, out.stderr)
        (line,) = out.stderr.splitlines()
        assert line.startswith("error: ") and says in line, (argv, line)


def test_arms_from_the_command_line():
    assert parse_arm("soft:soft_assignment=true,num_scenes=6") == ("soft", {"soft_assignment": True, "num_scenes": 6})
    assert parse_arm("w:sample_entropy_weight=2") == ("w", {"sample_entropy_weight": 2.0})  # ints become floats
    assert parse_arm("b:loss=bce") == ("b", {"loss": "bce"})  # a bare string
    for bad, says in (("soft", "expected NAME:FIELD=VALUE"), ("a b:num_scenes=2", "expected NAME"),
                      ("a:num_scenes", "is not FIELD=VALUE"), ("a:seed=1", "which an arm cannot set"),
                      ("a:num_scenes=true", "expected an integer >= 1"), ("a:lr=0", "expected a number in (0.0")):
        with pytest.raises(StudyError, match=says.replace("(", r"\(")):
            parse_arm(bad)
    arms, ref = collect_arms(["hard:soft_assignment=false", "soft:soft_assignment=true"], None, None)
    assert list(arms) == ["hard", "soft"] and ref == "hard"  # the first arm unless --reference says
    assert collect_arms(["a:num_scenes=1", "b:num_scenes=2"], None, "b")[1] == "b"
    with pytest.raises(StudyError, match="not one of the arms"):
        collect_arms(["a:num_scenes=1", "b:num_scenes=2"], None, "c")
    with pytest.raises(StudyError, match="at least two arms"):
        collect_arms(["a:num_scenes=1"], None, None)
    with pytest.raises(StudyError, match="given twice"):
        collect_arms(["a:num_scenes=1", "a:num_scenes=2"], None, None)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_arms_from_a_file(tmp_path, suffix):
    arms = {"hard": {"soft_assignment": False}, "soft": {"soft_assignment": True, "num_scenes": 6}}
    path = tmp_path / f"arms{suffix}"
    if suffix == ".toml":
        path.write_text('reference = "soft"\n[arms.hard]\nsoft_assignment = false\n'
                        '[arms.soft]\nsoft_assignment = true\nnum_scenes = 6\n')
    elif suffix == ".yaml":
        path.write_text("reference: soft\narms:\n  hard: {soft_assignment: false}\n"
                        "  soft: {soft_assignment: true, num_scenes: 6}\n")
    else:
        path.write_text(json.dumps({"reference": "soft", "arms": arms}))
    assert read_arms_file(path) == (arms, "soft")
    # The command line adds to the file's arms; --reference wins over the file's.
    got, ref = collect_arms(["deep:gnn_steps=5"], str(path), "hard")
    assert list(got) == ["hard", "soft", "deep"] and ref == "hard"


def test_a_damaged_arms_file_is_named(tmp_path):
    for name, text, says in (("a.toml", "reference = \n", "is not valid TOML"),
                             ("b.yaml", "arms: [1, 2]\n", "expected a table `arms`"),
                             ("c.toml", "[arms.x]\nnum_scenes = -1\n", "arm 'x': num_scenes = -1 is invalid"),
                             ("d.txt", "", "expected a .toml, .yaml, .yml or .json file")):
        (tmp_path / name).write_text(text)
        with pytest.raises(StudyError, match=says.replace("[", r"\[")):
            read_arms_file(tmp_path / name)
    with pytest.raises(StudyError, match="cannot read it"):
        read_arms_file(tmp_path / "missing.toml")


def test_an_arms_study_plans_like_the_named_ones(tmp_path):
    args = parse("--study", "soft_vs_hard", "--arm", "soft:soft_assignment=true", "--arm",
                 "hard:soft_assignment=false", "--reference", "hard", "--smoke", "--results-dir", str(tmp_path),
                 "--storage-path", str(tmp_path / "ray"), "--name", "r")
    spec = ablate.build_spec(args)
    assert spec.axis == ARM and spec.values == ("soft", "hard") and spec.reference_arm == "hard"
    plan = make_plan(args, spec)
    assert plan.values == ["soft", "hard"] and plan.paper_config == {ARM: "hard"}
    assert plan.arms == {"soft": {"soft_assignment": True}, "hard": {"soft_assignment": False}}
    # study_args.json keeps the arms themselves, so --resume rebuilds the same study without the file.
    saved = json.loads(json.dumps(resume.saved_args(args, name="r")))
    stored = argparse.Namespace(**{**saved, "arm": [], "arms": None})
    again = ablate.build_spec(stored)
    assert again.values == spec.values and again.arms({}) == spec.arms({}) and again.reference_arm == "hard"
    cmd = resume.resume_command(args, spec, "r")
    assert "-m studies.ablate --study soft_vs_hard --resume --name r" in cmd


def test_a_field_study_resumes_with_its_field(tmp_path):
    args = parse("sample_entropy_weight", "--values", "0", "4", "--smoke", "--name", "r",
                 "--storage-path", str(tmp_path))
    spec = ablate.build_spec(args)
    assert "-m studies.ablate sample_entropy_weight --resume --name r" in resume.resume_command(args, spec, "r")
    plan = make_plan(args, spec)
    assert plan.values == [0.0, 1.0, 4.0]  # the recipe's value is always added
    assert spec.prog() == "python -m studies.ablate sample_entropy_weight"


def test_symbols_labels_and_notes_come_from_the_config_fields():
    assert [field_spec(f).symbol for f in ("num_scenes", "gnn_steps", "comat_momentum")] == ["K", "T", "mu"]
    assert field_label("num_scenes") == "number of scenes K" and field_label("lr") == "lr"
    assert "our knob, not the paper's" in field_spec("comat_momentum").note
    assert trial_name("scene_count", "num_scenes", {"num_scenes": 4, "seed": 1}) == "scene_count K=4 seed=1"
    assert trial_name("x", "sample_entropy_weight", {"sample_entropy_weight": 0.5, "seed": 0}) == \
        "x sample_entropy_weight=0.5 seed=0"


def test_the_catalog_finds_every_named_study_and_the_makefile_reads_it():
    specs = catalog.named_studies()
    assert list(specs) == ["graph_depth", "mechanism", "momentum", "scene_count", "tune", "visibility"]
    examples = [n for n, s in specs.items() if catalog.has_example(s)]
    assert examples == ["graph_depth", "mechanism", "momentum", "scene_count", "visibility"]
    for name in examples:  # each has its committed example, with the study's note
        meta = json.loads((REPO / "results" / name / "default" / "study.json").read_text())
        assert meta["study"] == name and "note" in meta
    out = subprocess.run(["make", "-n", "results"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "studies.catalog --examples" in out.stdout, out.stdout + out.stderr


def test_the_committed_ablation_was_made_without_code():
    """results/sample_entropy_weight/default: the zero-code discovery ablation the README's findings cite."""
    run = REPO / "results" / "sample_entropy_weight" / "default"
    meta = json.loads((run / "study.json").read_text())
    assert meta["axis"] == "sample_entropy_weight" and meta["axis_values"] == [0.0, 1.0, 4.0]
    rows = read_rows(run / "trials.csv")
    assert len(rows) == 9 and {r["status"] for r in rows} == {"FINISHED"}
    assert all(0 <= float(r["scene_nmi"]) <= 1 for r in rows)


@pytest.mark.ray
@pytest.mark.slow
def test_an_arms_study_runs_end_to_end(tmp_path):
    out = run_ablate("--study", "soft_vs_hard", "--arm", "soft:soft_assignment=true", "--arm",
                     "hard:soft_assignment=false", "--reference", "hard", "--smoke", "--name", "r",
                     "--results-dir", str(tmp_path / "res"), "--storage-path", str(tmp_path / "ray"),
                     "--no-dashboard", "--reuse-actors", timeout=300)  # a whole Ray study: as long as the others get
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "res" / "soft_vs_hard" / "r"
    meta = json.loads((run / "study.json").read_text())
    assert meta["arms"] == {"soft": {"soft_assignment": True}, "hard": {"soft_assignment": False}}
    assert meta["paper_config"] == {ARM: "hard"} and meta["status"] == "FINISHED"
    assert sorted(r["arm"] for r in read_rows(run / "trials.csv")) == ["hard", "soft"]
    analysis = json.loads((run / "analysis.json").read_text())
    assert [c["value"] for c in analysis["comparisons"]] == ["soft"]
    assert "python -m studies.ablate --study soft_vs_hard" in out.stdout or "soft_vs_hard r: FINISHED" in out.stdout
