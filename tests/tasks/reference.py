"""Helpers of the task tests: a task's samples through its one transform, and plain numpy/PIL oracles.

The oracles are independent restatements of what a transform should compute (a window, a
standardised patch, PIL's pixelation...), written the obvious way, one image at a time, so that a
test can check the batched tensor code against them. No task uses them.
"""

import numpy as np
import torch
from PIL import Image


def noise_images(n, size=32, seed=0, low=0):
    return np.random.default_rng(seed).integers(low, 256, (n, size, size, 3), dtype=np.uint8)


def batch(task, images, seed=0, index=None):
    """``task.make_batch`` of uint8 images ``[B, S, S, 3]`` with a generator seeded by ``seed``."""
    images = torch.from_numpy(np.ascontiguousarray(images))
    index = torch.arange(len(images)) if index is None else torch.as_tensor(index)
    return task.make_batch(images, torch.Generator().manual_seed(seed), index)


def sample(task, image, seed=0):
    """``(inputs, target)`` of one image: the first sample of a batch of it alone."""
    inputs, target = batch(task, np.asarray(image)[None], seed)
    return inputs[0], target[0]


def crop(image, y, x, size):
    h, w = image.shape[:2]
    if y < 0 or x < 0 or y + size > h or x + size > w:
        raise ValueError("outside")
    return image[y:y + size, x:x + size]


def crop_channels(image, y, x, size, shifts):
    h, w, channels = image.shape
    out = np.empty((size, size, channels), dtype=image.dtype)
    for c in range(channels):
        cy = int(np.clip(y + int(shifts[c][0]), 0, h - size))
        cx = int(np.clip(x + int(shifts[c][1]), 0, w - size))
        out[..., c] = image[cy:cy + size, cx:cx + size, c]
    return out


def to_float(patch):
    return patch.astype(np.float32) / 255.0 if patch.dtype == np.uint8 else patch.astype(np.float32)


def standardise(patch, per_channel_std=True, floor=1e-2):
    """``[..., H, W, C]`` -> zero mean per channel, unit deviation per channel or per patch (float32)."""
    x = to_float(patch).astype(np.float64)
    centred = x - x.mean(axis=(-3, -2), keepdims=True)
    std = centred.std(axis=(-3, -2) if per_channel_std else (-3, -2, -1), keepdims=True)
    return (centred / np.maximum(std, floor)).astype(np.float32)


def chw(patch):
    return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)).movedim(-1, -3)


def greyscale(patch):
    y = to_float(patch) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(y[..., None], 3, axis=-1)


def pixelate(patch, side):
    """PIL: down to ``side`` (BOX) and back up (BILINEAR), uint8."""
    size = patch.shape[0]
    if side >= size:
        return patch.copy()
    small = Image.fromarray(np.ascontiguousarray(patch), "RGB").resize((side, side), Image.BOX)
    return np.asarray(small.resize((size, size), Image.BILINEAR))


def detail(patch):
    """Mean absolute difference between neighbouring pixels: a measure of fine detail."""
    x = to_float(np.asarray(patch))
    return float((np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()) / 2)


def random_block_mask(size, coverage, block, rng):
    """One random-block mask the plain way: blocks while more than a block short, then 32 tries."""
    target = coverage * size * size
    mask = np.zeros((size, size), dtype=bool)
    covered = 0
    while covered <= target - block * block:
        y, x = rng.integers(0, size - block + 1, size=2)
        mask[y:y + block, x:x + block] = True
        covered = int(mask.sum())
    for _ in range(32):
        y, x = rng.integers(0, size - block + 1, size=2)
        trial = mask.copy()
        trial[y:y + block, x:x + block] = True
        if trial.sum() <= target:
            mask = trial
    return mask


def straight_and_resumed(tmp_path, task_name, options, n_images, seed, stop_after_epoch=0):
    """Train ``task_name`` for 3 epochs (batch 4, 16 px) on a folder of ``n_images`` noise images twice:
    straight through, and cancelled after epoch ``stop_after_epoch``'s checkpoint and then resumed.

    Returns ``(straight run's summary, the stopped run's model state, the straight run's final model state,
    the resumed run's final model state)``.
    """
    from sslstudio.engine import PretrainConfig, pretrain
    from sslstudio.engine.events import RunControl

    folder = tmp_path / "images"
    folder.mkdir()
    for k, img in enumerate(noise_images(n_images, 16, seed=seed)):
        Image.fromarray(img).save(folder / f"{k}.png")

    def config(out, **kw):
        return PretrainConfig(task=task_name, data=str(folder), out=str(tmp_path / out), arch="resnet18", epochs=3,
                              batch_size=4, image_size=16, device="cpu", workers=0, seed=0, holdout=0.0,
                              task_options=options, **kw)

    summary = pretrain(config("straight"))
    control = RunControl()
    stopped = pretrain(config("resumed"), control=control,
                       on_event=lambda e: control.cancel() if e.kind == "checkpoint" and e.epoch == stop_after_epoch
                       else None)
    assert stopped["status"] == "cancelled" and stopped["epochs_completed"] == stop_after_epoch + 1
    middle = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)["model"]
    assert pretrain(config("resumed", resume=True))["epochs_completed"] == 3
    last = [torch.load(tmp_path / f"{run}/checkpoints/last.pt", weights_only=True)["model"]
            for run in ("straight", "resumed")]
    return summary, middle, last[0], last[1]
