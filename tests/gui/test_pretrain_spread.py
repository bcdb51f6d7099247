"""The pretrain page's projection-spread plot: the two-view tasks' collapse figure per epoch, live and reopened."""

import math

import numpy as np
import pytest
from PIL import Image

from sslstudio.engine.events import EpochEvent
from sslstudio.gui.plots import find_chance_line
from sslstudio.runs import RunDir
from sslstudio.tasks.contrastive import COLLAPSE_FRACTION


def epoch_event(epoch, extra, epochs=4):
    return EpochEvent(epoch=epoch, epochs=epochs, train_loss=1.0, train_metric=0.1, val_loss=None, val_metric=None,
                      metric_name="accuracy", lr=0.1, images_per_s=1.0, samples_per_s=2.0, elapsed_s=1.0, eta_s=1.0,
                      extra=extra)


def test_two_view_epochs_plot_the_spread_against_well_spread_and_collapsed_levels(qtbot, window):
    page = window.pretrain_page
    page.clear_plots()
    page.on_event(epoch_event(0, {}))  # a pretext task's epoch: no spread, no plot
    assert page.spread_plot.isHidden()
    healthy = 1 / math.sqrt(128)
    page.on_event(epoch_event(0, {"collapse_std": 0.05, "collapse_healthy": healthy}))
    page.on_event(epoch_event(1, {"collapse_std": 0.004, "collapse_healthy": healthy}))
    page.flush()
    assert not page.spread_plot.isHidden()
    x, y = page.spread_curve.item.getData()
    assert list(x) == [1, 2] and np.allclose(y, [0.05, 0.004])
    hx, hy = page.spread_healthy.getData()
    assert np.allclose(hy, healthy) and hx[0] == 1 and hx[-1] == 4  # across the run's epochs
    floor = find_chance_line(page.spread_plot)
    assert floor.value() == pytest.approx(COLLAPSE_FRACTION * healthy)
    assert "collapsed below 0.0088" in floor.label.toPlainText()
    assert "projection spread 0.0500 (57% of the 0.0884" in page.log_view.toPlainText()
    page.clear_plots()
    assert page.spread_plot.isHidden() and len(page.spread_curve.item.getData()[0] or []) == 0


@pytest.mark.slow
def test_a_reopened_simclr_run_shows_its_recorded_spread(qtbot, window, tmp_path):
    from sslstudio.engine.pretrain import PretrainConfig, pretrain

    folder = tmp_path / "views"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for k in range(16):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    out = tmp_path / "simclr-run"
    pretrain(PretrainConfig(task="simclr", data=str(folder), out=str(out), arch="resnet18", epochs=2, batch_size=8,
                            image_size=16, device="cpu", workers=0, seed=0, holdout=0.25))
    records = [r for r in RunDir(out).read_metrics() if r["type"] == "epoch"]
    page = window.pretrain_page
    assert page.open_run(str(out)) > 0
    page.flush()
    assert not page.spread_plot.isHidden()
    x, y = page.spread_curve.item.getData()
    assert list(x) == [1, 2] and np.allclose(y, [r["collapse_std"] for r in records])
    assert np.allclose(page.spread_healthy.getData()[1], records[0]["collapse_healthy"])
