"""Before the window opens on Linux: are the system libraries Qt's X11 (xcb) platform loads installed?

Without them Qt aborts while creating the application ("could not load the Qt platform plugin
xcb"), with a core dump and no word of what to install. :func:`check_qt_libraries` tries to load
each one first and, when some are missing, gives one line naming them and the ``apt-get`` command
that installs them. This module imports no Qt (it runs before Qt is loaded).

The list is what PySide6's ``plugins/platforms/libqxcb.so`` and ``libQt6XcbQpa``, ``libQt6Gui`` and
``libQt6DBus`` (the ones the plugin pulls in) need from the system, read with ``readelf -d``; the
libraries PySide6 ships itself (``libQt6*``, ICU) and those of every Linux (libc, libstdc++, zlib)
are left out.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping

__all__ = ["QT_XCB_LIBRARIES", "apt_command", "check_qt_libraries", "missing_libraries", "uses_xcb"]

#: (shared library, Debian/Ubuntu package) that Qt's xcb platform needs from the system.
QT_XCB_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("libGL.so.1", "libgl1"),
    ("libEGL.so.1", "libegl1"),
    ("libfontconfig.so.1", "libfontconfig1"),
    ("libfreetype.so.6", "libfreetype6"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
    ("libgthread-2.0.so.0", "libglib2.0-0"),
    ("libxkbcommon.so.0", "libxkbcommon0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libX11.so.6", "libx11-6"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb.so.1", "libxcb1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render.so.0", "libxcb-render0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-shm.so.0", "libxcb-shm0"),
    ("libxcb-sync.so.1", "libxcb-sync1"),
    ("libxcb-util.so.1", "libxcb-util1"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("libxcb-xkb.so.1", "libxcb-xkb1"),
)


def uses_xcb(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether Qt will open the window with its xcb (X11) platform plugin.

    True on Linux when ``QT_QPA_PLATFORM`` names xcb first, or is unset outside a Wayland session;
    False elsewhere, for ``offscreen``, ``wayland``, ``vnc``... and on other systems.

    Args:
        environ: The environment (default ``os.environ``).
        platform: ``sys.platform`` (default the running one).
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return False
    chosen = (environ.get("QT_QPA_PLATFORM") or "").strip()
    if chosen:  # "xcb", "xcb:option=value" or a fallback list "wayland;xcb": the first one is tried first
        return chosen.split(";")[0].split(":")[0].strip().lower() == "xcb"
    wayland = environ.get("XDG_SESSION_TYPE", "").lower() == "wayland" and environ.get("WAYLAND_DISPLAY")
    return not wayland


def _can_load(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def missing_libraries(load: Callable[[str], bool] | None = None,
                      libraries: tuple[tuple[str, str], ...] = QT_XCB_LIBRARIES) -> list[tuple[str, str]]:
    """The ``(library, package)`` pairs of ``libraries`` that cannot be loaded.

    Args:
        load: Tells whether a shared library loads (default: ``ctypes.CDLL`` on its name, which
            follows the dynamic loader's own search: ``LD_LIBRARY_PATH``, ``ld.so.cache``).
        libraries: What to try (default :data:`QT_XCB_LIBRARIES`).
    """
    load = load or _can_load
    return [(lib, pkg) for lib, pkg in libraries if not load(lib)]


def apt_command(packages: list[str]) -> str:
    """``apt-get install -y`` of ``packages``, each named once, in the given order."""
    return "apt-get install -y " + " ".join(dict.fromkeys(packages))


def check_qt_libraries(environ: Mapping[str, str] | None = None, platform: str | None = None,
                       load: Callable[[str], bool] | None = None) -> str | None:
    """One line for the user when Qt's xcb platform would abort for want of system libraries, else None.

    Nothing is checked unless Qt will use xcb (see :func:`uses_xcb`).

    Args:
        environ: The environment (default ``os.environ``).
        platform: ``sys.platform`` (default the running one).
        load: Tells whether a shared library loads (see :func:`missing_libraries`).

    Returns:
        ``"sslstudio: the window cannot open: ... missing: libxcb-cursor.so.0; install them (Debian/Ubuntu,
        as root) with: apt-get install -y libxcb-cursor0"``, or None when nothing is missing.
    """
    if not uses_xcb(environ, platform):
        return None
    missing = missing_libraries(load)
    if not missing:
        return None
    names = ", ".join(lib for lib, _pkg in missing)
    return (f"sslstudio: the window cannot open: Qt needs system libraries that are not installed ({names}); "
            f"install them (Debian/Ubuntu, as root) with: {apt_command([pkg for _lib, pkg in missing])}")
