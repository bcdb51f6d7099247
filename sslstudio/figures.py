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


def size_text(n_bytes: int | float | None) -> str:
    """A file's size in a unit that fits, to three significant figures: ``512 bytes``, ``1.23 KB``,
    ``44.7 MB``, ``1.20 GB`` (decimal units: 1 KB = 1000 bytes)."""
    if n_bytes is None or not math.isfinite(n_bytes) or n_bytes < 0:
        return "n/a"
    if n_bytes < 1000:
        n = int(n_bytes)
        return f"{n} byte" if n == 1 else f"{n} bytes"
    value = float(n_bytes)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if float(f"{value:.3g}") < 1000 or unit == "TB":  # 999.96 KB reads 1.00 MB, not 1000 KB
            return f"{sig3(value)} {unit}"
    return f"{sig3(value)} TB"  # not reached: the loop returns at TB


__all__ = ["metric_text", "pct", "sig3", "size_text"]
