"""A live kNN monitor: how well the backbone's frozen features sort a labelled folder, epoch by epoch.

During pretraining the pretext loss says little about what the features are worth. The monitor
answers that question cheaply after an epoch: it runs the current backbone once over a small
labelled folder (every stage from the same forward pass), pools each stage's feature map globally
and scores a weighted kNN classifier (:mod:`sslstudio.evaluation.knn`, ``k = 20, T = 0.07`` by
default) on the folder's test split. The labelled folder is ``DIR/<class>/...`` (then a seeded,
stratified 20% test split) or ``DIR/train/<class>`` + ``DIR/test/<class>``, as for fine-tuning.

The reference line is the same measurement on a randomly initialised backbone of the same
architecture, built with ``torch.manual_seed(seed); build_backbone(arch)`` from the run's seed, which
is exactly how the pretraining loop builds its starting backbone: the reference is the run's own
epoch-0 value.

The monitor never disturbs training: it decodes the folder once, up front; it evaluates in eval mode
without gradients and puts every module back in the mode it was in; it runs inside
``torch.random.fork_rng`` (the CPU and training-device generators are restored afterwards, and it
never touches Python's or NumPy's generators), so a run with the monitor ends with bit-identical
weights to one without, and resumes the same way.

Speed: a forward pass over ``N`` labelled images costs about ``N / (3 * samples per epoch)`` of a
training epoch (a training sample costs a forward and a backward pass). To keep the monitor a small
share of an epoch, ``max_train_per_class`` and ``max_test`` cap the images it reads (a seeded,
stratified subset; ``None`` reads them all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sslstudio.errors import ConfigError, SSLStudioError
from sslstudio.evaluation.knn import KNN_K, KNN_T, knn_accuracy

__all__ = ["KnnMonitor", "MonitorResult", "format_monitor"]


@dataclass
class MonitorResult:
    """kNN accuracy per stage (0-1) and the seconds it took."""

    accuracy: dict[str, float]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class KnnMonitor:
    """kNN accuracy of a backbone's stages on a labelled folder, for use after every epoch.

    Args:
        labelled: The labelled folder (``DIR/<class>/...`` or ``DIR/train`` + ``DIR/test``).
        arch: Backbone architecture (for the random-init reference).
        image_size: Side the images are decoded to (the run's working resolution).
        device: Device the features are computed on (the training device).
        precision: ``fp32`` or ``bf16`` (autocast), as the run trains.
        seed: The run's seed: it seeds the test split, the image caps and the random-init reference.
        k: Neighbours of the kNN vote.
        t: Temperature of the vote weights.
        stages: Stages to score (default: every stage of the architecture).
        max_train_per_class: At most this many training images per class (seeded subset).
        max_test: At most this many test images in all (seeded, stratified subset).
        batch_size: Images per forward pass.

    Raises:
        ConfigError: The folder cannot be used (missing, one class, empty class folders...), in one
            sentence, before any training starts.
    """

    def __init__(self, labelled: str, arch: str, image_size: int, device: torch.device | str = "cpu",
                 precision: str = "fp32", seed: int = 0, k: int = KNN_K, t: float = KNN_T,
                 stages: Sequence[str] | None = None, max_train_per_class: int | None = None,
                 max_test: int | None = None, batch_size: int = 256):
        from sslstudio.evaluation.finetuning import load_labelled_data
        from sslstudio.models import build_backbone

        if k < 1 or t <= 0:
            raise ConfigError(f"the kNN monitor needs k >= 1 and T > 0; got k={k}, T={t}.")
        self.labelled, self.arch, self.image_size = str(labelled), arch, int(image_size)
        self.device = torch.device(device)
        self.precision, self.seed, self.k, self.t = precision, int(seed), int(k), float(t)
        self.batch_size = int(batch_size)
        self.every = 1  # how often the pretraining loop calls it (set by the loop, shown in its records)
        t0 = time.perf_counter()
        try:
            data = load_labelled_data(self.labelled, None, self.image_size, per_class=max_train_per_class,
                                      seed=self.seed)
        except SSLStudioError as exc:
            text = str(exc).rstrip(".")
            raise ConfigError(f"the kNN monitor cannot use {self.labelled}: {text[:1].lower()}{text[1:]}.") from exc
        test_x, test_y = data.test_x, data.test_y
        if max_test is not None and len(test_y) > max_test:
            keep = _stratified_subset(test_y, int(max_test), self.seed)
            test_x, test_y = test_x[keep], test_y[keep]
        if len(data.train_y) == 0 or len(test_y) == 0:
            raise ConfigError(f"the kNN monitor cannot use {self.labelled}: no readable training or test images.")
        self.classes = list(data.classes)
        self.train_x, self.train_y = data.train_x, data.train_y
        self.test_x, self.test_y = test_x, test_y
        # train and test go through the network together: one pass, one batch sequence
        self._images = np.concatenate([self.train_x, self.test_x])
        with torch.random.fork_rng(devices=[]):
            probe = build_backbone(arch)  # names and channels only (random weights, never used)
        names = probe.stage_names()
        if stages is None:
            stages = names
        unknown = [s for s in stages if s not in names]
        if unknown:
            raise ConfigError(f"the kNN monitor cannot score stage(s) {', '.join(unknown)} of {arch}; "
                              f"its stages are {', '.join(names)}.")
        self.stages = [s for s in names if s in stages]
        self.channels = {s: probe.stage_channels(s) for s in self.stages}
        self.load_seconds = time.perf_counter() - t0
        self._random: MonitorResult | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        """Images one evaluation runs through the network (training + test)."""
        return len(self._images)

    def describe(self) -> str:
        return (f"kNN monitor on {self.labelled}: {len(self.classes)} classes, {len(self.train_y)} reference and "
                f"{len(self.test_y)} test images, stages {', '.join(self.stages)} (k={self.k}, T={self.t:g})")

    def random_reference(self) -> MonitorResult:
        """The accuracy of a random-init backbone (seeded from the run's seed), computed once."""
        if self._random is None:
            from sslstudio.models import build_backbone

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                backbone = build_backbone(self.arch)
            self._random = self.measure(backbone.to(self.device))
            del backbone
        return self._random

    def evaluate(self, backbone: nn.Module) -> dict[str, float]:
        """kNN accuracy (0-1) of each stage of ``backbone``'s current weights."""
        return self.measure(backbone).accuracy

    def measure(self, backbone: nn.Module) -> MonitorResult:
        """:meth:`evaluate` with its duration. The backbone's modes and every RNG are left as found."""
        from sslstudio.evaluation.features import extract_stages, global_pool

        t0 = time.perf_counter()
        modes = [(m, m.training) for m in backbone.modules()]
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                feats = extract_stages(backbone, self._images, self.stages, self.device, self.precision,
                                       batch_size=self.batch_size)
        finally:
            for module, mode in modes:
                module.training = mode
        n_train = len(self.train_y)
        acc = {}
        for stage in self.stages:
            f = global_pool(feats[stage], self.channels[stage])
            acc[stage] = knn_accuracy(f[:n_train], self.train_y, f[n_train:], self.test_y, self.k, self.t,
                                      num_classes=len(self.classes))
        return MonitorResult(acc, time.perf_counter() - t0)


def _stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` rows, the same share of every class (at least one each)."""
    rng = np.random.default_rng([seed, 0x6D6F6E])  # a stream of its own, never the run's
    share = n / len(labels)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        m = max(1, int(round(share * len(idx))))
        keep.append(rng.permutation(idx)[:m])
    return np.sort(np.concatenate(keep))


def format_monitor(accuracy: dict[str, float], random: dict[str, float] | None = None) -> str:
    """``kNN layer1 41.2% layer2 45.0% (random 30.1% 31.0%)``: one short line, in %, one decimal."""
    text = "kNN " + " ".join(f"{s} {100 * a:.1f}%" for s, a in accuracy.items())
    if random:
        text += " (random " + " ".join(f"{100 * random[s]:.1f}%" for s in accuracy if s in random) + ")"
    return text
