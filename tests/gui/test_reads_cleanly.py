"""The window reads cleanly: the pretext plot in percent, whole-number step ticks, legends naming only what
is drawn, a "Next: …" hint after each step, file sizes with a fitting unit."""

import pytest

from sslstudio.gui.plots import LiveCurve, find_chance_line, legend_below, make_plot


def _shown(plot):
    legend = plot.getPlotItem().legend
    return [label.text for _sample, label in legend.items] if legend.isVisible() else []


def test_legends_name_only_curves_with_data(qtbot):
    plot = make_plot("loss", "step", "loss")
    qtbot.addWidget(plot)
    item = plot.getPlotItem()
    raw, smooth = LiveCurve(item, "loss", "#1f77b4"), LiveCurve(item, "smoothed", "#ff7f0e")
    assert _shown(plot) == [] and not item.legend.isVisible()  # no empty squares before a run
    smooth.append(1, 2.0)
    smooth.flush()
    assert _shown(plot) == ["smoothed"]
    raw.append(1, 2.0)
    raw.flush()
    assert _shown(plot) == ["loss", "smoothed"]  # in the order the curves were made
    raw.clear()
    smooth.clear()
    assert _shown(plot) == [] and item.legend.entries() == ["loss", "smoothed"]
    item.removeItem(raw.item)
    smooth.append(1, 1.0)
    smooth.flush()
    assert _shown(plot) == ["smoothed"] and item.legend.entries() == ["smoothed"]


def test_a_legend_below_the_plot_names_only_curves_with_data(qtbot):
    plot = make_plot("knn", "epoch", "kNN accuracy (%)", integer_x=True, legend="none")
    qtbot.addWidget(plot)
    legend_below(plot)
    a, b = (LiveCurve(plot.getPlotItem(), name, "#1f77b4") for name in ("layer1", "layer2"))
    b.append(1, 30.0)
    b.flush()
    assert _shown(plot) == ["layer2"]


def test_step_axis_ticks_are_whole_numbers(qtbot, window):
    axis = window.pretrain_page.loss_plot.getPlotItem().getAxis("bottom")
    ticks = [v for _spacing, values in axis.tickValues(0.0, 3.0, 400) for v in values]
    assert ticks and all(v == int(v) for v in ticks)  # no tick at 1.5 steps
    assert axis.tickStrings([1.0, 2.0], 1, 1) == ["1", "2"]


def test_pretext_plot_reads_in_percent_and_psnr_in_db(window):
    page = window.pretrain_page
    page.set_metric("accuracy")
    assert page.metric_plot.getPlotItem().getAxis("left").labelText == "accuracy (%)"
    assert page.metric_value(0.4128) == pytest.approx(41.28)
    page.set_chance(0.25)
    line = find_chance_line(page.metric_plot)
    assert line.value() == pytest.approx(25.0) and line.label.toPlainText() == "chance 25.0%"
    page.set_metric("psnr")
    assert page.metric_plot.getPlotItem().getAxis("left").labelText == "PSNR (dB)"
    assert page.metric_value(21.5) == 21.5  # dB stay dB
    page.set_chance(None)
    assert find_chance_line(page.metric_plot) is None


def test_a_next_hint_follows_each_step(qtbot, window, tiny_images):
    from sslstudio.gui.window import NEXT_STEPS
    from tests.gui.test_window import scan

    window.task_page.select_task("rotation")
    scan(qtbot, window, tiny_images)
    assert window.statusBar().currentMessage() == NEXT_STEPS["scan"] == "Next: choose a pretext task (step 2)."
    window.go_to(1)
    with qtbot.waitSignal(window.task_page.preview_ready, timeout=15_000):
        window.task_page.new_seed_button.click()
    assert window.statusBar().currentMessage() == "Next: pretrain (step 3)."
    window.pretrain_page.run_started.emit("run")
    window.pretrain_page.run_finished.emit({"status": "finished — not learnt"})
    assert window.statusBar().currentMessage() == ""  # not learnt: no next step, and the old one is gone
    window.pretrain_page.run_finished.emit({"status": "finished"})
    assert window.statusBar().currentMessage() == "Next: compare it with baselines (step 4)."
    window.compare_page.comparison_finished.emit({"rows": [{"test_accuracy": None}]})
    assert window.statusBar().currentMessage() == "Next: compare it with baselines (step 4)."  # nothing ran
    window.compare_page.comparison_finished.emit({"rows": [{"test_accuracy": 0.5}]})
    assert window.statusBar().currentMessage() == "Next: export the backbone (step 5)."



def test_settings_panels_never_scroll_sideways_and_clip_nothing(window, qtbot):
    from PySide6.QtCore import Qt
    from sslstudio.gui.config_form import SettingsScroll

    window.resize(1000, 700)  # a small window: the panels must still fit their settings
    window.show()
    qtbot.waitExposed(window)

    def check(page) -> int:
        scrolls = [s for s in page.findChildren(SettingsScroll) if s.isVisible()]
        for scroll in scrolls:
            assert scroll.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
            need = scroll.widget().minimumSizeHint().width()
            assert scroll.viewport().width() >= need, (type(page).__name__, scroll.viewport().width(), need)
        return len(scrolls)

    window.go_to(1)
    for task in ("exemplar", "colorization", "jigsaw", "deepcluster"):  # long labels, many decimals
        tasks = window.task_page.task_list
        tasks.setCurrentItem(tasks.findItems(task, Qt.MatchFlag.MatchExactly)[0])
        qtbot.wait(100)
        assert check(window.task_page) == 1
    window.go_to(3)
    qtbot.wait(100)
    assert check(window.compare_page) == 1
