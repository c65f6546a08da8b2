"""Stop strings across token boundaries: nothing of a stop string is ever emitted."""

from __future__ import annotations

from backend.engines.stops import StopScanner


def test_text_that_may_begin_a_stop_is_held_back_until_it_cannot() -> None:
    scanner = StopScanner(["END"])
    assert scanner.feed("abc E") == ("abc ", False)
    assert scanner.feed("N") == ("", False)
    assert scanner.feed("x") == ("ENx", False)
    assert scanner.text == "abc ENx"


def test_a_stop_split_over_deltas_cuts_the_text_before_it() -> None:
    scanner = StopScanner(["\n\n", "END"])
    assert scanner.feed("one E") == ("one ", False)
    assert scanner.feed("ND two") == ("", True)
    assert scanner.text == "one "


def test_the_earliest_stop_wins() -> None:
    scanner = StopScanner(["cd", "b"])
    assert scanner.feed("abcd") == ("a", True)


def test_flush_releases_held_text_and_detection_can_be_off() -> None:
    scanner = StopScanner(["xyz"])
    assert scanner.feed("axy") == ("a", False)
    assert scanner.flush() == "xy"
    late = StopScanner(["b"])
    assert late.feed("abc", detect=False) == ("abc", False)
