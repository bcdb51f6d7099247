import shutil

import pytest

from sslstudio.engine import PretrainConfig, RunControl, pretrain
from tests.engine.test_pretrain import write_images  # noqa: F401 - the same images as the engine's tests


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "imgs", 24)


def run_settings(data, out, **kw):
    base = dict(task="rotation", data=str(data), out=str(out), arch="resnet18", epochs=1, batch_size=8,
                image_size=32, workers=0, device="cpu", seed=0, log_every=1)
    base.update(kw)
    return base


def stopped_after_first_epoch(data, out, **kw):
    """A 2-epoch run stopped after its first checkpoint (what a resume continues)."""
    control = RunControl()

    def on_event(event):
        if event.kind == "checkpoint":
            control.cancel()

    summary = pretrain(PretrainConfig(**run_settings(data, out, epochs=2, **kw)), on_event=on_event, control=control)
    assert summary["status"] == "cancelled" and summary["epochs_completed"] == 1
    return out


@pytest.fixture(scope="session")
def stopped_run(tmp_path_factory):
    """A 2-epoch run (seed 3, holdout 0.25) stopped after its first checkpoint, made once per module."""
    root = tmp_path_factory.mktemp("stopped")
    data = write_images(root / "imgs", 24)
    return data, stopped_after_first_epoch(data, root / "run", seed=3, holdout=0.25)


@pytest.fixture
def stopped(stopped_run, tmp_path):
    """A private copy of the stopped run: ``(images, run folder)``."""
    data, run = stopped_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return data, copy
