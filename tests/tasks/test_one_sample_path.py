"""One sample path: a preview is the training transform on a small batch, for every task.

The preview (``engine.preview.preview_batch``) and the training loop (``engine.pretrain``, through
``engine.loader.DeviceBatches``) must hand the task's renderer and the model the same inputs and
labels for the same images and seed; and no task keeps a second, per-image transform.
"""

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.engine.loader import epoch_batches
from sslstudio.engine.preview import preview_batch
from sslstudio.engine.pretrain import PretrainConfig, pretrain
from sslstudio.tasks import create_task, get_task, list_tasks
from sslstudio.tasks.base import PretextTask

N = 8
pretrain_module = importlib.import_module("sslstudio.engine.pretrain")  # the module, not the function


def write_images(folder, n=N, size=40):
    """``n`` smooth colour images with texture (every task can use them)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for k in range(n):
        phase = rng.uniform(0, 6, 3)
        waves = np.stack([np.sin((3 + k) * x * 6 + phase[c]) * np.cos((2 + c) * y * 6) for c in range(3)], -1)
        pixels = (127 + 100 * waves + rng.normal(0, 8, waves.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png")
    return folder


@pytest.mark.parametrize("name", list_tasks())
def test_the_preview_shows_what_training_receives(name, tmp_path, monkeypatch):
    """Record every batch the task makes; the first batch of a real pretraining run (its first items in
    order, at epoch 0, step 0) must equal the preview of the same images and seed."""
    cls = get_task(name)
    made, prepared = [], []
    make_batch, prepare = cls.make_batch, cls.prepare

    def recording_make_batch(self, images, generator, index=None):
        inputs, target = make_batch(self, images, generator, index)
        made.append((None if index is None else index.cpu().clone(), inputs.detach().cpu(), target.cpu()))
        return inputs, target

    def recording_prepare(self, images, seed):
        prepared.append(np.asarray(images).copy())
        return prepare(self, images, seed)

    monkeypatch.setattr(cls, "make_batch", recording_make_batch)
    monkeypatch.setattr(cls, "prepare", recording_prepare)
    # the loop's own batches, in item order: its first batch is then the first N items
    monkeypatch.setattr(pretrain_module, "epoch_batches",
                        lambda n, size, seed, epoch, shuffle=True, drop_last=True, order=None:
                        epoch_batches(n, size, seed, epoch, shuffle=False, drop_last=drop_last))
    data = write_images(tmp_path / "images")
    pretrain(PretrainConfig(task=name, data=str(data), out=str(tmp_path / "run"), arch="resnet18", epochs=1,
                            batch_size=N, image_size=32, device="cpu", workers=0, seed=3, holdout=0.0, log_every=1))
    trained = [m for m in made if m[0] is not None and len(m[0]) == N]
    assert trained, "the training loop made no batch through make_batch"
    index, inputs, target = trained[0]
    assert index.tolist() == list(range(N))

    made.clear()
    preview = preview_batch(create_task(name, image_size=32), prepared[0], n=N, seed=3)
    assert preview.index.tolist() == list(range(N))
    assert torch.equal(preview.inputs, inputs) and torch.equal(preview.target, target)
    assert len(preview.samples()) == N and torch.equal(preview.samples()[1][1], target[1])


@pytest.mark.parametrize("name", list_tasks())
def test_no_task_keeps_a_per_image_transform(name):
    cls = get_task(name)
    assert cls.make_batch is not PretextTask.make_batch
    for klass in cls.__mro__:  # the task, its bases and the protocol itself
        for attr in ("make_sample", "make_item", "batch_transform"):
            assert attr not in vars(klass), f"{klass.__name__} defines {attr}"
