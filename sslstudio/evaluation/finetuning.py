"""Fine-tuning on a labelled set: a linear probe on frozen features (``head``) or all layers (``all``).

``head``: the chosen backbone stage's feature map is average-pooled to a small grid (at most
:data:`MAX_PROBE_DIM` values, e.g. 512 x 2 x 2 for a ResNet's last stage), standardised with the
training split's mean and standard deviation, and a linear classifier is trained on it (Adam).
``all``: backbone and a new linear classifier are trained together (SGD with Nesterov momentum,
the backbone at a tenth of the head's learning rate, random crops and flips, cosine decay).
Test top-1 accuracy is measured after every epoch; the reported ``test_accuracy`` is the last
epoch's (choosing the best epoch on the test set would flatter every row).
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.engine.device import autocast, device_name, resolve_device, resolve_precision
from sslstudio.engine import tblog
from sslstudio.engine.events import (Cancelled, EpochEvent, EventSink, FailedEvent, FinishedEvent, LogEvent,
                                     RunControl)
from sslstudio.errors import ConfigError, SSLStudioError
from sslstudio.models.pretrained import load_run_backbone
from sslstudio.runs import RunDir, is_run_dir, library_versions
from sslstudio.settings import (MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_PER_CLASS, MIN_IMAGE_SIZE,
                                check_settings, param)
from sslstudio.models.normalise import normalise

MODES = ("head", "all")
MAX_PROBE_DIM = 4096
DEFAULT_EPOCHS = {"head": 50, "all": 30}
DEFAULT_LR = {"head": 1e-3, "all": 0.1}


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning job. ``init`` is ``random``, ``imagenet``, a run directory or a
    weights file; ``arch`` / ``image_size`` default to the run's (else resnet18 / 64)."""

    init: str
    labelled: str
    mode: str = "head"
    out: str | None = None
    test: str | None = None
    arch: str | None = None
    per_class: int | None = param(None, "Labelled images per class (a seeded subset).", min=1, max=MAX_PER_CLASS)
    fraction: float | None = param(None, "Label budget as a share of each class (instead of --per-class).",
                                   min=0.0, min_exclusive=True, max=1.0)
    test_fraction: float = param(0.2, "Test share when there is no test folder.", min=0.0, min_exclusive=True,
                                 max=1.0, max_exclusive=True, flag="test_fraction")
    epochs: int | None = param(None, "Training epochs (default: 50 for head, 30 for all).", min=1, max=MAX_EPOCHS)
    layer: str | None = None
    batch_size: int = param(64, "Images per batch.", min=1, max=MAX_BATCH_SIZE)
    lr: float | None = param(None, "Learning rate (default: 1e-3 for head, 0.1 for all).", min=0.0,
                             min_exclusive=True, max=10.0)
    weight_decay: float = param(5e-4, "L2 weight decay.", min=0.0, max=1.0, flag="weight_decay")
    image_size: int | None = param(None, "Side of the square inputs (default: the run's, else 64).",
                                   min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE)
    device: str = "auto"
    precision: str = "auto"
    seed: int = param(0, "Seed of the label draw and the classifier.", min=0)
    weights: str | None = None  # an explicit ImageNet weights file for init=imagenet
    #: Accept a TorchScript archive as ``init`` (opening one runs code from the file).
    trust_code: bool = False


@dataclass
class LabelledData:
    """Decoded labelled images, shared by every job of a comparison."""

    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_source: str
    skipped: list
    train_paths: list = dataclasses.field(default_factory=list)
    test_paths: list = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.classes)} classes, {len(self.train_y)} training and {len(self.test_y)} test images "
                f"(test from {self.test_source})")


def load_labelled_data(labelled: str, test: str | None, image_size: int, per_class: int | None = None,
                       test_fraction: float = 0.2, seed: int = 0, fraction: float | None = None) -> LabelledData:
    """Read and decode a labelled folder (and test folder) at ``image_size``.

    Unusable files are skipped (listed in ``skipped`` with their reasons); a class left without a
    usable training image raises :class:`~sslstudio.errors.DataError` naming it.
    """
    from sslstudio.data import decode_images, load_labelled
    from sslstudio.data.labelled import check_usable_classes

    split = load_labelled(labelled, test, per_class=per_class, test_fraction=test_fraction, seed=seed,
                          fraction=fraction)

    def decode(items):
        labels = {Path(p): y for p, y in items}
        dec = decode_images([p for p, _ in items], image_size)
        paths = [str(p) for p in dec.paths]
        return dec.arrays, np.array([labels[Path(p)] for p in dec.paths], dtype=np.int64), dec.skipped, paths

    tx, ty, s1, tp = decode(split.train)
    vx, vy, s2, vp = decode(split.test)
    check_usable_classes(split, tp + vp, list(s1) + list(s2))
    return LabelledData(split.classes, tx, ty, vx, vy, split.test_source, list(s1) + list(s2), tp, vp)


