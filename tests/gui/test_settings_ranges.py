"""The window's spin boxes take the ranges the engine declares (sslstudio.settings), not numbers of their own."""

import pytest

from sslstudio.engine.pretrain import PretrainConfig
from sslstudio.errors import ConfigError
from sslstudio.evaluation.compare import CompareSettings
from sslstudio.settings import spin_range


def _range(box):
    return box.minimum(), box.maximum()


@pytest.mark.slow
def test_spin_boxes_take_the_declared_ranges(window):
    pre, cmp = window.pretrain_page, window.compare_page
    for name, box in (("image_size", pre.image_size_box), ("epochs", pre.epochs), ("batch_size", pre.batch_size),
                      ("workers", pre.workers), ("monitor_every", pre.monitor_every)):
        assert _range(box) == spin_range(PretrainConfig, name), name
    assert _range(pre.lr) == spin_range(PretrainConfig, "lr", pre.lr.decimals()) and pre.lr.minimum() > 0
    for name, box in (("knn_k", cmp.knn_k), ("per_class", cmp.per_class), ("repeats", cmp.repeats),
                      ("repeats_all", cmp.repeats_all)):
        assert _range(box) == spin_range(CompareSettings, name), name
    for name, box in (("knn_t", cmp.knn_t), ("fraction", cmp.fraction)):
        assert _range(box) == spin_range(CompareSettings, name, box.decimals()) and box.minimum() > 0, name
    lo, hi = spin_range(CompareSettings, "epochs_all")
    assert _range(cmp.epochs_all) == (lo - 1, hi) and cmp.epochs_all.specialValueText() == "auto passes"


def test_the_windows_preview_refuses_a_bad_count_before_reading(tmp_path):
    from sslstudio.gui.task_page import render_preview

    with pytest.raises(ConfigError, match="^--n must be between 1 and 256; got 0.$"):
        render_preview("rotation", {}, 64, None, str(tmp_path / "nowhere"), 0, 0)
