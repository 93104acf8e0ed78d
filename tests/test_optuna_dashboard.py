"""optuna-dashboard (the `optuna` extra) reads a study's Optuna journal: through its Python WSGI app, and
through the command the README prints, `optuna-dashboard results/<study>/<run>/optuna_journal.log`."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from studies.exports.schema import OPTUNA_JOURNAL

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="the optional `optuna` extra is not installed")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A journal as a study writes it: one study named <study>/<run>, with finished trials."""
    path = tmp_path / "scene_count" / "r" / OPTUNA_JOURNAL
    path.parent.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="scene_count/r", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(path))))
    space = {"num_scenes": optuna.distributions.CategoricalDistribution([1, 4])}
    for k, value in ((1, 60.0), (4, 62.5)):
        study.add_trial(optuna.trial.create_trial(params={"num_scenes": k}, distributions=space, value=value))
    return path


def _get(app, path: str) -> dict:
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(body)


def test_the_wsgi_app_lists_the_study_and_its_trials(journal):
    app = optuna_dashboard.wsgi(str(journal))  # a journal file path, as the CLI takes it
    (study,) = _get(app, "/api/studies")["study_summaries"]
    assert study["study_name"] == "scene_count/r" and study["directions"] == ["maximize"]
    detail = _get(app, f"/api/studies/{study['study_id']}")
    assert sorted(t["values"][0] for t in detail["trials"]) == [60.0, 62.5]


@pytest.mark.slow
def test_the_printed_command_serves_the_journal(journal):
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(cli), str(journal), "--port", str(port), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    answer = json.loads(r.read())
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"optuna-dashboard did not serve the journal: {proc.communicate()[0].decode()}")
                time.sleep(0.3)
        assert [s["study_name"] for s in answer["study_summaries"]] == ["scene_count/r"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
