"""Durations for people: ``1:02:03`` on a progress line, ``1 min 15 s`` in a sentence."""

from __future__ import annotations

import math


def clock(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` when unknown (None, NaN, negative)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def in_words(seconds: float | None) -> str:
    """``42 s``, ``1 min 15 s``, ``2 h 05 min``; empty when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


__all__ = ["clock", "in_words"]
