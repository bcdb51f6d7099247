"""Screenshots of every step on demo data: ``python -m sslstudio.gui.screenshots OUT_DIR``.

Writes small demo data to a temporary folder, opens the window, walks through the steps (a scan,
a preview, a two-epoch pretraining on the CPU, a short comparison of the run against the ImageNet
and random baselines: linear and kNN probes on every stage and all-layer fine-tuning at two label
budgets, an export, an exploration of the run beside random init: t-SNE maps of the labelled images
coloured by class, a selected image with its nearest neighbours and one hovered) and saves
``step1-data.png`` ... ``step6-explore.png`` (PNG, palette-optimised to stay small).

It uses whatever Qt platform is available: a real window under X11 or Wayland (for instance
``xvfb-run -a -s "-screen 0 1280x860x24" python -m sslstudio.gui.screenshots docs/screenshots``),
the offscreen platform only when there is no display. ``--dark`` renders with a dark palette.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings
from PySide6.QtWidgets import QApplication

from sslstudio.gui.workers import wait_for_signal




def _settle(ms: int = 400) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def _save_small(image, path: Path) -> None:
    """Save a grabbed QImage as an optimised PNG (an adaptive 256-colour palette when that is smaller)."""
    import io

    from PIL import Image
    from PySide6.QtCore import QBuffer, QIODevice

    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    img = Image.open(io.BytesIO(bytes(buf.data()))).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def dark_palette():
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    roles = {"Window": (45, 45, 48), "WindowText": (225, 225, 225), "Base": (30, 30, 32),
             "AlternateBase": (50, 50, 54), "Text": (225, 225, 225), "Button": (55, 55, 60),
             "ButtonText": (225, 225, 225), "Highlight": (42, 130, 218), "HighlightedText": (255, 255, 255),
             "ToolTipBase": (60, 60, 60), "ToolTipText": (230, 230, 230), "PlaceholderText": (150, 150, 150),
             "Mid": (90, 90, 90)}
    for role, rgb in roles.items():
        pal.setColor(getattr(QPalette.ColorRole, role), QColor(*rgb))
    for role in ("WindowText", "Text", "ButtonText"):
        pal.setColor(QPalette.ColorGroup.Disabled, getattr(QPalette.ColorRole, role), QColor(120, 120, 120))
    return pal


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dark = "--dark" in argv
    argv = [a for a in argv if a != "--dark"]
    out = Path(argv[0] if argv else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    print(f"Qt platform: {app.platformName()}")
    from sslstudio.data import write_demo_data
    from sslstudio.gui.app import apply_style
    from sslstudio.gui.window import MainWindow

    apply_style(app)
    if dark:
        app.setPalette(dark_palette())
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
        _save_small(window.grab().toImage(), out / name)
        print(out / name)

    page = window.data_page
    page.set_folder(str(tmp / "demo" / "unlabelled"))
    wait_for_signal(page.scan_finished)
    _settle(1500)  # thumbnails
    shot(1, "step1-data.png")

    window.task_page.select_task("rotation")
    window.go_to(1)
    wait_for_signal(window.task_page.preview_ready)
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
    pre.monitor_folder.setText(str(tmp / "demo" / "labelled"))  # the live kNN monitor
    window.go_to(2)
    pre.start()
    wait_for_signal(pre.run_finished, 300)
    _settle(800)
    pre.select_run(pre.run_dir)
    shot(3, "step3-pretrain.png")

    cmp = window.compare_page
    cmp.labelled.setText(str(tmp / "demo" / "labelled" / "train"))
    cmp.test_folder.setText(str(tmp / "demo" / "labelled" / "test"))
    cmp.set_checked_inits([pre.run_dir, "imagenet", "random"])
    cmp.set_layers("all")
    cmp.set_modes(["head", "knn", "all"])
    cmp.set_budget(curve=[2, "all"])  # a two-point label-efficiency curve
    cmp.repeats.setValue(2)
    cmp.repeats_all.setValue(1)
    cmp.epochs_all.setValue(2)
    window.go_to(3)
    cmp.start()
    wait_for_signal(cmp.comparison_finished, 300)
    _settle(1500)
    shot(4, "step4-compare.png")

    exp = window.export_page
    for fmt, box in exp.format_boxes.items():
        box.setChecked(fmt in ("pt", "safetensors"))
    window.go_to(4)
    exp.start()
    wait_for_signal(exp.export_finished, 120)
    shot(5, "step5-export.png")

    _explore(window, pre.run_dir, tmp / "demo")
    shot(6, "step6-explore.png")

    window.close()
    return 0


def _explore(window, run: str, demo: Path) -> None:
    """Step 6: the run and random init mapped side by side, an image selected and another one hovered."""
    from PySide6.QtCore import QPointF

    page = window.explore_page
    window.go_to(5)
    page.set_checked_inits([run, "random"])
    page.labelled.setText(str(demo / "labelled"))
    page.stage.setCurrentText("layer3")
    page.method.setCurrentIndex(max(page.method.findData("tsne"), 0))
    page.start()
    result = wait_for_signal(page.exploration_finished, 300)
    _settle(800)
    if not result:
        return
    result = result[0]
    labels = [int(k) for k in result["labels"]]
    pick = labels.index(labels[0], 1) if labels.count(labels[0]) > 1 else 0  # a second image of the first class
    page.select_point(pick)
    m, coords = page.maps[-1], result["inits"][-1]["coords"]  # random's map: the run's stays in full view
    hover = int(coords[:, 0].argmin())  # its left-most point: the card opens over the map's own middle
    x, y = coords[hover]
    scene = m.plot.getPlotItem().getViewBox().mapViewToScene(QPointF(float(x), float(y)))
    page.show_hover(hover, m.plot.mapToGlobal(m.plot.mapFromScene(scene)))
    _settle(300)


if __name__ == "__main__":
    raise SystemExit(main())
