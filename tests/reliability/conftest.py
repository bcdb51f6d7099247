import shutil

import numpy as np
import pytest
from PIL import Image

from sslstudio.engine import PretrainConfig, RunControl, pretrain


def write_images(folder, n, size=24, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        arr[: size // 3] = (90, 140, 255)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return folder


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
