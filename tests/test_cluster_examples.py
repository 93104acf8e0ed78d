"""The cluster examples in cluster/ (a `ray up` definition, a KubeRay RayJob, the image both run) and the
README's cluster commands run this repository's real entry points: the YAML loads (the `ray up` one
against Ray's own schema), every study command names an existing script, and that study's parser
accepts its flags. No Ray runtime."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
IMAGE_REPO = "/home/ray/salgl"  # where cluster/Dockerfile (WORKDIR) and ray-up-gpu.yaml put the repository


def study_commands(text: str) -> list[list[str]]:
    """Every `python [path/]studies/NAME.py FLAGS` in `text` (comments included): [script, *flags]."""
    text = re.sub(r"\\\n\s*#?\s*", " ", text)  # shell line continuations
    return [[m.group(1), *shlex.split(m.group(2))]
            for m in re.finditer(r"python\s+(\S*studies/\w+\.py)([^'`\n]*)", text)]


def check_command(argv: list[str]) -> None:
    script = argv[0].removeprefix(IMAGE_REPO + "/")
    assert (REPO / script).is_file(), f"{argv[0]} is not a script of this repository"
    parser = importlib.import_module(f"studies.{Path(script).stem}").get_args_parser()
    try:
        _, unknown = parser.parse_known_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{script} rejects {shlex.join(argv[1:])}")
    assert not unknown, f"{script} does not know {unknown}"


def cluster_flags(argv: list[str]) -> None:
    """A study on a real cluster keeps Ray's state and its export on shared storage."""
    for flag in ("--storage-path", "--results-dir"):
        assert flag in argv and argv[argv.index(flag) + 1].startswith(("/mnt/shared", "s3://")), (flag, argv)


def test_ray_up_definition():
    text = (CLUSTER / "ray-up-gpu.yaml").read_text()
    config = yaml.safe_load(text)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert "-e RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["file_mounts"][IMAGE_REPO] == "."
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] >= 1  # a study sizes its trials to the nodes present when it starts
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head
    commands = study_commands(text)
    assert len(commands) >= 2  # `ray exec` on the head and `ray job submit`
    for argv in commands:
        check_command(argv)
        cluster_flags(argv)


def test_kuberay_rayjob():
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python"
    check_command(argv[1:])
    cluster_flags(argv)
    head = spec["rayClusterSpec"]["headGroupSpec"]
    pods = [head["template"], *(g["template"] for g in spec["rayClusterSpec"]["workerGroupSpecs"])]
    for pod in pods:  # every pod mounts the shared volume the flags point at
        (container,) = pod["spec"]["containers"]
        assert {"name": "shared", "mountPath": "/mnt/shared"} in container["volumeMounts"]
        assert container["workingDir"] == IMAGE_REPO
    gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
            for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    assert all(gpus)


def test_image_matches_the_pinned_ray():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    assert f"WORKDIR {IMAGE_REPO}" in dockerfile
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", ".ray_results"} <= set(ignored)
    assert f'"ray[tune,default]=={ray.__version__}"' in (REPO / "pyproject.toml").read_text()


def test_readme_cluster_commands():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Running on a Ray cluster"):]
    end = section.find("\n## ", 1)
    section = section[:end] if end > 0 else section
    commands = study_commands(section)
    assert len(commands) >= 3
    for argv in commands:
        check_command(argv)
