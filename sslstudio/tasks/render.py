"""Drawing helpers shared by the tasks' ``render`` methods and the preview grid.

Text in a drawing is readable at 100% zoom: labels are drawn at :data:`TEXT_PX`, nothing smaller
than :data:`SMALL_TEXT_PX`, and network inputs are upscaled (nearest) to :data:`TILE` px, so a
64 px input is drawn at 2x and smaller ones at more. A viewer that shrinks a drawing keeps its
smallest text at :data:`READABLE_PX` or more by not shrinking below :func:`min_display_scale`.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

TILE = 128  # display size of one network input, in pixels
TEXT_PX = 15  # labels under tiles
SMALL_TEXT_PX = 13  # the smallest text any drawing uses (corner numbers, secondary lines)
READABLE_PX = 11  # the smallest text height (font size in screen pixels) a viewer may show
BACKGROUND = (24, 24, 28)
_FONT_CACHE: dict[int, ImageFont.ImageFont] = {}


def min_display_scale() -> float:
    """The smallest factor a drawing may be shrunk by and keep its smallest text at :data:`READABLE_PX`."""
    return READABLE_PX / SMALL_TEXT_PX


def font(size: int = TEXT_PX) -> ImageFont.ImageFont:
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType support for sized default fonts
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def text_width(text: str, size: int = TEXT_PX) -> float:
    """Width in pixels of ``text`` drawn at ``size``."""
    return font(size).getlength(text)


def labelled_tile(image: Image.Image, label: str, size: int = TILE, colour=(255, 255, 255)) -> Image.Image:
    """Upscale ``image`` to ``size`` px (nearest, so pixels stay visible) and draw ``label`` under it
    (wrapped onto more lines, never shrunk, when it is wider than the tile)."""
    tile = image.convert("RGB").resize((size, size), Image.NEAREST)
    lines = wrap(label, size - 6, TEXT_PX)
    line_h = TEXT_PX + 4
    band = 6 + line_h * len(lines)
    out = Image.new("RGB", (size, size + band), BACKGROUND)
    out.paste(tile, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((size // 2, size + 3 + line_h * k + line_h // 2), line, fill=colour, font=font(TEXT_PX),
                  anchor="mm")
    return out


def hstack(images: list[Image.Image], gap: int = 4, bg=BACKGROUND) -> Image.Image:
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), bg)
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def vstack(images: list[Image.Image], gap: int = 4, bg=BACKGROUND) -> Image.Image:
    """One above the other, left-aligned."""
    w = max(i.width for i in images)
    h = sum(i.height for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), bg)
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.height + gap
    return out


def wrap(text: str, width: int, size: int = 16) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels in the default font (a single word
    wider than that keeps its own line). Explicit newlines are kept."""
    f = font(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        start = len(lines)
        for word in paragraph.split():
            if len(lines) > start and f.getlength(lines[-1] + " " + word) <= width:
                lines[-1] += " " + word
            else:
                lines.append(word)
        if len(lines) == start:
            lines.append("")
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


def titled(body: Image.Image, title: str, gap: int = 8, bg=(40, 40, 46)) -> Image.Image:
    """``body`` under ``title`` (wrapped to the body's width, at least 480 px wide)."""
    width = max(body.width + 2 * gap, 480)
    lines = wrap(title, width - 2 * gap)
    top = 8 + 22 * len(lines)
    out = Image.new("RGB", (width, top + body.height + 2 * gap), bg)
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((gap, 6 + 22 * k), line, fill=(235, 235, 235), font=font(16))
    out.paste(body, (gap, top + gap))
    return out
