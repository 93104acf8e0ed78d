"""studies/analysis/timing.py: the time left a study's progress lines show, the ideal wall time the closing summary
compares with, and the preparation steps' clock; hand-made numbers whose answers can be worked out on paper."""

from __future__ import annotations

import pytest

from studies.analysis import timing


def test_no_estimate_before_a_trial_ends_nor_when_none_is_left():
    assert timing.time_left([], [5.0], n_left=3, slots=2) is None
    assert timing.time_left([60.0], [], n_left=0, slots=2) is None
    assert timing.progress_text(None) == ""


def test_time_left_from_the_mean_duration_and_the_slots():
    # 4 trials of 60 s left, 2 at once, none running: two rounds.
    assert timing.time_left([50.0, 70.0], [], n_left=4, slots=2) == pytest.approx(120.0)
    # One left on two slots: one trial's time, not half of it.
    assert timing.time_left([60.0], [], n_left=1, slots=2) == pytest.approx(60.0)
    # Running trials count as partly done: 40 s and 10 s in, so 20 s and 50 s to go; the third waits for the
    # first free slot (at 20 s) and ends at 80 s.
    assert timing.time_left([60.0], [40.0, 10.0], n_left=3, slots=2) == pytest.approx(80.0)
    # A trial past the mean is about to end (0 s left, never negative).
    assert timing.time_left([60.0], [90.0], n_left=1, slots=1) == pytest.approx(0.0)
    # More running than slots (a slot count from an earlier session): the first `slots` of them are counted.
    assert timing.time_left([60.0], [0.0, 0.0, 0.0], n_left=3, slots=1) == pytest.approx(60.0)


def test_ideal_wall_time_is_the_tightest_packing_not_sum_over_slots():
    assert timing.ideal_seconds([80.0, 80.0, 80.0], 2) == pytest.approx(160.0)
    assert timing.ideal_seconds([10.0, 10.0, 10.0, 10.0], 2) == pytest.approx(20.0)
    assert timing.ideal_seconds([100.0, 10.0, 10.0], 3) == pytest.approx(100.0)


def test_durations_read_as_a_person_says_them():
    assert [timing.duration(s) for s in (0.2, 4.4, 12, 44, 89, 150, 3599, 3600, 4800)] == [
        "1 s", "4 s", "10 s", "45 s", "90 s", "2 min", "60 min", "1 h", "1 h 20 min"]
    assert timing.progress_text(180.0) == "  time left ~3 min"


def test_the_stopwatch_adds_up_a_step_and_sessions_add_up():
    clock = timing.Stopwatch()
    with clock.step(timing.DATA):
        pass
    clock.add(timing.DATA, 2.0)
    clock.add(timing.RAY_START, 5.0)
    clock.add(timing.OTHER, -0.1)  # a clock that went backwards counts as nothing
    # The empty step's own time is real: bounded loosely, a loaded machine may deschedule us inside it.
    assert 2.0 <= clock.seconds[timing.DATA] < 2.5 and clock.seconds[timing.OTHER] == 0.0
    assert list(clock.seconds) == [timing.DATA, timing.RAY_START, timing.OTHER]
    assert timing.merged({"Ray start": 4.0, "bad": "x"}, {"Ray start": 5.0, "data": 1.0}) == {
        "Ray start": 9.0, "data": 1.0}
    assert timing.merged(None, {"data": 1.0}) == {"data": 1.0}
