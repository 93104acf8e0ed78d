#!/usr/bin/env bash
# `make test`: the whole suite in two pytest sessions. The tests that start no Ray runtime, Streamlit server or
# browser run on two pytest-xdist workers; then the Ray, cluster and browser tests one at a time (each of them
# wants the machine's cores, and a local Ray runtime its ports). Exit status: the first failing session's; 5
# (nothing collected) only when neither session collected a test, so a PYTEST_ARGS that selects one kind works.
set -uo pipefail
PY=${PY:-.venv/bin/python}
SERIAL="ray or cluster or browser"
"$PY" -m pytest -q -n 2 -m "not ($SERIAL)" "$@"
first=$?
"$PY" -m pytest -q -m "$SERIAL" "$@"
second=$?
for s in "$first" "$second"; do
  if [ "$s" -ne 0 ] && [ "$s" -ne 5 ]; then exit "$s"; fi
done
if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then exit 5; fi
exit 0
