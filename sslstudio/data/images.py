"""Loading one image file as 8-bit RGB, and turning it into a square array.

Every image that enters sslstudio goes through :func:`load_rgb`, so that all
later code can rely on one format: an 8-bit RGB :class:`PIL.Image.Image` with
the camera's EXIF orientation already applied. Files that cannot be used raise
:class:`BadImageError` with a short reason from :data:`BAD_IMAGE_REASONS`.

Transparency is composited onto a white background (the way image viewers and
browsers usually show it), rather than simply dropped, so that transparent
regions do not turn into arbitrary colours hidden behind the alpha channel.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "BAD_IMAGE_REASONS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "UNREADABLE",
    "BadImageError",
    "is_image_file",
    "is_readable",
    "load_rgb",
    "to_square_array",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File name extensions (lower case, with the dot) that are treated as images."""

MAX_PIXELS = 89_478_485
"""Default largest pixel count accepted (PIL's own decompression-bomb limit)."""

UNREADABLE = "unreadable (permission denied)"
"""The reason of a file that this user is not allowed to read (nothing is known about its content)."""

BAD_IMAGE_REASONS = (
    UNREADABLE,
    "empty file",
    "not an image",
    "truncated",
    "corrupt",
    "decompression bomb",
    "too small",
)
"""The fixed vocabulary used for :attr:`BadImageError.reason`."""

_WHITE = (255, 255, 255)
_OPEN_LOCK = threading.Lock()

# First bytes of the formats listed in IMAGE_EXTENSIONS. A file that starts
# like an image but cannot be opened is "corrupt", anything else "not an image".
_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
)


class BadImageError(Exception):
    """An image file cannot be used.

    Attributes:
        reason: Short human reason, one of :data:`BAD_IMAGE_REASONS`.
        path: The file concerned, when known.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None, detail: str = "") -> None:
        """Create the error.

        Args:
            reason: Short reason, one of :data:`BAD_IMAGE_REASONS`.
            path: The file concerned, if any.
            detail: Optional extra text from the decoder, for logs.
        """
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.detail = detail
        where = f"{self.path}: " if self.path is not None else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{where}{reason}{extra}")


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """Tell whether a file name has one of the :data:`IMAGE_EXTENSIONS` (any case).

    Args:
        name: File name or path.

    Returns:
        True when the extension is an accepted image extension.
    """
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def is_readable(path: str | os.PathLike[str]) -> bool:
    """Tell whether ``path`` can be opened for reading now (False for a missing file too)."""
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _looks_like_image(path: Path) -> bool:
    """Tell whether the file starts with a known image signature."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(sig) for sig in _SIGNATURES)


def _open(path: Path) -> Image.Image:
    """Open (not yet decode) an image, turning PIL's bomb warning into an error.

    The warning filter is changed only inside ``warnings.catch_warnings`` and
    under a lock, because filters are process-wide and decoding may run in
    several threads; opening only reads the header, so the lock is brief.
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _classify_decode_error(error: BaseException) -> str:
    """Map an exception raised while decoding to a reason."""
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return "truncated"
    return "corrupt"


def load_rgb(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Image.Image:
    """Fully load an image file and return it as an 8-bit RGB image.

    The EXIF orientation is applied first, then the pixels are converted:
    palette, greyscale, 1-bit, CMYK and alpha modes become RGB (alpha is
    composited onto white); 16-bit and 32-bit greyscale is scaled to 0..255
    (see :func:`_high_depth_to_l`). Animated files give their first frame.

    PIL's ``LOAD_TRUNCATED_IMAGES`` flag is left untouched (it is False by
    default), so truncated files raise instead of loading half grey.

    Args:
        path: Image file to read.
        max_pixels: Largest accepted ``width * height``; larger images are
            rejected as a decompression bomb. Defaults to :data:`MAX_PIXELS`.
            PIL's own limits also apply: both its ``DecompressionBombWarning``
            (above ``Image.MAX_IMAGE_PIXELS``) and its
            ``DecompressionBombError`` (above twice that) count as a bomb.

    Returns:
        A loaded RGB image.

    Raises:
        BadImageError: The file is empty, not an image, truncated, corrupt
            or too large, or it may not be read (reason :data:`UNREADABLE`).
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty file", path)
    except PermissionError as exc:  # a folder on the way cannot be searched
        raise BadImageError(UNREADABLE, path, exc.strerror or str(exc)) from exc
    except OSError as exc:
        raise BadImageError("corrupt", path, exc.strerror or str(exc)) from exc

    try:
        with _open(path) as img:
            width, height = img.size
            if width * height > limit:
                raise BadImageError("decompression bomb", path, f"{width}x{height} pixels")
            img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except BadImageError:
        raise
    except PermissionError as exc:  # the file itself may not be read: say so, it is not "corrupt"
        raise BadImageError(UNREADABLE, path, exc.strerror or str(exc)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError("decompression bomb", path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        reason = "corrupt" if _looks_like_image(path) else "not an image"
        raise BadImageError(reason, path) from exc
    except (OSError, EOFError, SyntaxError, ValueError, TypeError, IndexError, MemoryError) as exc:
        raise BadImageError(_classify_decode_error(exc), path, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any other decoder failure means "corrupt"
        raise BadImageError("corrupt", path, f"{type(exc).__name__}: {exc}") from exc
    return rgb


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale 16-bit or 32-bit greyscale (modes ``I;16*``, ``I``, ``F``) to mode ``L``.

    ``I;16*`` images and ``I`` images whose values lie in 0..65535 are treated
    as 16-bit data (65535 -> 255). ``F`` images whose values lie in 0..1 are
    scaled by 255. Anything else is stretched from its minimum to its maximum.
    """
    arr = np.asarray(img)
    if arr.dtype.kind == "u":
        scale_max = float(np.iinfo(arr.dtype).max)
        values = arr.astype(np.float64) / scale_max
    else:
        values = arr.astype(np.float64)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            pass
        elif img.mode != "F" and lo >= 0 and hi <= 65535:
            values = values / 65535.0
        else:
            values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        values = np.nan_to_num(values, nan=0.0)
    out = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _composite_on_white(img: Image.Image) -> Image.Image:
    """Composite an RGBA image onto a white background and return RGB."""
    background = Image.new("RGBA", img.size, _WHITE + (255,))
    background.alpha_composite(img)
    return background.convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    if mode == "P":
        if "transparency" in img.info:
            return _composite_on_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img.convert("RGBA"))
    if mode in ("L", "1"):
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


def to_square_array(img: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size``, centre-crop, and return an array.

    The centre square is cut and resized in one step (PIL's ``box``
    argument), with bilinear filtering that widens with the reduction factor
    (so downscaling averages like an area filter) plus ``reducing_gap`` for
    speed on large sources.

    Args:
        img: Source image; converted to RGB if it is not already.
        size: Side of the output square in pixels (>= 1).

    Returns:
        A C-contiguous ``uint8`` array of shape ``(size, size, 3)``.

    Raises:
        ValueError: ``size`` is smaller than 1.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be at least 1 pixel, got {size}")
    if img.mode != "RGB":
        img = _to_rgb(img)
    width, height = img.size
    side = min(width, height)
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    box = (left, top, left + side, top + side)
    gap = 3.0 if side >= 3 * size else None
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=gap)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8))
