"""The pretraining page says whether a run learnt: a chance line on the pretext plot, and a run at chance or
one whose loss diverged is named so in the status line and the run list, with what to try."""

import pytest

from sslstudio.engine import verdict
from sslstudio.gui.plots import find_chance_line
from sslstudio.tasks.rotation import RotationTask
from tests.gui.test_window import scan


@pytest.mark.parametrize("case", ["not learnt", "diverged"])
def test_the_status_line_run_list_and_chance_line_say_how_the_run_ended(qtbot, window, tiny_images, fast,
                                                                         monkeypatch, case):
    if case == "not learnt":  # rotation's chance is 25%: a 30% model has not learnt it
        monkeypatch.setattr(RotationTask, "metric", lambda self, output, target: (0.3 * len(target), len(target)))
    else:  # the loss is NaN from the first step on
        loss = RotationTask.loss
        monkeypatch.setattr(RotationTask, "loss", lambda self, o, t: loss(self, o, t) * float("nan"))
    scan(qtbot, window, tiny_images)
    fast(window, epochs=2)
    page = window.pretrain_page
    with qtbot.waitSignal(page.run_finished, timeout=60_000) as blocker:
        page.start_button.click()
    summary = blocker.args[0]
    expected = verdict.NOT_LEARNT if case == "not learnt" else verdict.DIVERGED
    assert summary["status"] == expected
    text = page.status.text()
    assert expected[:1].upper() + expected[1:] in text and ("Try more epochs" in text or "Lower the" in text)
    assert "--" not in text.replace("\u2014", "")  # the window names its own fields, not CLI flags
    qtbot.waitUntil(lambda: page.runs.topLevelItemCount() == 1, timeout=5000)
    assert page.runs.topLevelItem(0).text(3) == expected
    if case == "not learnt":
        line = find_chance_line(page.metric_plot)
        assert line is not None and line.value() == pytest.approx(25.0)  # the plot is in percent
        assert line.label.toPlainText() == "chance 25.0%"
        assert "chance 25.0%" in text and "paper trains 100" in text
    else:
        assert "learning rate" in text and "epoch 1, step 1" in text
    page.clear_plots()
    assert find_chance_line(page.metric_plot) is None
