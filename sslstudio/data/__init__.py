"""Image data: finding, decoding and labelling image files, and demo data.

The public names are re-exported here::

    from sslstudio.data import scan_folder, decode_folder, load_labelled, write_demo_data

Decoded folders can be kept in a decode cache (``decode_folder(root, size, cache_dir=...)``, see
:mod:`sslstudio.data.cache`), and :class:`IndexedImages` selects rows of a (memory-mapped) array
without copying it.
"""

from sslstudio.data.arrays import IndexedImages
from sslstudio.data.cache import (
    CACHE_FORMAT_VERSION,
    available_memory,
    cache_entries,
    clear_cache,
    default_cache_dir,
    ram_budget,
)
from sslstudio.data.decode import DecodedImages, decode_folder, decode_images
from sslstudio.data.demo import DEMO_CLASSES, draw_scene, write_demo_data
from sslstudio.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    BadImageError,
    is_image_file,
    load_rgb,
    to_square_array,
)
from sslstudio.data.headers import InspectReport, inspect_images
from sslstudio.data.labelled import LabelledSplit, load_labelled
from sslstudio.data.scan import ScanReport, scan_folder

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "BadImageError",
    "DecodedImages",
    "IndexedImages",
    "InspectReport",
    "LabelledSplit",
    "ScanReport",
    "available_memory",
    "cache_entries",
    "clear_cache",
    "decode_folder",
    "decode_images",
    "default_cache_dir",
    "inspect_images",
    "draw_scene",
    "is_image_file",
    "load_labelled",
    "load_rgb",
    "ram_budget",
    "scan_folder",
    "to_square_array",
    "write_demo_data",
]
