"""The chance-level line of the plots (sslstudio.gui.plots.add_chance_line)."""

import pytest


def test_add_chance_line_draws_moves_and_removes_one_dashed_line(qtbot):
    from PySide6.QtCore import Qt

    from sslstudio.gui.plots import add_chance_line, make_plot
    from sslstudio.gui.plots import find_chance_line as chance_line

    plot = make_plot("t", "epoch", "accuracy (%)")
    qtbot.addWidget(plot)
    assert chance_line(plot) is None
    line = add_chance_line(plot, 10.0)
    assert chance_line(plot) is line and chance_line(plot.getPlotItem()) is line
    assert line.value() == 10.0 and line.angle == 0 and line.label.toPlainText() == "chance 10.0%"
    assert line.pen.style() == Qt.PenStyle.DashLine
    assert line not in [item for item, _label in plot.getPlotItem().legend.items]  # no legend entry
    # a second call moves the same line; a label of one's own (braces are text, not a format)
    assert add_chance_line(plot.getPlotItem(), 0.25, "chance {1/4}") is line
    assert line.value() == 0.25 and line.label.toPlainText() == "chance {1/4}"
    assert sum(1 for i in plot.getPlotItem().items if i is line) == 1
    # it takes part in the auto range: the axis reaches down to chance
    plot.plot([1, 2, 3], [50.0, 60.0, 70.0])
    add_chance_line(plot, 20.0)
    plot.getPlotItem().enableAutoRange()
    plot.getPlotItem().getViewBox().updateAutoRange()
    low, high = plot.getPlotItem().viewRange()[1]
    assert low <= 20.0 and high >= 70.0
    assert add_chance_line(plot, None) is None and chance_line(plot) is None
    assert line not in plot.getPlotItem().items
    assert add_chance_line(plot, float("nan")) is None


@pytest.mark.parametrize("vertical", [True])
def test_a_vertical_chance_line(qtbot, vertical):
    from sslstudio.gui.plots import add_chance_line, make_plot

    plot = make_plot("per class", "accuracy (%)", "", legend="none")
    qtbot.addWidget(plot)
    line = add_chance_line(plot, 12.5, vertical=vertical)
    assert line.angle == 90 and line.value() == 12.5 and line.label.toPlainText() == "chance 12.5%"
