import pytest

from sslstudio.engine.schedule import lr_multiplier, resolve_schedule
from sslstudio.errors import ConfigError


def test_step_schedule_decays_by_0_2_at_30_60_80_percent():
    f = lr_multiplier("step", total_steps=100, warmup_steps=0, lr_decay=0.2, milestones=(0.3, 0.6, 0.8))
    assert f(0) == 1.0 and f(29) == 1.0
    assert f(30) == pytest.approx(0.2)
    assert f(60) == pytest.approx(0.04)
    assert f(80) == pytest.approx(0.008)


def test_auto_keeps_paper_schedule_for_long_runs_and_warms_up_short_ones():
    assert resolve_schedule("auto", 100, None) == ("step", 0.0)
    name, warmup = resolve_schedule("auto", 10, None)
    assert name == "cosine" and warmup == pytest.approx(1.0)
    f = lr_multiplier("cosine", total_steps=100, warmup_steps=10, lr_decay=0.2, milestones=())
    assert f(0) < 0.1 and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.01
    with pytest.raises(ConfigError):
        resolve_schedule("linear", 10, None)


def test_auto_keeps_a_constant_rate_paper_constant():
    # DeepCluster trains at a constant rate and re-initialises its classifier every epoch
    assert resolve_schedule("auto", 500, None, paper_decays=False) == ("constant", 0.0)
    name, warmup = resolve_schedule("auto", 20, None, paper_decays=False)
    assert name == "constant" and warmup == pytest.approx(2.0)
    f = lr_multiplier(name, total_steps=100, warmup_steps=10, lr_decay=1.0, milestones=())
    assert f(0) < 0.1 and f(10) == f(99) == 1.0


def test_deepcluster_runs_resolve_to_a_constant_rate():
    from sslstudio.engine.pretrain import PretrainConfig
    from sslstudio.tasks import get_task

    for task, expected in (("deepcluster", "constant"), ("rotation", "cosine")):
        d = PretrainConfig(task=task, data=".", out=".", epochs=10).resolved(get_task(task)())
        assert d["schedule"] == expected
