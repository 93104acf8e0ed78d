"""The cluster examples in cluster/ (a `ray up` definition, a KubeRay RayJob, the image both run) and the
README's cluster commands run this repository's real entry points: the YAML loads (the `ray up` one
against Ray's own schema), every study command names an existing script, and that study's parser
accepts its flags. Every `ray start` and Ray client they document runs with token authentication
(DESIGN.md, "Security"; test_cluster_jobs.py and test_cluster_ray_up.py start them). No Ray runtime."""

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
from ray_cli import shell_lines, split_command

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


# GPU memory in GB of the GPU instance types and node labels the examples may name (AWS data sheets; NVIDIA GPU
# Feature Discovery's nvidia.com/gpu.product, the device name with dashes).
INSTANCE_GPU_GB = {"p5.48xlarge": 80, "p4de.24xlarge": 80, "p4d.24xlarge": 40, "g5.2xlarge": 24, "g6.2xlarge": 24}
GPU_PRODUCT_GB = {"NVIDIA-H100-80GB-HBM3": 80, "NVIDIA-A100-SXM4-80GB": 80, "NVIDIA-A100-SXM4-40GB": 40,
                  "NVIDIA-A10G": 24, "NVIDIA-L4": 24}


def recipes_of(commands: list[list[str]]) -> set[str]:
    return {argv[argv.index("--recipe") + 1] for argv in commands if "--recipe" in argv}


@pytest.fixture(scope="module")
def recipe_gb():
    """The estimated GPU memory of one trial of a recipe, in GB (salgl_core.memory: seconds per recipe)."""
    from salgl_core.config import ExperimentConfig
    from salgl_core.memory import GB, estimate_train_memory
    from salgl_core.presets import recipe_config

    cache: dict[tuple[str, int | None], float] = {}

    def gb(recipe: str, batch: int | None = None) -> float:
        if (recipe, batch) not in cache:
            flat = {**recipe_config(recipe), **({"batch_size": batch} if batch else {})}
            cache[recipe, batch] = estimate_train_memory(ExperimentConfig.from_flat(flat)).total / GB
        return cache[recipe, batch]

    return gb


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
    # Each `ray start` turns authentication on itself, whatever the container's environment.
    starts = [split_command(c) for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if c.split("ray ", 1)[-1].startswith("start")]
    assert len(starts) == 2 and all(env == {"RAY_AUTH_MODE": "token"} for env, _ in starts), starts
    header = [line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#")]
    assert "ray get-auth-token --generate" in [line.split("#")[0].strip() for line in header]
    for env, argv in map(split_command, [line for line in header if re.match(r"(\w+=\S+ )*ray job ", line)]):
        assert env.get("RAY_AUTH_MODE") == "token", argv
    commands = study_commands(text)
    assert len(commands) >= 2  # `ray exec` on the head and `ray job submit`
    for argv in commands:
        check_command(argv)
        cluster_flags(argv)


@pytest.mark.slow
def test_ray_up_gpus_hold_the_recipe_it_runs(recipe_gb):
    """The workers' GPU holds a trial of every recipe the file's commands run, and the line on 24 GB cards gives
    the largest batch that fits one (the estimate at that batch fits, one more does not)."""
    text = (CLUSTER / "ray-up-gpu.yaml").read_text()
    workers = yaml.safe_load(text)["available_node_types"]["gpu_worker"]
    card = INSTANCE_GPU_GB[workers["node_config"]["InstanceType"]]
    recipes = recipes_of(study_commands(text))
    assert recipes == {"paper-coco-r101-448"}
    for recipe in recipes:
        assert recipe_gb(recipe) <= card, (recipe, recipe_gb(recipe), card)
    comments = re.sub(r"\n\s*#\s*", " ", text)  # the comments' lines joined
    (batch,) = {int(b) for b in re.findall(r"24 GB card .*? holds batch (\d+) at most", comments)}
    assert recipe_gb("paper-coco-r101-448", batch) <= 24 < recipe_gb("paper-coco-r101-448", batch + 1)
    assert f"needs about {recipe_gb('paper-coco-r101-448'):.1f} GB" in comments


def test_kuberay_rayjob():
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text()
    job = yaml.safe_load(text)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    # How a client outside the cluster gets the token the operator made, and uses it.
    header = [line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith("export RAY_AUTH_TOKEN=$(kubectl exec") and line.endswith("printenv RAY_AUTH_TOKEN)")
               for line in header), header
    assert any(line.startswith("RAY_AUTH_MODE=token ray job ") for line in header), header
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
        assert not [e for e in container.get("env", []) if e["name"].startswith("RAY_AUTH")]  # the operator's
    gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
            for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    assert all(gpus)
    # Every GPU pod asks for a named card, one that holds the recipe (test_kuberay_gpus_hold_the_recipe).
    products = [g["template"]["spec"].get("nodeSelector", {}).get("nvidia.com/gpu.product")
                for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    assert all(p in GPU_PRODUCT_GB for p in products), products


@pytest.mark.slow
def test_kuberay_gpus_hold_the_recipe_it_runs(recipe_gb):
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    (recipe,) = recipes_of([shlex.split(job["spec"]["entrypoint"])])
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        card = GPU_PRODUCT_GB[group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]]
        assert recipe_gb(recipe) <= card, (recipe, recipe_gb(recipe), card)


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
    # Every `ray start` and Ray client the section shows runs with token authentication, the token made first.
    blocks = [split_command(c) for b in re.findall(r"```bash\n(.*?)```", section, re.S) for c in shell_lines(b)]
    ray_cli = [(env, argv) for env, argv in blocks if argv[:2] in (["ray", "start"], ["ray", "job"])]
    assert len(ray_cli) >= 3 and all(env.get("RAY_AUTH_MODE") == "token" for env, _ in ray_cli), ray_cli
    order = [argv[:3] for _, argv in blocks]
    assert order.index(["ray", "get-auth-token", "--generate"]) < order.index(["ray", "start", "--head"])
    joins = re.findall(r"`([^`]*ray start --address[^`]*)`", section)
    assert joins and all(split_command(j)[0] == {"RAY_AUTH_MODE": "token"} for j in joins), joins
