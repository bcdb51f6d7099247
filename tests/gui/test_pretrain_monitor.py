"""The pretrain page's kNN monitor: the folder chooser, the every-N box and the live kNN plot."""

import numpy as np
import pytest
from PIL import Image

from sslstudio.engine.events import EpochEvent
from sslstudio.gui.plots import find_chance_line
from sslstudio.runs import RunDir


@pytest.fixture
def labelled(tmp_path):
    """Two classes of 32 px images, six each."""
    rng = np.random.default_rng(2)
    root = tmp_path / "labelled"
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def epoch_event(epoch, knn, random, epochs=5):
    return EpochEvent(epoch=epoch, epochs=epochs, train_loss=1.0, train_metric=0.5, val_loss=None, val_metric=None,
                      metric_name="accuracy", lr=0.1, images_per_s=1.0, samples_per_s=4.0, elapsed_s=1.0, eta_s=1.0,
                      extra={"monitor_knn": knn, "monitor_knn_random": random, "monitor_s": 0.2})


@pytest.mark.slow
def test_epoch_events_feed_one_curve_per_stage_and_dashed_random_lines(qtbot, window):
    page = window.pretrain_page
    page.monitor_folder.setText("")
    page.clear_plots()
    assert page.knn_plot.isHidden()  # no monitor folder, no figures: no plot
    stages = ["layer1", "layer2", "layer3", "layer4"]
    random = {s: 0.2 + 0.01 * i for i, s in enumerate(stages)}
    page.on_event(epoch_event(0, {s: 0.3 + 0.1 * i for i, s in enumerate(stages)}, random))
    page.on_event(epoch_event(1, {s: 0.35 + 0.1 * i for i, s in enumerate(stages)}, random))
    page.flush()
    assert not page.knn_plot.isHidden()
    assert list(page.knn_curves) == stages
    x, y = page.knn_curves["layer3"].item.getData()
    assert list(x) == [1, 2] and np.allclose(y, [50.0, 55.0])  # plotted in %
    for i, s in enumerate(stages):
        rx, ry = page.knn_random[s].getData()
        assert np.allclose(ry, 100 * random[s]) and rx[0] == 1 and rx[-1] == 5  # across the run's epochs
    # colour and line style differ per stage; the random line is dashed in its stage's colour
    pens = [page.knn_curves[s].item.opts["pen"] for s in stages]
    assert len({p.color().name() for p in pens}) == 4 and len({(p.style(), tuple(p.dashPattern())) for p in pens}) == 4
    for s in stages:
        ref = page.knn_random[s].opts["pen"]
        assert ref.color().rgb() & 0xFFFFFF == page.knn_curves[s].item.opts["pen"].color().rgb() & 0xFFFFFF
        assert ref.dashPattern()  # dashed
    # every curve is named in the legend
    names = {label.text for _sample, label in page.knn_plot.getPlotItem().legend.items}
    assert names == set(stages) | {f"{s} random init" for s in stages}
    item = page.knn_plot.getPlotItem()
    assert item.getAxis("left").labelText == "kNN accuracy (%)" and item.getAxis("bottom").labelText == "epoch"
    assert "kNN layer1 30.0%" in page.log_view.toPlainText()


@pytest.mark.slow
def test_monitor_folder_defaults_to_the_labelled_folder_until_edited(qtbot, window, tmp_path):
    page = window.pretrain_page
    qtbot.wait(10)  # the page links to step 4 once the window is built
    window.compare_page.labelled.setText(str(tmp_path / "a"))
    assert page.monitor_folder.text() == str(tmp_path / "a")
    page.monitor_folder.clear()
    page.monitor_folder.textEdited.emit("")  # what typing does
    window.compare_page.labelled.setText(str(tmp_path / "b"))
    assert page.monitor_folder.text() == ""
    assert page.values()["monitor_follow"] is False and page.values()["monitor_labelled"] == ""


@pytest.mark.slow
def test_run_with_monitor_plots_the_recorded_values(qtbot, window, tiny_images, labelled, fast):
    from tests.gui.test_window import scan

    scan(qtbot, window, tiny_images)
    fast(window, epochs=1)
    page = window.pretrain_page
    page.monitor_folder.setText(str(labelled))
    page.monitor_every.setValue(1)
    with qtbot.waitSignal(page.run_finished, timeout=90_000) as blocker:
        page.start_button.click()
        assert not page.monitor_folder.isEnabled() and not page.monitor_every.isEnabled()
        assert not page.monitor_browse.isEnabled()
    summary = blocker.args[0]
    assert summary["status"].startswith("finished") and summary["monitor"]["random_knn"]
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert page.monitor_folder.isEnabled()
    page.flush()
    records = [r for r in RunDir(page.run_dir).read_metrics() if r["type"] == "epoch"]
    assert len(records) == 1
    for stage, curve in page.knn_curves.items():
        x, y = curve.item.getData()
        assert list(x) == [1]
        assert np.allclose(y, [100 * r["monitor_knn"][stage] for r in records])
        _, ry = page.knn_random[stage].getData()
        assert np.allclose(ry, 100 * records[0]["monitor_knn_random"][stage])
    assert set(page.knn_curves) == set(records[0]["monitor_knn"])
    # two classes: the chance line of the kNN plot (in %) sits at 50
    assert records[0]["monitor_chance"] == 0.5
    assert find_chance_line(page.knn_plot).value() == 50.0
    # reopening the run shows the same figures from metrics.jsonl
    page.monitor_folder.setText("")
    assert page.open_run(page.run_dir) > 0
    page.flush()
    assert not page.knn_plot.isHidden()
    x, y = page.knn_curves["layer4"].item.getData()
    assert np.allclose(y, [100 * r["monitor_knn"]["layer4"] for r in records])
    assert find_chance_line(page.knn_plot) is not None and find_chance_line(page.metric_plot) is not None
