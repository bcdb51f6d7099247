"""Every task says in words what a sample is: ``caption`` (a few words under a thumbnail) and ``explain``
(one or two plain sentences under the large view), and draws its labels at a readable size."""

import re

import numpy as np
import pytest
import torch
from PIL import ImageDraw

from sslstudio.engine.preview import preview_batch
from sslstudio.tasks import create_task, list_tasks
from sslstudio.tasks.base import ClassificationTask, PretextTask
from sslstudio.tasks.render import READABLE_PX, SMALL_TEXT_PX, min_display_scale

N = 8
SIZE = 32
#: Words a person should not have to read: tensor shapes, dtypes, internals.
TECHNICAL = re.compile(r"tensor|float\d*|int64|dtype|torch|\b\d+\s*[x\u00d7]\s*\d+\b|\bshape\b", re.IGNORECASE)


def images(n=N, size=SIZE):
    """Smooth colourful images with texture (every task can use them, k-means finds groups)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for k in range(n):
        phase = rng.uniform(0, 6, 3)
        waves = np.stack([np.sin((2 + k) * x * 5 + phase[c]) * np.cos((1 + c + k % 3) * y * 5) for c in range(3)], -1)
        out.append((127 + 110 * waves + rng.normal(0, 6, waves.shape)).clip(0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def batches():
    made = {}
    for name in list_tasks():
        task = create_task(name, image_size=SIZE)
        made[name] = (task, preview_batch(task, images(), N, seed=0))
    return made


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_explains_its_samples_in_plain_words(name, batches):
    task, batch = batches[name]
    assert type(task).explain is not PretextTask.explain, f"{name} keeps the default explanation"
    assert type(task).caption is not PretextTask.caption, f"{name} keeps the default caption"
    for inputs, target in batch.samples():
        caption, text = task.caption(target), task.explain(inputs, target)
        assert isinstance(caption, str) and caption.strip() and len(caption) <= 40, caption
        assert isinstance(text, str) and len(text) > 40 and text.rstrip().endswith((".", ")")), text
        assert len(re.findall(r"[.!?](?:\s|$)", text)) <= 3, f"more than a few sentences: {text}"
        for words in (caption, text):
            assert not TECHNICAL.search(words), f"{name}: technical words in {words!r}"
        assert "network" in text.lower() or "image" in text.lower()


@pytest.mark.parametrize("name", list_tasks())
def test_captions_tell_different_labels_apart(name, batches):
    task, batch = batches[name]
    if not isinstance(task, ClassificationTask):
        pytest.skip("a reconstruction task's target is an image, not a label")
    by_target = {}
    for _, target in batch.samples():
        by_target.setdefault(tuple(target.reshape(-1).tolist()), set()).add(task.caption(target))
    assert all(len(c) == 1 for c in by_target.values()), "one label, one caption"
    if name != "rotation":  # rotation's samples all hold the four angles
        assert len(by_target) > 1, f"{name}: the batch has one label only; the test would prove nothing"
    captions = [next(iter(c)) for c in by_target.values()]
    assert len(set(captions)) == len(captions), f"{name}: different labels share a caption: {by_target}"


def test_rotation_caption_and_explanation_name_the_angle(batches):
    task, batch = batches["rotation"]
    inputs, target = batch.samples()[0]
    assert task.caption(target[1:2]) == "turned 90\u00b0"
    assert "turned by 90\u00b0" in task.explain(inputs[1:2], target[1:2])
    assert "which of the four angles" in task.explain(inputs, target)


def test_the_defaults_read_as_words():
    class Plain(PretextTask):
        name = "plain"
        description = "Predict something about an image"

    task = Plain.__new__(Plain)  # no config needed for the words
    assert task.caption(torch.tensor(3)) == "class 3"
    assert task.caption(torch.zeros(3, 4, 4)) == "plain sample"
    assert task.explain(torch.zeros(3, 4, 4), torch.tensor(3)) == \
        "The network sees this input and must predict something about an image."


@pytest.mark.parametrize("name", list_tasks())
def test_drawn_text_is_readable(name, batches, monkeypatch):
    """Every text a sample's drawing (and the task's whole-batch drawing) writes is at least
    ``SMALL_TEXT_PX``, so shown at ``min_display_scale`` or more it is at least ``READABLE_PX`` high."""
    task, batch = batches[name]
    sizes = []
    text = ImageDraw.ImageDraw.text

    def recording_text(self, xy, string, *args, **kwargs):
        font = kwargs.get("font") or (args[1] if len(args) > 1 else None)
        sizes.append(getattr(font, "size", 0))
        return text(self, xy, string, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording_text)
    inputs, target = batch.samples()[0]
    tile = task.render(inputs, target)
    assert tile.width >= 2 * SIZE  # small inputs are drawn enlarged
    batch.own_drawing(task)
    assert sizes and min(sizes) >= SMALL_TEXT_PX, f"{name} draws text at {min(sizes)} px"
    assert min(sizes) * min_display_scale() >= READABLE_PX - 1e-9
