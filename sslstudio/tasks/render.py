"""Drawing helpers shared by the tasks' ``render`` methods and the preview grid."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

TILE = 128  # display size of one network input, in pixels
_FONT_CACHE: dict[int, ImageFont.ImageFont] = {}


def font(size: int = 14) -> ImageFont.ImageFont:
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType support for sized default fonts
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def labelled_tile(image: Image.Image, label: str, size: int = TILE, colour=(255, 255, 255)) -> Image.Image:
    """Upscale ``image`` to ``size`` px (nearest, so pixels stay visible) and draw ``label`` under it."""
    tile = image.convert("RGB").resize((size, size), Image.NEAREST)
    band = 22
    out = Image.new("RGB", (size, size + band), (24, 24, 28))
    out.paste(tile, (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((size // 2, size + band // 2), label, fill=colour, font=font(14), anchor="mm")
    return out


def hstack(images: list[Image.Image], gap: int = 4, bg=(24, 24, 28)) -> Image.Image:
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), bg)
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def wrap(text: str, width: int, size: int = 16) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels in the default font."""
    f = font(size)
    lines: list[str] = []
    for word in text.split():
        if lines and f.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def grid(images: list[Image.Image], columns: int, gap: int = 8, bg=(40, 40, 46),
         title: str | None = None) -> Image.Image:
    """Arrange rendered samples in a grid (row-major), with an optional title (wrapped to fit) on top."""
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    cw = max(i.width for i in images)
    ch = max(i.height for i in images)
    width = columns * cw + (columns + 1) * gap
    lines = wrap(title, width - 2 * gap) if title else []
    top = 8 + 22 * len(lines) if lines else 0
    out = Image.new("RGB", (width, top + rows * ch + (rows + 1) * gap), bg)
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((gap, 6 + 22 * k), line, fill=(235, 235, 235), font=font(16))
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        out.paste(img, (gap + c * (cw + gap), top + gap + r * (ch + gap)))
    return out