def resolve_init(init: str, arch: str | None, seed: int, weights: str | None = None, trust_code: bool = False):
    """Build the backbone an ``init`` names; returns ``(backbone, info)``. A TorchScript archive (as
    ``init`` or ``weights``) is opened only with ``trust_code`` (it runs code from the file)."""
    from sslstudio.models import build_backbone

    if init == "random":
        torch.manual_seed(seed)
        arch = arch or "resnet18"
        return build_backbone(arch), {"init": "random", "arch": arch}
    if init == "imagenet":
        arch = arch or "resnet18"
        return (build_backbone(arch, weights=weights or "imagenet", trust_code=trust_code),
                {"init": "imagenet", "arch": arch})
    path = Path(init)
    if is_run_dir(path):
        backbone, config = load_run_backbone(path)
        if arch and arch != config["arch"]:
            raise ConfigError(f"the run {path} trained a {config['arch']} backbone, not {arch}.")
        return backbone, {"init": str(path), "arch": config["arch"], "task": config.get("task"),
                          "image_size": config.get("image_size")}
    if path.is_file():
        arch = arch or "resnet18"
        return build_backbone(arch, weights=str(path), trust_code=trust_code), {"init": str(path), "arch": arch}
    raise ConfigError(f"--init {init!r} is neither random, imagenet, a run directory (with config.json) "
                      "nor a weights file.")


def run_defaults(init: str) -> dict:
    """Architecture and image size recorded in a run directory (empty for other inits)."""
    if init not in ("random", "imagenet") and is_run_dir(init):
        config = RunDir(init).read_config()
        return {"arch": config.get("arch"), "image_size": config.get("image_size"), "task": config.get("task")}
    return {}


def finetune(config: FinetuneConfig, on_event: EventSink | None = None, control: RunControl | None = None,
             data: LabelledData | None = None, init: tuple | None = None) -> dict:
    """Run one fine-tuning job; writes ``config.json``, ``metrics.jsonl`` and ``summary.json`` to
    ``config.out`` (when given) and returns the summary (``test_accuracy`` in [0, 1]).

    ``data`` (decoded labelled images) and ``init`` (``resolve_init``'s result) may be passed in by
    a caller that already has them, as the comparison grid does.
    """
    emit = on_event or (lambda e: None)
    control = control or RunControl()
    try:
        check_settings(config)  # every declared range, before anything is read or written
        if not config.out:
            return _finetune(config, emit, control, data, init)
        with RunDir(config.out).hold("finetune"):  # one job at a time in the output folder
            return _finetune(config, emit, control, data, init)
    except SSLStudioError as exc:
        emit(FailedEvent(str(exc), type(exc).__name__, traceback.format_exc()))
        raise
    except Exception as exc:
        emit(FailedEvent(f"fine-tuning failed: {exc}", type(exc).__name__, traceback.format_exc()))
        raise


@dataclass
class _Job:
    """What the set-up phase resolved for one fine-tuning job (the later phases read it)."""

    cfg: FinetuneConfig
    backbone: nn.Module
    info: dict
    data: LabelledData
    layer: str
    image_size: int
    epochs: int
    lr: float
    device: torch.device
    precision: str
    run: RunDir | None
    t0: float
    tb: tblog.ScalarLog | None = None  # the TensorBoard copy of metrics.jsonl

    @property
    def label(self) -> dict:
        return {"init": self.cfg.init, "mode": self.cfg.mode, "layer": self.layer}


def _finetune(cfg: FinetuneConfig, emit: EventSink, control: RunControl, data: LabelledData | None,
              init: tuple | None) -> dict:
    """The job's phases: set up, open the run folder, fit (one record per epoch), finish."""
    job = _setup(cfg, emit, data, init)
    _open_run(job)
    job.tb = tblog.finetune_log(job.run.path if job.run else None, emit, job.lr)
    try:
        torch.manual_seed(cfg.seed)
        history, cancelled = _fit(job, control, _epoch_reporter(job, emit))
        return _finish(job, history, cancelled, emit)
    finally:
        job.tb.close()


