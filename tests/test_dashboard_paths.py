"""dashboards/data/paths.py: where the results root is, and paths shown without the repository's location."""

from __future__ import annotations

import os
from pathlib import Path

from dashboards.data import paths

REPO = Path(__file__).resolve().parents[1]


def test_results_dirs_precedence(monkeypatch, tmp_path):
    """Default: results/ and the git-ignored runs/; $SALGL_RESULTS_DIR, then the sidebar box, replace both."""
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    assert paths.results_dirs() == [REPO / "results", REPO / "runs"]
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "env"))
    assert paths.results_dirs() == [tmp_path / "env"]
    assert paths.results_dirs("  ") == [tmp_path / "env"]
    assert paths.results_dirs(str(tmp_path / "box")) == [tmp_path / "box"]
    monkeypatch.setenv(paths.ENV_VAR, " , ")
    assert paths.results_dirs() == [REPO / "results", REPO / "runs"]


def test_several_folders_separated_by_pathsep_or_commas(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ENV_VAR, f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert paths.results_dirs() == [tmp_path / "a", tmp_path / "b"]
    assert paths.results_dirs(f"results, runs ,{tmp_path / 'a'},results") == [REPO / "results", REPO / "runs",
                                                                             tmp_path / "a"]
    assert paths.split_dirs(f" x ,,y{os.pathsep}z ") == ["x", "y", "z"]
    # What the sidebar shows reads back as the same folders.
    monkeypatch.delenv(paths.ENV_VAR)
    shown = paths.display_dirs(paths.results_dirs())
    assert shown == "results, runs" and paths.results_dirs(shown) == paths.default_dirs()


def test_relative_results_dir_starts_at_the_repository(monkeypatch, tmp_path):
    """The sidebar shows `results`; typed back, or set as $SALGL_RESULTS_DIR, it means the same folder from any cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.ENV_VAR, ".cache/demo_results")
    assert paths.results_dirs() == [REPO / ".cache" / "demo_results"]
    assert paths.results_dirs("results") == [REPO / "results"]
    assert paths.results_dirs(paths.display_path(paths.DEFAULT_RESULTS_DIR)) == [paths.DEFAULT_RESULTS_DIR]


def test_display_path_never_shows_where_the_repository_is(tmp_path):
    assert paths.display_path(REPO / "results") == "results"
    assert paths.display_path(REPO / ".cache" / "demo_results") == ".cache/demo_results"
    assert paths.display_path(REPO) == "."
    assert str(REPO) not in paths.display_path(REPO / "results" / "scene_count")
    # Outside the repository the path is the user's own: shown as given.
    assert paths.display_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_shown_keeps_the_last_parts():
    assert paths.shown(Path("/a/b/results/scene_count/r1/trials.csv")) == "results/scene_count/r1/trials.csv"
    assert paths.shown(Path("/a/b/results/scene_count/r1"), 3) == "results/scene_count/r1"
    assert paths.shown(Path("r1/trials.csv")) == "r1/trials.csv"
