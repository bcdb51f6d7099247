"""Image data: finding, decoding and labelling image files, and demo data.

The public names are re-exported here::

    from sslstudio.data import scan_folder, decode_folder, load_labelled, write_demo_data
"""

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
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "BadImageError",
    "DecodedImages",
    "InspectReport",
    "LabelledSplit",
    "ScanReport",
    "decode_folder",
    "decode_images",
    "inspect_images",
    "draw_scene",
    "is_image_file",
    "load_labelled",
    "load_rgb",
    "scan_folder",
    "to_square_array",
    "write_demo_data",
]
