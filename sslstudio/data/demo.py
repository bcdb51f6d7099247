"""Procedurally drawn demo images: small outdoor scenes with one object each.

Each scene has a natural "up" and content-dependent colour, so pretext tasks
such as rotation prediction, jigsaw puzzles and colorization can be learnt:
a blue sky (lighter towards the horizon) with a sun and clouds on top, green
grass or blue water below a horizon in the lower middle, and one object
standing on the ground (or floating on the water):

* house: wall, reddish triangular roof, door at the bottom, windows;
* tree: brown trunk under a green crown (round or conifer);
* car: coloured body and cabin on two black wheels, often on a road;
* boat: hull on the water with a mast and a sail above it.

Everything is drawn with PIL and numpy from a seeded generator, so the same
seed always writes the same bytes. The images are original and free of any
licence restrictions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sslstudio.errors import ConfigError, DataError

__all__ = ["DEMO_CLASSES", "draw_scene", "write_demo_data"]

DEMO_CLASSES: tuple[str, ...] = ("house", "tree", "car", "boat")
"""Class names of the demo data, in label order."""

_SUPERSAMPLE = 2
_GROUPS = {"unlabelled": 0, "train": 1, "test": 2}

Color = tuple[int, int, int]

_ROOFS: tuple[Color, ...] = ((176, 48, 36), (150, 62, 42), (196, 78, 46), (128, 44, 44), (166, 52, 66))
_WALLS: tuple[Color, ...] = ((232, 220, 188), (240, 238, 230), (212, 182, 140), (236, 214, 150), (204, 124, 92))
_CARS: tuple[Color, ...] = (
    (200, 30, 30),
    (30, 70, 190),
    (230, 190, 30),
    (235, 235, 235),
    (40, 40, 45),
    (230, 110, 20),
    (120, 30, 140),
)
_HULLS: tuple[Color, ...] = ((120, 70, 35), (240, 240, 236), (180, 35, 35), (30, 45, 110), (60, 60, 60))
_SAILS: tuple[Color, ...] = ((250, 250, 245), (245, 235, 205), (235, 90, 60), (250, 210, 80))


def _jitter(rng: np.random.Generator, color: Color, amount: int = 18) -> Color:
    """Return ``color`` with a small random change per channel."""
    c = np.asarray(color) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, palette: tuple[Color, ...], amount: int = 18) -> Color:
    """Pick a palette colour and jitter it."""
    return _jitter(rng, palette[int(rng.integers(len(palette)))], amount)


def _gradient(top: Color, bottom: Color, rows: int, width: int) -> np.ndarray:
    """Return a ``rows x width x 3`` float vertical gradient."""
    t = np.linspace(0.0, 1.0, max(rows, 1))[:, None]
    col = (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)
    return np.repeat(col[:, None, :], width, axis=1)[:rows]


def _background(rng: np.random.Generator, side: int, water: bool) -> tuple[np.ndarray, float]:
    """Draw sky and ground; return the float image and the horizon row."""
    horizon = float(rng.uniform(0.52, 0.7)) * side
    h = int(round(horizon))
    sky_top = _jitter(rng, (52, 104, 200), 22)
    sky_low = _jitter(rng, (182, 212, 244), 12)
    img = np.empty((side, side, 3), float)
    img[:h] = _gradient(sky_top, sky_low, h, side)
    if water:
        near = _jitter(rng, (74, 128, 180), 14)
        far = _jitter(rng, (30, 70, 130), 15)
    else:
        near = _jitter(rng, (110, 176, 70), 20)
        far = _jitter(rng, (52, 120, 38), 16)
    img[h:] = _gradient(near, far, side - h, side)
    texture = rng.normal(0.0, 7.0 if not water else 4.0, size=(side - h, side, 1))
    img[h:] += texture
    return img, horizon


def _sky_details(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, horizon: float) -> None:
    """Draw a sun and a few clouds in the sky."""
    if rng.random() < 0.7:
        r = side * rng.uniform(0.05, 0.09)
        x = side * rng.uniform(0.1, 0.9)
        y = rng.uniform(r + 2, max(r + 3, horizon * 0.45))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (255, 226, 90), 12))
    for _ in range(int(rng.integers(0, 4))):
        cx = side * rng.uniform(0.0, 1.0)
        cy = rng.uniform(0.08, 0.55) * horizon
        w = side * rng.uniform(0.12, 0.26)
        shade = _jitter(rng, (246, 246, 250), 6)
        for k in range(3):
            dx = (k - 1) * w * 0.33
            rr = w * (0.28 if k != 1 else 0.36)
            draw.ellipse((cx + dx - rr, cy - rr * 0.6, cx + dx + rr, cy + rr * 0.6), fill=shade)


def _fit(rng: np.random.Generator, side: int, width: float, height: float, base: float) -> tuple[float, float]:
    """Shrink an object so it fits above ``base``; return scale and centre x."""
    scale = min(1.0, (base - 0.04 * side) / height, (0.92 * side) / width)
    w = width * scale
    cx = rng.uniform(w / 2 + 0.03 * side, side - w / 2 - 0.03 * side)
    return scale, float(cx)


def _house(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, horizon: float) -> None:
    """Draw a house standing on the ground."""
    base = rng.uniform(horizon + 0.12 * side, side - 0.05 * side)
    w = side * rng.uniform(0.42, 0.62)
    h = w * rng.uniform(0.55, 0.8)
    rh = w * rng.uniform(0.35, 0.55)
    scale, cx = _fit(rng, side, w * 1.16, h + rh, base)
    w, h, rh = w * scale, h * scale, rh * scale
    left, right, top = cx - w / 2, cx + w / 2, base - h
    wall = _pick(rng, _WALLS)
    draw.rectangle((left, top, right, base), fill=wall)
    if rng.random() < 0.5:
        cw = w * 0.1
        chx = cx + w * rng.choice([-0.28, 0.28])
        draw.rectangle((chx - cw / 2, top - rh * 0.85, chx + cw / 2, top), fill=_jitter(rng, (110, 60, 50), 12))
    oh = w * 0.08
    draw.polygon([(left - oh, top), (right + oh, top), (cx, top - rh)], fill=_pick(rng, _ROOFS, 14))
    dw, dh = w * 0.2, h * rng.uniform(0.45, 0.6)
    dx = cx + w * rng.uniform(-0.25, 0.25)
    draw.rectangle((dx - dw / 2, base - dh, dx + dw / 2, base), fill=_jitter(rng, (92, 56, 30), 14))
    win = w * 0.16
    glass = _jitter(rng, (170, 210, 235) if rng.random() < 0.7 else (245, 220, 120), 12)
    for wx in (left + w * 0.2, right - w * 0.2):
        if abs(wx - dx) < dw / 2 + win / 2 + 1:
            continue
        wy = top + h * 0.3
        draw.rectangle((wx - win / 2, wy - win / 2, wx + win / 2, wy + win / 2), fill=glass, outline=(60, 50, 45))


def _tree(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, horizon: float) -> None:
    """Draw a tree (trunk under a green crown) standing on the ground."""
    base = rng.uniform(horizon + 0.1 * side, side - 0.04 * side)
    w = side * rng.uniform(0.34, 0.52)
    th = w * rng.uniform(0.55, 0.85)
    ch = w * rng.uniform(0.95, 1.25)
    scale, cx = _fit(rng, side, w, th + ch * 0.85, base)
    w, th, ch = w * scale, th * scale, ch * scale
    tw = w * rng.uniform(0.13, 0.2)
    trunk = _jitter(rng, (112, 72, 38), 16)
    green = _jitter(rng, (52, 128, 44), 26)
    draw.rectangle((cx - tw / 2, base - th - ch * 0.15, cx + tw / 2, base), fill=trunk)
    crown_bottom = base - th
    if rng.random() < 0.65:
        top = crown_bottom - ch * 0.85
        draw.ellipse((cx - w / 2, top, cx + w / 2, crown_bottom + ch * 0.15), fill=green)
        light = _jitter(rng, tuple(int(min(255, v * 1.25)) for v in green), 6)  # type: ignore[arg-type]
        r = w * 0.18
        hx, hy = cx - w * 0.15, top + ch * 0.3
        draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=light)
    else:
        levels = 3
        step = ch * 0.85 / levels
        for k in range(levels):
            lw = w * (1.0 - 0.22 * k)
            y0 = crown_bottom + ch * 0.1 - k * step
            draw.polygon([(cx - lw / 2, y0), (cx + lw / 2, y0), (cx, y0 - step * 1.6)], fill=green)


def _car(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, horizon: float) -> None:
    """Draw a car on its wheels, often on a grey road."""
    base = rng.uniform(horizon + 0.14 * side, side - 0.06 * side)
    w = side * rng.uniform(0.5, 0.72)
    r = w * 0.11
    bh = w * rng.uniform(0.22, 0.28)
    cabin_h = w * rng.uniform(0.17, 0.22)
    scale, cx = _fit(rng, side, w, r + bh + cabin_h, base)
    w, r, bh, cabin_h = w * scale, r * scale, bh * scale, cabin_h * scale
    if rng.random() < 0.7:
        road = _jitter(rng, (110, 110, 112), 10)
        draw.rectangle((0, base - r * 0.8, side, min(side, base + r * 0.9)), fill=road)
    color = _pick(rng, _CARS, 16)
    body_bottom = base - r * 0.7
    body_top = body_bottom - bh
    draw.rounded_rectangle((cx - w / 2, body_top, cx + w / 2, body_bottom), radius=bh * 0.3, fill=color)
    facing = 1 if rng.random() < 0.5 else -1
    cab_l = cx - w * 0.32 + facing * w * 0.04
    cab_r = cx + w * 0.22 + facing * w * 0.04
    top_l, top_r = cab_l + w * 0.1, cab_r - w * 0.08
    roof_y = body_top - cabin_h
    draw.polygon([(cab_l, body_top + 1), (cab_r, body_top + 1), (top_r, roof_y), (top_l, roof_y)], fill=color)
    glass = _jitter(rng, (168, 206, 230), 10)
    m = cabin_h * 0.22
    mid = (cab_l + cab_r) / 2
    win_top = body_top - cabin_h + m
    back = [(cab_l + m, body_top), (mid - m * 0.4, body_top), (mid - m * 0.4, win_top), (top_l + m * 0.4, win_top)]
    front = [(mid + m * 0.4, body_top), (cab_r - m, body_top), (top_r - m * 0.4, win_top), (mid + m * 0.4, win_top)]
    draw.polygon(back, fill=glass)
    draw.polygon(front, fill=glass)
    lx = cx + facing * (w / 2 - w * 0.04)
    draw.ellipse((lx - r * 0.35, body_top + bh * 0.2, lx + r * 0.35, body_top + bh * 0.5), fill=(250, 236, 150))
    for wx in (cx - w * 0.3, cx + w * 0.3):
        draw.ellipse((wx - r, base - 2 * r, wx + r, base), fill=(24, 24, 26))
        draw.ellipse((wx - r * 0.45, base - r * 1.45, wx + r * 0.45, base - r * 0.55), fill=(170, 170, 175))


def _boat(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int, horizon: float) -> None:
    """Draw a sailing boat floating on the water."""
    water_line = rng.uniform(horizon + 0.14 * side, side - 0.1 * side)
    w = side * rng.uniform(0.46, 0.68)
    hh = w * rng.uniform(0.16, 0.22)
    mast = w * rng.uniform(0.8, 1.1)
    scale, cx = _fit(rng, side, w, mast + hh * 0.6, water_line)
    w, hh, mast = w * scale, hh * scale, mast * scale
    hull = _pick(rng, _HULLS, 14)
    deck = water_line - hh * 0.6
    bottom = water_line + hh * 0.4
    reflection = tuple(int(v * 0.55 + 40) for v in hull)
    low = bottom + hh * 0.5
    shadow = [(cx - w * 0.38, bottom), (cx + w * 0.38, bottom), (cx + w * 0.3, low), (cx - w * 0.3, low)]
    draw.polygon(shadow, fill=reflection)
    draw.polygon([(cx - w / 2, deck), (cx + w / 2, deck), (cx + w * 0.36, bottom), (cx - w * 0.36, bottom)], fill=hull)
    mx = cx + w * rng.uniform(-0.08, 0.08)
    top = deck - mast
    draw.line([(mx, deck), (mx, top)], fill=(70, 50, 35), width=max(1, int(round(w * 0.03))))
    sail = _pick(rng, _SAILS, 8)
    direction = 1 if rng.random() < 0.5 else -1
    foot = deck - mast * 0.08
    main_x = mx + direction * 2
    draw.polygon([(main_x, top + mast * 0.05), (main_x, foot), (mx + direction * w * 0.42, foot)], fill=sail)
    if rng.random() < 0.6:
        jib_x = mx - direction * 2
        jib = [(jib_x, top + mast * 0.2), (jib_x, foot), (mx - direction * w * 0.3, foot)]
        draw.polygon(jib, fill=_jitter(rng, sail, 10))


_DRAWERS: dict[str, Callable[[np.random.Generator, ImageDraw.ImageDraw, int, float], None]] = {
    "house": _house,
    "tree": _tree,
    "car": _car,
    "boat": _boat,
}


def draw_scene(rng: np.random.Generator, class_name: str, size: int = 64) -> Image.Image:
    """Draw one demo scene containing an object of ``class_name``.

    Args:
        rng: Random generator; the scene depends only on its state.
        class_name: One of :data:`DEMO_CLASSES`.
        size: Side of the square image in pixels.

    Returns:
        An RGB image of ``size x size`` pixels.
    """
    side = size * _SUPERSAMPLE
    background, horizon = _background(rng, side, water=class_name == "boat")
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _sky_details(rng, draw, side, horizon)
    _DRAWERS[class_name](rng, draw, side, horizon)
    small = np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    small = small + rng.normal(0.0, 3.0, size=small.shape)
    return Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8))


def _check_settings(counts: dict[str, int], size: int) -> None:
    """Raise :class:`ConfigError` for settings that cannot work."""
    for name, value in counts.items():
        if int(value) < 0:
            raise ConfigError(f"The number of {name} demo images cannot be negative, but {value} was given.")
    if int(size) < 16:
        raise ConfigError(f"The demo image size must be at least 16 pixels, but {size} was given.")


def _save(img: Image.Image, path: Path) -> None:
    """Write a PNG with fixed settings (same pixels give the same bytes)."""
    img.save(path, format="PNG", compress_level=6)


def write_demo_data(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_unlabelled: int = 400,
    n_train_per_class: int = 30,
    n_test_per_class: int = 15,
    size: int = 64,
) -> dict[str, int]:
    """Write a small demo data set of procedurally drawn PNG scenes.

    Layout::

        out_dir/unlabelled/img_00000.png ...        (random classes, names hide them)
        out_dir/labelled/train/<class>/img_00000.png ...
        out_dir/labelled/test/<class>/img_00000.png ...

    Args:
        out_dir: Folder to write into (created if needed).
        seed: Seed; the same seed writes the same bytes.
        n_unlabelled: Number of unlabelled images.
        n_train_per_class: Training images per class.
        n_test_per_class: Test images per class.
        size: Side of the square images in pixels.

    Returns:
        Counts: ``{"unlabelled": ..., "train": ..., "test": ..., "classes": ...}``.

    Raises:
        ConfigError: A count is negative or the size is below 16 pixels.
        DataError: ``out_dir`` exists but is not a folder, or cannot be written.
    """
    _check_settings({"unlabelled": n_unlabelled, "training": n_train_per_class, "test": n_test_per_class}, size)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(
            f"The demo output path {out} is a file, not a folder; choose a folder to write the demo data into."
        )
    try:
        unlabelled_dir = out / "unlabelled"
        unlabelled_dir.mkdir(parents=True, exist_ok=True)
        for i in range(int(n_unlabelled)):
            rng = np.random.default_rng([int(seed) % 2**63, _GROUPS["unlabelled"], i])
            name = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
            _save(draw_scene(rng, name, size), unlabelled_dir / f"img_{i:05d}.png")
        for split, n in (("train", int(n_train_per_class)), ("test", int(n_test_per_class))):
            for label, name in enumerate(DEMO_CLASSES):
                folder = out / "labelled" / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    rng = np.random.default_rng([int(seed) % 2**63, _GROUPS[split], label, i])
                    _save(draw_scene(rng, name, size), folder / f"img_{i:05d}.png")
    except OSError as exc:
        raise DataError(
            f"The demo data cannot be written to {out} ({exc.strerror or exc}); choose a writable folder."
        ) from exc
    n_classes = len(DEMO_CLASSES)
    return {
        "unlabelled": int(n_unlabelled),
        "train": int(n_train_per_class) * n_classes,
        "test": int(n_test_per_class) * n_classes,
        "classes": n_classes,
    }
