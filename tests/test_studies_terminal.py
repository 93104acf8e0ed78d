"""A study's terminal holds the project's own lines only, on a normal run as on Ctrl-C: every line a real study
prints must match one of the project's line patterns (tests/terminal_lines.py), so a new line of Ray's or Optuna's
(a log line, Tune's tables, a hint) fails. The real terminals are checked where the suite already runs those
studies, for its time: a finished one in tests/test_studies_trackers.py, one stopped with Ctrl-C and its resume
in tests/test_studies_resume.py. How each of Ray's and Optuna's lines is silenced: studies/tuning/quiet.py. Real
errors still show: the patterns take the project's own error lines, and test_studies_quiet.py checks that Ray's
warnings and errors still pass. Here: that the allow-list catches each line a newcomer saw."""

from __future__ import annotations

from terminal_lines import foreign_lines


def test_the_allow_list_catches_rays_and_optunas_lines():
    ray_lines = """2026-12-07 05:30:58,785\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled
2026-12-07 05:31:04,830\tINFO worker.py:2029 -- Started a local Ray instance. View the dashboard at http://127.0.0.1:8265
[I 2026-12-07 05:31:05,339] A new study created in Journal with name: scene_count/t1
╭──────────────────────────────────────────────────╮
│ Configuration for experiment     t1              │
View detailed results here: /tmp/h4/ray/scene_count/t1
2026-12-07 05:31:16,892\tINFO tune.py:1007 -- Wrote the latest version of all result files and experiment state
2026-12-07 05:31:41,945\tWARNING tune.py:219 -- Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."""
    assert foreign_lines(ray_lines) == ray_lines.splitlines()
