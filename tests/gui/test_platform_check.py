"""The check of Qt's system libraries before the window opens (sslstudio.gui.platform_check)."""

import subprocess
import sys

import pytest

from sslstudio.gui import platform_check
from sslstudio.gui.platform_check import (QT_XCB_LIBRARIES, apt_command, check_qt_libraries, missing_libraries,
                                          uses_xcb)

ABSENT = {"libxcb-cursor.so.0", "libxkbcommon-x11.so.0", "libxcb-icccm.so.4"}


def loader_without(absent):
    return lambda name: name not in absent


def test_the_check_imports_no_qt():
    code = ("import sys; import sslstudio.gui.platform_check, sslstudio.gui.app; "
            "print(any(m.startswith(('PySide6', 'pyqtgraph', 'shiboken6')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_xcb_platform_on_linux_is_checked():
    assert uses_xcb({}, "linux")
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux") and uses_xcb({"QT_QPA_PLATFORM": "xcb:dpi=96"}, "linux")
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb;wayland"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "wayland;xcb"}, "linux")
    assert not uses_xcb({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not uses_xcb({}, "darwin") and not uses_xcb({}, "win32")
    everything_missing = loader_without({lib for lib, _pkg in QT_XCB_LIBRARIES})
    assert check_qt_libraries({"QT_QPA_PLATFORM": "offscreen"}, "linux", everything_missing) is None
    assert check_qt_libraries({}, "win32", everything_missing) is None


def test_missing_libraries_give_one_line_with_the_apt_command():
    assert missing_libraries(lambda name: True) == []
    assert check_qt_libraries({"QT_QPA_PLATFORM": "xcb"}, "linux", lambda name: True) is None
    line = check_qt_libraries({"QT_QPA_PLATFORM": "xcb"}, "linux", loader_without(ABSENT))
    assert "\n" not in line
    assert "(libxkbcommon-x11.so.0, libxcb-cursor.so.0, libxcb-icccm.so.4)" in line  # in the table's order
    assert line.endswith("apt-get install -y libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4")
    # two libraries of one package: the package once
    assert apt_command(["libglib2.0-0", "libglib2.0-0", "libgl1"]) == "apt-get install -y libglib2.0-0 libgl1"
    assert len({lib for lib, _pkg in QT_XCB_LIBRARIES}) == len(QT_XCB_LIBRARIES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sonames are Linux's")
def test_the_real_loader_tells_present_from_absent():
    assert platform_check._can_load("libc.so.6")
    assert not platform_check._can_load("libsslstudio-no-such-library.so.7")


def test_the_window_exits_with_code_2_instead_of_aborting(monkeypatch, capsys):
    from sslstudio.cli import main

    monkeypatch.setattr(platform_check, "_can_load", loader_without(ABSENT))
    monkeypatch.setattr(platform_check.sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    assert main(["gui"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-cursor.so.0" in err[0] and "apt-get install -y" in err[0]
