"""Durations for people, as progress lines and sentences show them."""

import math

from sslstudio.engine.durations import clock, in_words


def test_clock():
    assert clock(5) == "0:05" and clock(75.4) == "1:15" and clock(3723) == "1:02:03"
    assert clock(None) == clock(math.nan) == clock(-1) == clock(math.inf) == "?"


def test_in_words():
    assert in_words(42) == "42 s" and in_words(75) == "1 min 15 s" and in_words(7500) == "2 h 05 min"
    assert in_words(None) == in_words(math.inf) == ""
