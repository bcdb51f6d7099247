"""Numbers for people, one style everywhere: accuracies in percent with one decimal (``41.3%``), PSNR in
dB and every other figure (losses, rates) to three significant figures; ``n/a`` when there is none."""

from __future__ import annotations

import math


def pct(value: float | None) -> str:
    """A fraction as a percent with one decimal: ``0.4128`` -> ``41.3%``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f}%"


def sig3(value: float | None) -> str:
    """Three significant figures: ``4.70771`` -> ``4.71``, ``0.0102634`` -> ``0.0103``, ``1234.5`` -> ``1230``."""
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    rounded = float(f"{value:.3g}")  # 99.96 -> 100.0: the exponent after rounding sets the decimals
    decimals = max(0, 2 - int(math.floor(math.log10(abs(rounded)))))
    return f"{rounded:.{decimals}f}"


def metric_text(metric: str, value: float | None) -> str:
    """A task metric's value: accuracies as :func:`pct`, PSNR as ``21.5 dB``, others as :func:`sig3`."""
    if metric == "accuracy" or metric.endswith("accuracy"):
        return pct(value)
    if metric == "psnr":
        return "n/a" if value is None else f"{sig3(value)} dB"
    return sig3(value)


__all__ = ["metric_text", "pct", "sig3"]