def _setup(cfg: FinetuneConfig, emit: EventSink, data: LabelledData | None, init: tuple | None) -> _Job:
    """Resolve the defaults, build the backbone, check the stage and read the labelled images."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode must be head or all; got {cfg.mode!r}.")
    t0 = time.perf_counter()
    defaults = run_defaults(cfg.init)
    image_size = int(cfg.image_size or defaults.get("image_size") or 64)
    arch = cfg.arch or defaults.get("arch") or "resnet18"
    device = resolve_device(cfg.device)
    backbone, info = init or resolve_init(cfg.init, arch, cfg.seed, cfg.weights, cfg.trust_code)
    stages = backbone.stage_names()
    layer = stages[-1] if cfg.layer in (None, "last") else cfg.layer
    if layer not in stages:
        raise ConfigError(f"{arch} has no stage {layer!r}; its stages are {', '.join(stages)} (or 'last').")
    if data is None:
        emit(LogEvent(f"reading labelled images in {cfg.labelled}"))
        data = load_labelled_data(cfg.labelled, cfg.test, image_size, cfg.per_class, cfg.test_fraction, cfg.seed,
                                  cfg.fraction)
    emit(LogEvent(data.summary()))
    return _Job(cfg, backbone, info, data, layer, image_size, _epochs(cfg, len(data.train_y)),
                float(cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.mode]), device,
                resolve_precision(cfg.precision, device), RunDir(cfg.out) if cfg.out else None, t0)


def _epochs(cfg: FinetuneConfig, n_train: int) -> int:
    """Epochs of a head job (None: the mode's default; 0 is refused earlier); for ``all``, the number of
    evaluation points of its step budget, which is what its progress counts."""
    if cfg.mode == "all":
        from sslstudio.evaluation.finetune_all import MIN_STEPS, resolve_settings

        return resolve_settings(n_train, epochs=cfg.epochs, batch_size=_all_batch_size(n_train, cfg.batch_size),
                                min_steps=1 if cfg.epochs is not None else MIN_STEPS)["eval_points"]
    return int(cfg.epochs if cfg.epochs is not None else DEFAULT_EPOCHS[cfg.mode])


def _open_run(job: _Job) -> None:
    """Write ``config.json`` (every resolved setting) and start a fresh ``metrics.jsonl``."""
    if not job.run:
        return
    settings = {**dataclasses.asdict(job.cfg), "arch": job.info["arch"], "image_size": job.image_size,
                "epochs": job.epochs, "lr": job.lr, "layer": job.layer, "classes": job.data.classes,
                "device": str(job.device), "device_name": device_name(job.device), "precision": job.precision,
                "versions": library_versions()}
    job.run.path.mkdir(parents=True, exist_ok=True)
    job.run.write_config(settings)
    if job.run.metrics_path.exists():
        job.run.metrics_path.unlink()


def _epoch_reporter(job: _Job, emit: EventSink):
    """The per-epoch callback: one record in ``metrics.jsonl`` and one :class:`EpochEvent` with its ETA."""
    def on_epoch(epoch: int, train_loss: float, train_acc: float, test_acc: float) -> None:
        if job.run:
            record = {"type": "epoch", "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                      "test_accuracy": test_acc}
            job.run.append_metrics([record])
            job.tb.add([record])
        elapsed = time.perf_counter() - job.t0
        emit(EpochEvent(epoch=epoch, epochs=job.epochs, train_loss=train_loss, train_metric=train_acc,
                        val_loss=None, val_metric=test_acc, metric_name="accuracy", lr=job.lr, images_per_s=0.0,
                        samples_per_s=0.0, elapsed_s=elapsed, eta_s=elapsed / (epoch + 1) * (job.epochs - epoch - 1),
                        extra=job.label))
    return on_epoch


def _fit(job: _Job, control: RunControl, on_epoch) -> tuple[list, bool]:
    """Train the probe or all layers; returns the per-epoch history and whether the user stopped it."""
    train = _train_probe if job.cfg.mode == "head" else _train_all
    history: list = []

    def record(*point) -> None:
        history.append(point[1:])
        on_epoch(*point)
    try:
        train(job, control, record)
    except Cancelled:
        return history, True
    return history, False


def _finish(job: _Job, history: list, cancelled: bool, emit: EventSink) -> dict:
    """The summary (last epoch's figures, counts, skipped files, time), written and announced."""
    data = job.data
    summary = {"status": "cancelled" if cancelled else "finished", **job.label, "arch": job.info["arch"],
               "image_size": job.image_size, "epochs": job.epochs, "epochs_completed": len(history),
               "test_accuracy": history[-1][2] if history else None,
               "train_accuracy": history[-1][1] if history else None,
               "classes": len(data.classes), "train_images": int(len(data.train_y)),
               "test_images": int(len(data.test_y)), "test_source": data.test_source,
               "skipped": len(data.skipped), "skipped_by_reason": dict(Counter(r for _, r in data.skipped)),
               "skipped_files": [{"path": str(p), "reason": r} for p, r in data.skipped],
               "time_s": time.perf_counter() - job.t0, "device": str(job.device)}
    if job.run:
        job.run.write_summary(summary)
    emit(FinishedEvent(summary=summary, cancelled=cancelled))
    return summary


# ----------------------------------------------------------------------------------------------
def probe_grid(channels: int, spatial: int, max_dim: int = MAX_PROBE_DIM) -> int:
    """Side of the pooled grid for a stage: the largest ``g <= spatial`` with ``channels*g*g <= max_dim``."""
    g = max(1, int(math.floor(math.sqrt(max_dim / max(channels, 1)))))
    return max(1, min(g, spatial))


@torch.no_grad()
def stage_features(backbone: nn.Module, images: np.ndarray, layer: str, device: torch.device,
                   precision: str, batch_size: int = 128, control: RunControl | None = None) -> torch.Tensor:
    """Average-pooled features of ``layer`` for uint8 images, as a float32 CPU tensor [N, D]."""
    backbone.eval().to(device)
    out = []
    grid = None
    for start in range(0, len(images), batch_size):
        if control:
            control.checkpoint()
        x = normalise(images[start:start + batch_size]).to(device)
        with autocast(device, precision):
            fmap = backbone.forward_stage(x, layer)
        if grid is None:
            grid = probe_grid(fmap.shape[1], min(fmap.shape[2], fmap.shape[3]))
        out.append(F.adaptive_avg_pool2d(fmap.float(), grid).flatten(1).cpu())
    return torch.cat(out)


def _train_probe(job: _Job, control: RunControl, on_epoch) -> None:
    """A linear classifier (Adam, cosine) on the standardised pooled features of ``job.layer``; calls
    ``on_epoch(epoch, train_loss, train_acc, test_acc)`` after each epoch."""
    cfg = job.cfg
    train_f, test_f = _probe_features(job, control)
    train_y, test_y = torch.from_numpy(job.data.train_y), torch.from_numpy(job.data.test_y)
    torch.manual_seed(cfg.seed)
    head = nn.Linear(train_f.shape[1], len(job.data.classes))
    opt = torch.optim.Adam(head.parameters(), lr=job.lr, weight_decay=cfg.weight_decay)
    steps = job.epochs * math.ceil(len(train_y) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(job.epochs):
        control.checkpoint()
        train_loss, train_acc = _probe_epoch(head, opt, sched, train_f, train_y, cfg.batch_size, g)
        with torch.no_grad():
            test_acc = float((head(test_f).argmax(1) == test_y).float().mean())
        on_epoch(epoch, train_loss, train_acc, test_acc)


def _probe_features(job: _Job, control: RunControl) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test features of the probed stage, standardised with the training split's statistics."""
    train_f = stage_features(job.backbone, job.data.train_x, job.layer, job.device, job.precision, control=control)
    test_f = stage_features(job.backbone, job.data.test_x, job.layer, job.device, job.precision, control=control)
    mean, std = train_f.mean(0, keepdim=True), train_f.std(0, keepdim=True).clamp_min(1e-6)
    return (train_f - mean) / std, (test_f - mean) / std


def _probe_epoch(head: nn.Linear, opt, sched, train_f: torch.Tensor, train_y: torch.Tensor, batch_size: int,
                 g: torch.Generator) -> tuple[float, float]:
    """One seeded pass over the features; returns the epoch's mean loss and accuracy."""
    perm = torch.randperm(len(train_y), generator=g)
    loss_sum = correct = 0.0
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]
        logits = head(train_f[idx])
        loss = F.cross_entropy(logits, train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += float((logits.argmax(1) == train_y[idx]).sum())
    return loss_sum / len(train_y), correct / len(train_y)


def _train_all(job: _Job, control: RunControl, on_epoch) -> None:
    """All layers, via :func:`sslstudio.evaluation.finetune_all.train_all_layers` (LP-FT on a grid head,
    a step budget of at least ``MIN_STEPS`` updates, warm-up then cosine, BatchNorm statistics frozen
    for small sets). ``cfg.epochs`` sets the budget (passes over the set); when the user gave none
    the function's own default budget is used. ``cfg.lr`` (when given) is the peak learning rate;
    ``cfg.batch_size`` is an upper bound (small sets use smaller batches). ``on_epoch`` is called at
    each evaluation point, which is an epoch for larger sets and an equal share of the steps for
    tiny ones."""
    from sslstudio.evaluation.finetune_all import MIN_STEPS, train_all_layers

    cfg, data = job.cfg, job.data
    train_all_layers(job.backbone, data.train_x, data.train_y, data.test_x, data.test_y, len(data.classes),
                     seed=cfg.seed, device=job.device, precision=job.precision, control=control,
                     on_epoch=on_epoch, epochs=cfg.epochs,
                     batch_size=_all_batch_size(len(data.train_y), cfg.batch_size),
                     lr=cfg.lr, weight_decay=cfg.weight_decay,
                     min_steps=1 if cfg.epochs is not None else MIN_STEPS)


def _all_batch_size(n: int, requested: int | None) -> int | None:
    """``requested`` as an upper bound on the default batch of ``n`` images (None: the default)."""
    from sslstudio.evaluation.finetune_all import resolve_settings

    default = resolve_settings(n)["batch_size"]
    return min(default, int(requested)) if requested else default
