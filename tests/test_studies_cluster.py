"""studies/cluster.py: trials sized to the Ray cluster, and a Ray dashboard that stays local unless asked."""

from __future__ import annotations

import pytest

from studies import cluster, scene_count
from studies.spec import StudyError


def test_resources_follow_the_cluster():
    parse = scene_count.get_args_parser().parse_args
    assert cluster.resources(parse([]), {"cpus": 2.0, "gpus": 0.0}, 8) == (0.0, 1.0, 2)
    assert cluster.resources(parse([]), {"cpus": 16.0, "gpus": 2.0}, 8) == (1.0, 8.0, 2)
    args = parse(["--gpus-per-trial", "0.5", "--max-concurrent", "3"])
    assert cluster.resources(args, {"cpus": 16.0, "gpus": 2.0}, 8) == (0.5, 4.0, 3)
    assert cluster.resources(parse([]), {"cpus": 2.0, "gpus": 0.0}, 1) == (0.0, 1.0, 1)  # never more than planned
    with pytest.raises(StudyError, match="more than the Ray cluster has"):
        cluster.resources(parse(["--gpus-per-trial", "1"]), {"cpus": 2.0, "gpus": 0.0}, 8)
    with pytest.raises(StudyError, match="--gpus-per-trial 1.5 is invalid"):
        cluster.resources(parse(["--gpus-per-trial", "1.5"]), {"cpus": 2.0, "gpus": 4.0}, 8)
    with pytest.raises(StudyError, match="--cpus-per-trial 4.0 is invalid: the Ray cluster has 2 CPUs"):
        cluster.resources(parse(["--cpus-per-trial", "4"]), {"cpus": 2.0, "gpus": 0.0}, 8)


def test_dashboard_stays_local_unless_asked():
    parse = scene_count.get_args_parser().parse_args
    assert parse([]).dashboard_host == "127.0.0.1" and cluster.dashboard_warning(parse([])) is None
    warning = cluster.dashboard_warning(parse(["--dashboard-host", "0.0.0.0"]))
    assert "0.0.0.0" in warning and "arbitrary code" in warning
    assert cluster.dashboard_warning(parse(["--dashboard-host", "0.0.0.0", "--no-dashboard"])) is None
