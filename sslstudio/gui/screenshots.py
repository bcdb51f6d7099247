"""Screenshots of every step on demo data: ``python -m sslstudio.gui.screenshots OUT_DIR``.

Writes small demo data to a temporary folder, opens the window, walks through the steps (a scan,
a preview, a one-epoch pretraining on the CPU, a one-epoch comparison against the random
baseline, an export) and saves ``step1-data.png`` ... ``step5-export.png``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication


def _wait(signal, timeout_s: float = 120.0) -> list:
    """Run the event loop until ``signal`` fires; returns its arguments."""
    loop = QEventLoop()
    got: list = []

    def done(*args):
        got.extend(args)
        loop.quit()

    signal.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(done)
    return got


def _settle(ms: int = 400) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from sslstudio.data import write_demo_data
    from sslstudio.gui.app import apply_style
    from sslstudio.gui.window import MainWindow

    apply_style(app)
    tmp = Path(tempfile.mkdtemp(prefix="sslstudio-shots-"))
    write_demo_data(tmp / "demo", seed=0, n_unlabelled=64, n_train_per_class=6, n_test_per_class=3, size=48)
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(workspace=tmp / "workspace", settings=settings)
    window.confirm_close = False
    window.show_dialogs = False
    window.resize(1200, 800)
    window.show()
    window.resize(1200, 800)
    _settle()

    def shot(step: int, name: str) -> None:
        window.go_to(step - 1)
        _settle(600)
        window.grab().save(str(out / name))
        print(out / name)

    page = window.data_page
    page.set_folder(str(tmp / "demo" / "unlabelled"))
    _wait(page.scan_finished)
    _settle(1500)  # thumbnails
    shot(1, "step1-data.png")

    window.task_page.select_task("rotation")
    window.go_to(1)
    _wait(window.task_page.preview_ready)
    window.task_page.grid.setCurrentRow(1)
    shot(2, "step2-task.png")

    pre = window.pretrain_page
    pre.arch.setCurrentText("resnet18_small")
    pre.image_size_box.setValue(32)
    pre.epochs.setValue(2)
    pre.batch_size.setValue(8)
    pre.lr.setValue(0.05)
    pre.workers.setValue(0)
    pre.device.setCurrentIndex(pre.device.findData("cpu"))
    window.go_to(2)
    pre.start()
    _wait(pre.run_finished, 300)
    _settle(800)
    shot(3, "step3-pretrain.png")

    cmp = window.compare_page
    cmp.labelled.setText(str(tmp / "demo" / "labelled"))
    cmp.baseline_imagenet.setChecked(False)
    cmp.mode_all.setChecked(False)
    cmp.epochs_head.setValue(2)
    window.go_to(3)
    cmp.start()
    _wait(cmp.comparison_finished, 300)
    _settle(600)
    shot(4, "step4-compare.png")

    exp = window.export_page
    for fmt, box in exp.format_boxes.items():
        box.setChecked(fmt in ("pt", "safetensors"))
    window.go_to(4)
    exp.start()
    _wait(exp.export_finished, 120)
    shot(5, "step5-export.png")

    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
