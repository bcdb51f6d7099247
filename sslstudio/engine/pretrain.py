"""The pretraining loop: images -> task samples -> backbone + task head -> events and a run directory.

The loop emits events through a plain callback (see :mod:`sslstudio.engine.events`), checks a
:class:`~sslstudio.engine.events.RunControl` between steps (pause / cancel), writes a checkpoint
after every epoch (atomically) and can resume from the last one to the same final weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslstudio.engine.device import autocast, device_name, resolve_device, resolve_precision
from sslstudio.engine.distributed import DistContext, init_distributed, state_digest
from sslstudio.engine.events import (Cancelled, CheckpointEvent, EpochEvent, EventSink, FailedEvent,
                                     FinishedEvent, LogEvent, RunControl, StepEvent)
from sslstudio.engine.loader import VAL_EPOCH, DeviceBatches, epoch_batches
from sslstudio.engine.schedule import lr_multiplier, resolve_schedule
from sslstudio.engine import tblog, verdict
from sslstudio.errors import ConfigError, JobError, RunError, SSLStudioError
from sslstudio.data.arrays import IndexedImages
from sslstudio.runs import RunDir, library_versions
from sslstudio.settings import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_settings, param
from sslstudio.tasks.base import EpochPlan, PretextTask

#: Settings that must not change when a run is resumed.
RESUME_KEYS = ("task", "arch", "image_size", "seed", "epochs", "batch_size", "lr", "momentum",
               "nesterov", "weight_decay", "schedule", "warmup_epochs", "holdout", "task_options")


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs. ``None`` optimisation fields take the task's paper values."""

    task: str
    data: str
    out: str
    arch: str = param("resnet18", "Backbone architecture (see sslstudio.models.list_archs; resnet18_small suits "
                      "32-64 px images).", label="Backbone")
    epochs: int | None = param(None, "Training epochs (default: the paper's).", min=1, max=MAX_EPOCHS)
    batch_size: int | None = param(None, "Source images per batch (default: the paper's).", min=1,
                                   max=MAX_BATCH_SIZE)
    lr: float | None = param(None, "Peak learning rate (default: the paper's).", min=0.0, min_exclusive=True,
                             max=10.0, label="Learning rate", decimals=5, step=0.01)
    momentum: float | None = param(None, "SGD momentum (default: the paper's).", min=0.0, max=1.0,
                                   max_exclusive=True, form=False)
    nesterov: bool | None = param(None, "Nesterov momentum (default: the paper's).", form=False)
    weight_decay: float | None = param(None, "L2 weight decay (default: the paper's).", min=0.0, max=1.0, form=False)
    schedule: str = param("auto", "Learning-rate schedule; auto: the paper's step decay for 30+ epochs, else "
                          "warm-up + cosine.", choices=("auto", "step", "cosine", "constant"))
    warmup_epochs: float | None = param(None, "Linear warm-up epochs of the cosine schedule.", min=0.0,
                                        max=MAX_EPOCHS, form=False)
    image_size: int = param(64, "Side of the square network inputs (pixels).", min=MIN_IMAGE_SIZE,
                            max=MAX_IMAGE_SIZE, unit="px", step=16)
    device: str = param("auto", "auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps.",
                        free_on_resume=True)
    precision: str = param("auto", "auto: bf16 on a GPU that has it, else fp32.", choices=("auto", "bf16", "fp32"),
                           free_on_resume=True)
    seed: int = param(0, "Seed of the run.", min=0)
    workers: int = param(2, "Image-decoding threads (0: decode in the calling thread). Samples are made on the "
                         "training device in the training process, with no worker processes.", min=0, max=256,
                         free_on_resume=True, label="Loader workers")
    holdout: float = param(0.05, "Fraction of the images held out for validation.", min=0.0, max=0.5,
                           max_exclusive=True, label="Held-out fraction", decimals=2, step=0.01)
    task_options: dict = param(help="The task's settings (--option KEY=VALUE).", default_factory=dict, form=False)
    resume: bool = param(False, "Continue the run in --out from its last checkpoint.", form=False)
    log_every: int = param(10, "Write a step record to metrics.jsonl every N steps.", min=1, flag="log_every",
                           free_on_resume=True, form=False)
    compile: bool = param(False, "torch.compile the training step: the first steps wait for the compiler; it "
                          "pays off on GPUs, not on a small CPU (see docs/benchmarks.md).", free_on_resume=True)
    cache_dir: str | None = param(None, "Decode cache folder (None: decode without a cache).", free_on_resume=True,
                                  form=False)
    #: Labelled folder of the live kNN monitor (``None``: no monitor); see :mod:`sslstudio.evaluation.monitor`.
    monitor_labelled: str | None = param(None, "Labelled folder (DIR/<class>/... or DIR/train + DIR/test) of the "
                                         "live kNN monitor: every N epochs each stage's frozen features are scored "
                                         "by kNN on it, beside a randomly initialised backbone; it does not change "
                                         "the training. Empty: no monitor.", free_on_resume=True,
                                         label="Monitor (labelled folder)")
    #: Run the monitor every N epochs (and after the last epoch).
    monitor_every: int = param(1, "Run the kNN monitor every N epochs (and after the last).", min=1,
                               max=MAX_EPOCHS, free_on_resume=True, unit="epoch(s)")
    monitor_k: int = param(20, "Neighbours of the monitor's kNN vote.", min=1, max=10_000, flag="monitor_k",
                           free_on_resume=True, form=False)
    monitor_t: float = param(0.07, "Temperature of the monitor's kNN vote.", min=0.0, min_exclusive=True,
                             max=10.0, flag="monitor_t", free_on_resume=True, form=False)
    #: Cap of the monitor's images: at most this many reference images per class, this many test images.
    monitor_max_train_per_class: int | None = param(None, "Monitor: at most this many reference images per class.",
                                                    min=1, flag="monitor_max_train_per_class", free_on_resume=True,
                                                    form=False)
    monitor_max_test: int | None = param(None, "Monitor: at most this many test images.", min=1,
                                         flag="monitor_max_test", free_on_resume=True, form=False)

    def resolved(self, task) -> dict:
        """The config as a dict with the task's defaults filled in (what ``config.json`` records)."""
        optim = task.optim
        d = dataclasses.asdict(self)
        for key in ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay"):
            if d[key] is None:
                d[key] = getattr(optim, key)
        d["lr_decay"] = optim.lr_decay
        d["milestones"] = list(optim.milestones)
        decays = optim.lr_decay != 1.0 and bool(optim.milestones)
        d["schedule"], d["warmup_epochs"] = resolve_schedule(self.schedule, int(d["epochs"]), self.warmup_epochs, decays)
        d["task_options"] = dataclasses.asdict(task.config)
        d["data"] = str(Path(self.data).resolve())
        d["out"] = str(Path(self.out).resolve())
        if self.monitor_labelled:
            d["monitor_labelled"] = str(Path(self.monitor_labelled).resolve())
        return d


def pretrain(config: PretrainConfig, on_event: EventSink | None = None,
             control: RunControl | None = None) -> dict:
    """Run (or resume) a pretraining run and return its summary.

    Emits :class:`StepEvent`, :class:`EpochEvent`, :class:`CheckpointEvent`, :class:`LogEvent`
    and finally :class:`FinishedEvent` (also when cancelled) or :class:`FailedEvent` (then the
    error is re-raised; :class:`~sslstudio.errors.SSLStudioError` carries a sentence for the user).
    """
    emit = on_event or (lambda event: None)
    control = control or RunControl()
    try:
        check_settings(config)  # every declared range, before anything is read or written
        return _Pretrainer(config, emit, control).run()
    except SSLStudioError as exc:
        emit(FailedEvent(str(exc), type(exc).__name__, traceback.format_exc()))
        raise
    except OSError as exc:  # the disk filled up, the folder became read-only...
        from sslstudio.fileutil import os_reason

        error = JobError(f"the run in {config.out} stopped on a file it could not write or read: {os_reason(exc)}"
                         f"{f' ({exc.filename})' if exc.filename else ''}; free space or fix the folder, then "
                         "continue with --resume (the last complete checkpoint is kept).")
        emit(FailedEvent(str(error), type(exc).__name__, traceback.format_exc()))
        raise error from exc
    except torch.cuda.OutOfMemoryError as exc:
        emit(FailedEvent("the GPU ran out of memory: lower --batch-size or --image-size, or use a "
                         "smaller --arch.", type(exc).__name__, traceback.format_exc()))
        raise
    except Exception as exc:
        emit(FailedEvent(f"training failed: {exc}", type(exc).__name__, traceback.format_exc()))
        raise


@dataclass
class _Tally:
    """The sums of an epoch's steps on this process (summed over the processes after the epoch)."""

    loss_sum: float = 0.0
    metric_sum: float = 0.0
    metric_count: int = 0
    seen: int = 0

    def add(self, loss: float, m_sum: float, m_count: int, images: int) -> None:
        self.loss_sum += loss * images
        self.metric_sum += m_sum
        self.metric_count += m_count
        self.seen += images


@dataclass
class _RunState:
    """What the phases of one run share: made by :meth:`_Pretrainer._setup`, advanced by the epochs."""

    cfg: PretrainConfig  # the run's own settings when resuming
    run: RunDir
    task: PretextTask
    settings: dict  # what config.json records
    device: torch.device
    precision: str
    t_start: float
    monitor: Any = None  # the kNN monitor, or None
    images: Any = None  # the decoded folder (its files and skipped files go into the summary)
    counts: dict = field(default_factory=dict)  # skipped files by reason
    n_images: int = 0
    n_train: int = 0
    n_val: int = 0
    train_items: Any = None  # what task.prepare made of the training images
    val_items: Any = None  # the held-out items; None: nothing held out
    model: Any = None  # what is saved and evaluated
    net: Any = None  # what the training step calls: the model, data-parallel and/or compiled
    feature_dim: int = 0
    optimizer: Any = None
    scheduler: Any = None
    epochs: int = 0
    batch_size: int = 0
    steps_per_epoch: int = 0
    start_epoch: int = 0
    history: list = field(default_factory=list)  # the epoch records, also those before a resume
    best: dict | None = None
    tb: Any = None  # the TensorBoard scalar log (:class:`~sslstudio.engine.tblog.ScalarLog`)
    last_lr: float = 0.0  # the learning rate of the last update
    start_loss: float | None = None  # the mean loss of the run's first steps (the divergence rule's yardstick)
    first_losses: list = field(default_factory=list)
    recent_losses: deque = field(default_factory=lambda: deque(maxlen=verdict.START_STEPS))
    diverged: dict | None = None  # where the loss diverged (the run stopped there)
    chance: float | None = None  # the pretext metric's chance level (None: not a classification)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class _Diverged(Exception):
    """The loss became non-finite or rose far above its start, or (``cause="gradient"``) a gradient was not
    finite: the run stops before this step's update."""

    def __init__(self, epoch: int, step: int, loss: float, cause: str = "loss"):
        super().__init__(f"{cause} not finite or far above its start at epoch {epoch + 1}, step {step}")
        self.epoch, self.step, self.loss, self.cause = epoch, step, loss, cause


def _gradients_finite(net: torch.nn.Module) -> bool:
    """Whether every gradient is finite: one norm over all of them (a NaN or inf element makes it non-finite),
    read back once per step. Data-parallel processes hold the same averaged gradients, so they agree."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return True
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch 2.6 and newer: grouped by device and dtype
        total = torch.nn.utils.get_total_norm(grads)
    else:
        total = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]).sum()
    return bool(torch.isfinite(total))


class _Pretrainer:
    def __init__(self, config: PretrainConfig, emit: EventSink, control: RunControl):
        self.config = config
        self.emit = emit
        self.control = control
        self.dist = DistContext()
        self._epoch_time = 0.0

    # ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.dist, device_setting = init_distributed(self.config.device)
        if not self.dist.is_main:  # rank 0 reports for the whole run
            self.emit = lambda event: None
        try:
            if not self.dist.is_main:  # rank 0 holds the folder for the whole run
                result = self._run(device_setting)
            else:
                with RunDir(self.config.out).hold("pretrain"):
                    result = self._run(device_setting)
            # every process leaves its last collective before any tears the group down: a gloo process whose
            # peer destroys the group while it is still sending aborts at exit ("terminate called ...")
            self.dist.barrier()
            return result
        finally:
            self.dist.close()

    def _run(self, device_setting: str) -> dict:
        """A run as its phases: set-up, the epochs (steps, validation, checkpoint), finish."""
        s = self._setup(device_setting)
        try:
            cancelled = self._fit(s)
            return self._finish(s, cancelled)
        finally:
            s.tb.close()  # finished, cancelled, diverged or failed: the event file is flushed and closed

    # -- set-up ----------------------------------------------------------------------------------
    def _setup(self, device_setting: str) -> _RunState:
        """Config, task, device, monitor, data, model, optimiser, restored state and ``config.json``,
        in this order: the seeded steps among them make the order part of the result."""
        from sslstudio.tasks import create_task

        cfg, run, previous, resume_state = self._open()
        task = create_task(cfg.task, cfg.task_options, cfg.image_size)
        settings = cfg.resolved(task)
        self._check(cfg, run, previous, settings)
        device = resolve_device(device_setting)
        precision = resolve_precision(cfg.precision, device)
        s = _RunState(cfg, run, task, settings, device, precision, t_start=time.perf_counter())
        s.monitor = self._make_monitor(cfg, device, precision)  # a bad folder fails here, before any training
        self._load_data(s)
        self._build_model(s)
        if callable(getattr(task, "plan_run", None)):  # the run's length and batch (BYOL's EMA schedule, chance)
            task.plan_run(s.epochs, s.steps_per_epoch, s.batch_size // max(self.dist.world_size, 1))
        s.chance = verdict.chance_level(task, s.model)
        if previous is not None:
            self._restore(s, resume_state)
        elif self.dist.is_main:
            run.create()
            if run.metrics_path.exists():
                run.metrics_path.unlink()
        self._wrap(s)
        self._write_config(s)
        main = self.dist.is_main  # the TensorBoard copy of metrics.jsonl (its kept records when resuming)
        s.tb = tblog.pretrain_log(run.path if main else None, self.emit, task.metric_name, s.chance,
                                  run.read_metrics() if main else ())
        return s

    def _open(self) -> tuple[PretrainConfig, RunDir, dict | None, dict | None]:
        """The config to run (the run's own when resuming), the run folder, and when resuming the run's
        ``config.json`` and last checkpoint (a damaged one stops here, before any work)."""
        cfg = self.config
        run = RunDir(cfg.out)
        previous = resume_state = None
        if cfg.resume:
            cfg = _merge_for_resume(cfg)
            previous = run.read_config()
            resume_state = run.load_checkpoint("last")
        elif run.last_checkpoint.is_file() or run.summary_path.is_file():  # a run stopped before its first
            # checkpoint left only config.json: there is nothing to resume, so it may start again
            raise ConfigError(f"{run.path} already holds a run; resume it with --resume or choose another --out.")
        return cfg, run, previous, resume_state

    def _check(self, cfg: PretrainConfig, run: RunDir, previous: dict | None, settings: dict) -> None:
        """Refuse a resume with other settings, and settings the run cannot use (a resumed run's
        settings come from its config.json, which :func:`check_settings` has not seen)."""
        if previous is not None:
            changed = [k for k in RESUME_KEYS if _norm(previous.get(k)) != _norm(settings.get(k))]
            if changed:
                raise ConfigError(f"cannot resume {run.path} with different settings ({', '.join(changed)}); "
                                  "resume with the run's own settings or start a new run.")
        if int(settings["batch_size"]) < 1 or int(settings["epochs"]) < 1:
            raise ConfigError("epochs and batch size must be at least 1.")
        if not 0.0 <= cfg.holdout < 0.5:
            raise ConfigError(f"the held-out fraction must be in [0, 0.5); got {cfg.holdout}.")
        dist = self.dist
        if dist.enabled and int(settings["batch_size"]) % dist.world_size:
            raise ConfigError(f"the batch size ({settings['batch_size']}) must be a multiple of the number of "
                              f"processes ({dist.world_size}): each process trains on an equal share of every batch.")

    def _load_data(self, s: _RunState) -> None:
        """Decode the folder (rank 0 fills the decode cache first), split off the held-out images
        (seeded) and make the task's training and validation sets."""
        from sslstudio.data import decode_folder

        cfg, task, dist = s.cfg, s.task, self.dist
        self.emit(LogEvent(f"reading images in {cfg.data}"))
        if dist.enabled and cfg.cache_dir and not dist.is_main:
            dist.barrier()  # rank 0 fills the decode cache first; the others then map it
        images = decode_folder(cfg.data, cfg.image_size, cache_dir=cfg.cache_dir, min_source_size=task.min_image_size,
                               small_policy=task.small_image_policy, workers=cfg.workers,
                               progress=_DecodeProgress(self.emit))
        if dist.enabled and cfg.cache_dir and dist.is_main:
            dist.barrier()
        s.images, s.counts = images, self._report_decoded(images, cfg.image_size)
        arrays = images.arrays
        n = len(arrays)
        order = np.random.default_rng(cfg.seed).permutation(n)
        n_val = int(math.floor(cfg.holdout * n)) if n >= 20 else 0
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        if isinstance(arrays, np.memmap):  # read rows from the map when asked, never the whole set at once
            train_images, val_images = IndexedImages(arrays, train_idx), IndexedImages(arrays, val_idx)
        else:
            train_images, val_images = arrays[train_idx], arrays[val_idx]
        train_items = task.prepare(train_images, cfg.seed)
        val_items = task.holdout_items(train_items, val_images)
        s.train_items = train_items
        s.val_items = val_items if val_items is not None and len(val_items) else None
        s.n_images, s.n_train, s.n_val = n, len(train_idx), n_val
        self.emit(LogEvent(f"{n} images: {len(train_idx)} for training, {n_val} held out; "
                           f"device {device_name(s.device)}, precision {s.precision}"))

    def _report_decoded(self, images, image_size: int) -> dict:
        """Log where the decoded images are and what was skipped; return the skipped files by reason."""
        if images.from_cache:
            self.emit(LogEvent(f"{len(images)} images at {image_size} px mapped from the decode cache "
                               f"{images.cache_path} (nothing decoded)"))
        elif images.storage != "memory":
            self.emit(LogEvent(f"{len(images)} images decoded to {images.storage} "
                               f"{images.cache_path or ''}".rstrip()))
        counts = images.skipped_counts()
        if counts:
            self.emit(LogEvent(f"skipped {sum(counts.values())} file(s): "
                               + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())), "warning"))
        return counts

    def _build_model(self, s: _RunState) -> None:
        """The seeded backbone and task head, the SGD optimiser and the learning-rate schedule."""
        from sslstudio.models import build_backbone

        cfg, settings = s.cfg, s.settings
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg.arch)
        model = s.task.build_head(backbone, backbone.feature_dim).to(s.device)  # what is saved and evaluated
        if s.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        s.model, s.feature_dim = model, backbone.feature_dim
        s.epochs, s.batch_size = int(settings["epochs"]), int(settings["batch_size"])
        s.steps_per_epoch = len(epoch_batches(len(s.train_items), s.batch_size, cfg.seed, 0))
        s.optimizer = torch.optim.SGD(s.task.param_groups(model), lr=float(settings["lr"]),  # groups: the task's
                                      momentum=float(settings["momentum"]),
                                      nesterov=bool(settings["nesterov"]) and float(settings["momentum"]) > 0,
                                      weight_decay=float(settings["weight_decay"]))
        factor = lr_multiplier(settings["schedule"], s.total_steps,
                               int(round(settings["warmup_epochs"] * s.steps_per_epoch)),
                               float(settings["lr_decay"]), tuple(settings["milestones"]))
        s.scheduler = torch.optim.lr_scheduler.LambdaLR(s.optimizer, factor)

    def _restore(self, s: _RunState, state: dict) -> None:
        """Continue from the last checkpoint: weights, optimiser, schedule, history, best and RNG states."""
        saved = {k: tuple(v.shape) for k, v in state["model"].items()}
        now = {k: tuple(v.shape) for k, v in s.model.state_dict().items()}
        differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if differ:  # e.g. a colorization run saved with 261 ab bins, where the task now has 313
            raise RunError(f"{s.run.path} was saved with a model whose layers differ from this version's "
                           f"{s.task.name} model ({differ[0]}: saved {saved.get(differ[0])}, now "
                           f"{now.get(differ[0])}): start a new run instead.")
        s.model.load_state_dict(state["model"])
        groups = len(state["optimizer"]["param_groups"])  # the task's param_groups() when it was saved
        if groups != len(s.optimizer.param_groups):
            raise RunError(f"{s.run.path} was saved with {groups} optimiser parameter group(s) where this version "
                           f"of {s.task.name} uses {len(s.optimizer.param_groups)}: start a new run instead.")
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
        s.start_epoch, s.history, s.best = int(state["epoch"]), list(state.get("history", [])), state.get("best")
        s.start_loss = state.get("start_loss")
        _set_rng_state(state["rng"])
        if self.dist.is_main:
            s.run.truncate_metrics(s.start_epoch)
        self.emit(LogEvent(f"resuming {s.run.path} after epoch {s.start_epoch} of {s.epochs}"))

    def _wrap(self, s: _RunState) -> None:
        """What the training step calls: the model, data-parallel over the processes and/or compiled."""
        dist = self.dist
        s.net = s.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            s.net = DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
            self.emit(LogEvent(f"data-parallel over {dist.world_size} processes ({dist.backend}); "
                               f"each trains on {s.batch_size // dist.world_size} of every {s.batch_size} images"))
        if s.cfg.compile:
            s.net = _compile(s.net)

    def _write_config(self, s: _RunState) -> None:
        """Record the resolved settings (and what the run found) in config.json, with the task's artifacts."""
        dist, device, task = self.dist, s.device, s.task
        s.settings.update({"device": str(device), "device_name": device_name(device), "precision": s.precision,
                           "world_size": dist.world_size, "distributed_backend": dist.backend,
                           "images": s.n_images, "train_images": s.n_train, "held_out_images": s.n_val,
                           "steps_per_epoch": s.steps_per_epoch, "feature_dim": s.feature_dim,
                           "metric": task.metric_name, "samples_per_image": task.samples_per_image,
                           "task_info": task.run_info(), "versions": library_versions()})
        if dist.is_main:
            s.run.write_config(s.settings)
            task.save_artifacts(s.run.path)

    # -- the epochs ------------------------------------------------------------------------------
    def _fit(self, s: _RunState) -> bool:
        """The epochs from ``s.start_epoch`` to the end; ``True`` when the run was stopped (cancelled)."""
        s.last_lr = s.optimizer.param_groups[0]["lr"]
        try:
            for epoch in range(s.start_epoch, s.epochs):
                plan, tally, records, epoch_time = self._train_epoch(s, epoch)
                is_best = self._end_epoch(s, epoch, plan, tally, records, epoch_time)
                self._checkpoint(s, epoch, is_best)
        except _Diverged as exc:
            self._stop_diverged(s, exc)
        except Cancelled:
            if s.run.last_checkpoint.is_file():  # neutral words: the CLI and the window each say how to resume
                self.emit(LogEvent(f"stopped; the checkpoint after epoch {len(s.history)} is kept: the run can be "
                                   "resumed from it", "warning"))
            else:
                self.emit(LogEvent("stopped before the first epoch ended: there is no checkpoint to resume from",
                                   "warning"))
            return True
        return False

    def _stop_diverged(self, s: _RunState, exc: _Diverged) -> None:
        """Record where the loss diverged and say which checkpoint is kept (the step's update was not made)."""
        s.diverged = {"epoch": exc.epoch + 1, "step": exc.step, "loss": exc.loss, "start_loss": s.start_loss,
                      "cause": exc.cause}
        figures = f"{exc.loss:.4g}" + (f" against {s.start_loss:.4g} at the start" if s.start_loss is not None else "")
        if exc.cause == "gradient":
            figures = f"the loss was {exc.loss:.4g}"
        kept = (f"the checkpoint after epoch {len(s.history)} is kept" if s.run.last_checkpoint.is_file()
                else "there is no checkpoint (it diverged in the first epoch)")
        what = verdict.what_diverged(s.diverged)
        self.emit(LogEvent(f"{what} at epoch {exc.epoch + 1}, step {exc.step} ({figures}): "
                           f"the run stopped before that update; {kept}", "error"))

    def _watch_loss(self, s: _RunState, loss: float) -> bool:
        """Whether the run diverges at this step: a non-finite loss, or the mean of the last
        :data:`~sslstudio.engine.verdict.START_STEPS` losses above
        :data:`~sslstudio.engine.verdict.DIVERGE_FACTOR` times the run's starting loss (every process agrees)."""
        if math.isfinite(loss):
            if s.start_loss is None:
                s.first_losses.append(loss)
                if len(s.first_losses) == verdict.START_STEPS:
                    s.start_loss = float(np.mean(s.first_losses))
            s.recent_losses.append(loss)
        full = len(s.recent_losses) == s.recent_losses.maxlen
        bad = not math.isfinite(loss) or (full and verdict.diverged(float(np.mean(s.recent_losses)), s.start_loss))
        if self.dist.enabled:
            bad = self.dist.sum([float(bad)])[0] > 0
        return bool(bad)

    def _plan_epoch(self, s: _RunState, epoch: int) -> EpochPlan:
        """The task's plan of the epoch (its order, its info), rank 0's for every process."""
        task, dist = s.task, self.dist
        plan = task.begin_epoch(s.model, s.train_items, epoch, s.device, s.optimizer, s.cfg.seed)
        if dist.enabled and type(task).begin_epoch is not PretextTask.begin_epoch:
            dist.broadcast_module(s.model)  # every rank continues from rank 0's state
            order, info, shared = dist.broadcast_object((plan.order, plan.info, task.shared_state()))
            task.load_shared_state(shared)
            plan = EpochPlan(order=order, info=info)
        return plan

    def _train_epoch(self, s: _RunState, epoch: int) -> tuple[EpochPlan, _Tally, list, float]:
        """An epoch's steps; returns its plan, its sums, its step records and its training time."""
        plan = self._plan_epoch(s, epoch)
        s.net.train()
        batches = epoch_batches(len(s.train_items), s.batch_size, s.cfg.seed, epoch, order=plan.order)
        loader = DeviceBatches(s.train_items, s.task, s.cfg.seed, self.dist.shard(batches), s.device, self.dist.rank)
        tally = _Tally()
        epoch_start = time.perf_counter()
        records = []
        for step, (inputs, target) in enumerate(loader, start=1):
            loss, m_sum, m_count, images = self._step(s, inputs, target, epoch, step)
            tally.add(loss, m_sum, m_count, images)
            record = self._report_step(s, epoch, step, len(batches), loss, m_sum / m_count if m_count else None,
                                       tally.seen, epoch_start)
            if step % s.cfg.log_every == 0 or step == len(batches):
                records.append(record)
        return plan, tally, records, time.perf_counter() - epoch_start

    def _step(self, s: _RunState, inputs, target, epoch: int, step: int) -> tuple[float, float, int, int]:
        """One update; returns its loss, its metric's sum and count, and its number of images."""
        self.control.checkpoint()
        inputs = inputs.to(s.device, non_blocking=True)
        target = target.to(s.device, non_blocking=True)
        with autocast(s.device, s.precision):
            output = s.net(inputs)
            loss = s.task.loss(output, target)
        value = float(loss.detach())
        if self._watch_loss(s, value):
            raise _Diverged(epoch, step, value)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not _gradients_finite(s.net):  # a NaN gradient would make every weight it reaches NaN
            s.optimizer.zero_grad(set_to_none=True)
            raise _Diverged(epoch, step, value, cause="gradient")
        s.optimizer.step()
        s.last_lr = s.optimizer.param_groups[0]["lr"]
        s.scheduler.step()
        m_sum, m_count = s.task.metric(output.detach(), target)
        return value, m_sum, m_count, inputs.shape[0]

    def _report_step(self, s: _RunState, epoch: int, step: int, steps: int, loss: float, metric: float | None,
                     seen: int, epoch_start: float) -> dict:
        """Emit the step's :class:`StepEvent`; return its metrics.jsonl record."""
        elapsed_epoch = time.perf_counter() - epoch_start
        ips = seen * self.dist.world_size / max(elapsed_epoch, 1e-9)  # the whole run's rate
        global_step = epoch * s.steps_per_epoch + step
        eta = (s.total_steps - global_step) * elapsed_epoch / step
        name = s.task.metric_name
        self.emit(StepEvent(epoch=epoch, epochs=s.epochs, step=step, steps_per_epoch=steps, global_step=global_step,
                            total_steps=s.total_steps, loss=loss, metric=metric, metric_name=name, lr=s.last_lr,
                            images_per_s=ips, samples_per_s=ips * s.task.samples_per_image,
                            elapsed_s=time.perf_counter() - s.t_start, eta_s=eta))
        return {"type": "step", "epoch": epoch, "step": step, "global_step": global_step, "loss": loss,
                name: metric, "lr": s.last_lr, "images_per_s": ips}

    def _end_epoch(self, s: _RunState, epoch: int, plan: EpochPlan, tally: _Tally, records: list,
                   epoch_time: float) -> bool:
        """After an epoch's steps: the processes' sums, validation, the monitor, the epoch record
        (history, metrics.jsonl, :class:`EpochEvent`) and the best score; ``True`` when this epoch is the best."""
        dist, name, spi = self.dist, s.task.metric_name, s.task.samples_per_image
        loss_sum, metric_sum, metric_count, seen = dist.sum([tally.loss_sum, tally.metric_sum, tally.metric_count,
                                                             tally.seen])
        dist.average_buffers(s.model)
        val_loss, val_metric = self._validate(s) if s.val_items is not None else (None, None)
        self._epoch_time = epoch_time
        monitored = {**self._task_extra(s), **self._monitor(s.monitor, s.model, epoch, s.epochs)}
        train_loss = loss_sum / max(seen, 1)
        train_metric = metric_sum / metric_count if metric_count else None
        ips = seen / max(epoch_time, 1e-9)
        entry = {"type": "epoch", "epoch": epoch, "train_loss": train_loss, f"train_{name}": train_metric,
                 "val_loss": val_loss, f"val_{name}": val_metric, "lr": s.last_lr, "images_per_s": ips,
                 "samples_per_s": ips * spi, "epoch_time_s": epoch_time, **plan.info, **monitored}
        s.history.append(entry)
        records.append(entry)
        if dist.is_main:
            s.run.append_metrics(records)
            s.tb.add(records)  # the same records as TensorBoard scalars
        self.emit(EpochEvent(epoch=epoch, epochs=s.epochs, train_loss=train_loss, train_metric=train_metric,
                             val_loss=val_loss, val_metric=val_metric, metric_name=name, lr=s.last_lr,
                             images_per_s=ips, samples_per_s=ips * spi, elapsed_s=time.perf_counter() - s.t_start,
                             eta_s=(s.epochs - epoch - 1) * epoch_time, extra={**plan.info, **monitored},
                             chance=s.chance))
        score = val_metric if val_metric is not None else train_metric
        is_best = score is not None and (s.best is None or score > s.best["score"])
        if is_best:
            s.best = {"score": score, "epoch": epoch}
        return is_best

    def _task_extra(self, s: _RunState) -> dict:
        """Figures the task adds to the epoch's record (its ``epoch_extra(model)``, e.g. the two-view tasks'
        collapse guard); the sentences under its ``warnings`` key become warning log lines instead."""
        hook = getattr(s.task, "epoch_extra", None)
        figures = dict(hook(s.model)) if callable(hook) else {}
        for sentence in figures.pop("warnings", ()):
            self.emit(LogEvent(sentence, "warning"))
        return figures

    def _checkpoint(self, s: _RunState, epoch: int, is_best: bool) -> None:
        """Save the state after ``epoch`` (atomically; also as the best checkpoint when ``is_best``)."""
        if not self.dist.is_main:
            return
        path = s.run.save_checkpoint({"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                                      "scheduler": s.scheduler.state_dict(), "epoch": epoch + 1,
                                      "history": s.history, "best": s.best, "rng": _get_rng_state(),
                                      "config": _jsonable(s.settings),
                                      "start_loss": s.start_loss}, best=is_best)
        self.emit(CheckpointEvent(epoch=epoch, path=str(path), best=is_best))

    # -- finish ----------------------------------------------------------------------------------
    def _finish(self, s: _RunState, cancelled: bool) -> dict:
        """The summary (with the monitor's and the processes' agreement), summary.json and FinishedEvent."""
        dist = self.dist
        summary = self._summary(s, cancelled)
        if s.monitor is not None and dist.is_main:
            summary["monitor"] = _monitor_summary(s.monitor, s.history)
        if dist.enabled:
            digests = dist.gather_object(state_digest(s.model))
            agree = len(set(digests)) == 1
            summary["distributed"] = {"world_size": dist.world_size, "backend": dist.backend,
                                      "weight_digests": digests, "ranks_agree": agree}
            if not agree:
                self.emit(LogEvent("the processes ended with different weights: "
                                   + ", ".join(d[:12] for d in digests), "error"))
        if not dist.is_main:
            return summary
        s.run.write_summary(summary)
        self.emit(FinishedEvent(summary=summary, cancelled=cancelled))
        return summary

    def _summary(self, s: _RunState, cancelled: bool) -> dict:
        """What summary.json records: status, final and best scores, the images, the rates, the device."""
        total_time = time.perf_counter() - s.t_start
        history, name, images = s.history, s.task.metric_name, s.images
        final = history[-1] if history else {}
        train_rates = [h["images_per_s"] for h in history]  # every epoch, also those before a resume
        spi = s.task.samples_per_image
        final_metric, where = final.get(f"val_{name}"), "held-out"
        if final_metric is None:  # nothing held out: the training figure is all there is
            final_metric, where = final.get(f"train_{name}"), "training"
        status = verdict.status_of(cancelled, s.diverged and s.diverged["epoch"], final_metric, s.chance)
        return {
            "status": status,
            "advice": verdict.advice(status, metric=final_metric, chance=s.chance, lr=s.settings.get("lr"),
                                     epochs=s.epochs, paper_epochs=int(s.task.optim.epochs), where=where,
                                     diverged_at=s.diverged, bf16=s.precision == "bf16"),
            "chance": s.chance,
            "diverged": s.diverged,
            "lr": s.settings.get("lr"), "paper_epochs": int(s.task.optim.epochs),
            "task": s.cfg.task, "arch": s.cfg.arch, "epochs": s.epochs, "epochs_completed": len(history),
            "metric": name,
            "final_train_loss": final.get("train_loss"),
            f"final_train_{name}": final.get(f"train_{name}"),
            "final_val_loss": final.get("val_loss"),
            f"final_val_{name}": final.get(f"val_{name}"),
            "best": {**s.best, "epoch_number": int(s.best["epoch"]) + 1} if s.best else s.best,
            "images_found": len(images.paths) + len(images.skipped),
            "images_used": s.n_images,
            "skipped": len(images.skipped),
            "skipped_by_reason": s.counts,
            "skipped_files": [{"path": str(p), "reason": r} for p, r in images.skipped],
            "time_s": total_time,
            "training_time_s": float(sum(h["epoch_time_s"] for h in history)),
            "images_per_s": float(np.mean(train_rates)) if train_rates else None,
            "samples_per_s": float(np.mean(train_rates)) * spi if train_rates else None,
            "device": str(s.device), "device_name": device_name(s.device), "precision": s.precision,
            "task_info": s.task.run_info(),
        }

    def _make_monitor(self, cfg: PretrainConfig, device, precision: str):
        """The kNN monitor of ``cfg.monitor_labelled`` (``None`` when not asked for).

        Every process reads the folder, so a bad folder stops all of them with the same sentence;
        only rank 0 computes the random-init reference and evaluates after the epochs.
        """
        if not cfg.monitor_labelled:
            return None
        from sslstudio.evaluation.monitor import KnnMonitor

        if int(cfg.monitor_every) < 1:
            raise ConfigError(f"the kNN monitor runs every N epochs with N >= 1; got {cfg.monitor_every}.")
        self.emit(LogEvent(f"reading the kNN monitor folder {cfg.monitor_labelled}"))
        monitor = KnnMonitor(cfg.monitor_labelled, cfg.arch, cfg.image_size, device, precision, cfg.seed,
                             k=cfg.monitor_k, t=cfg.monitor_t, max_train_per_class=cfg.monitor_max_train_per_class,
                             max_test=cfg.monitor_max_test)
        monitor.every = int(cfg.monitor_every)
        if self.dist.is_main:
            ref = monitor.random_reference()
            from sslstudio.evaluation.monitor import format_monitor

            self.emit(LogEvent(f"{monitor.describe()}; random init: "
                               f"{format_monitor(ref.accuracy)[4:]} ({ref.seconds:.1f} s per evaluation)"))
        return monitor

    def _monitor(self, monitor, model, epoch: int, epochs: int) -> dict:
        """The monitor's fields of an epoch record (empty when it does not run this epoch)."""
        if monitor is None:
            return {}
        every = monitor.every
        if not self.dist.is_main or ((epoch + 1) % every and epoch + 1 != epochs):
            return {}
        result = monitor.measure(model.backbone)
        epoch_time = self._epoch_time
        if epoch_time and result.seconds > 0.1 * epoch_time and not getattr(monitor, "warned", False):
            monitor.warned = True
            self.emit(LogEvent(f"the kNN monitor took {result.seconds:.1f} s, {result.seconds / epoch_time:.0%} of "
                               f"the epoch's {epoch_time:.1f} s of training; run it less often (monitor every N "
                               "epochs) or on a smaller labelled folder.", "warning"))
        return {"monitor_knn": result.accuracy, "monitor_knn_random": monitor.random_reference().accuracy,
                "monitor_s": result.seconds, "monitor_chance": 1.0 / len(monitor.classes)}

    def _validate(self, s: _RunState) -> tuple[float, float | None]:
        """Loss and metric on the held-out images (every process its share, summed)."""
        model, task, device = s.model, s.task, s.device
        model.eval()
        batches = epoch_batches(len(s.val_items), s.batch_size, s.cfg.seed, VAL_EPOCH,
                                shuffle=False, drop_last=False)
        batches = [keys for keys in self.dist.shard(batches) if keys]
        loss_sum = metric_sum = 0.0
        count = metric_count = 0
        with torch.no_grad():
            for inputs, target in DeviceBatches(s.val_items, task, s.cfg.seed, batches, device, self.dist.rank):
                self.control.checkpoint()
                inputs, target = inputs.to(device), target.to(device)
                with autocast(device, s.precision):
                    output = model(inputs)
                    loss = task.loss(output, target)
                loss_sum += float(loss) * inputs.shape[0]
                count += inputs.shape[0]
                m, c = task.metric(output, target)
                metric_sum += m
                metric_count += c
        model.train()
        loss_sum, count, metric_sum, metric_count = self.dist.sum([loss_sum, count, metric_sum, metric_count])
        return loss_sum / max(count, 1), (metric_sum / metric_count if metric_count else None)

# ----------------------------------------------------------------------------------------------
#: Settings that may differ when a run is resumed (declared ``free_on_resume`` beside each setting: they do
#: not change what the run computes, or only how fast); every other one is the run's own, refused if changed.
FREE_ON_RESUME = tuple(f.name for f in dataclasses.fields(PretrainConfig) if f.metadata.get("free_on_resume"))


def resume_config(out: str | os.PathLike, **overrides: Any) -> PretrainConfig:
    """The config that continues the run in ``out``: every setting from its ``config.json``.

    This is the one place that decides a resume (the CLI, the window and :func:`pretrain` call it).
    ``overrides`` are the settings the user gave: ``None`` means "not given"; those in
    :data:`FREE_ON_RESUME` (device, workers, the monitor...) replace the run's; any other setting that
    differs from the run's would change what the run means (task, arch, seed, holdout, image size,
    the optimisation...) and is refused with one sentence.

    Raises:
        RunError: The folder is not a run, or its ``config.json`` is damaged.
        ConfigError: The run has no checkpoint, or an override would change the run.
    """
    run = RunDir(out)
    previous = run.read_config()
    if not run.last_checkpoint.is_file():
        raise ConfigError(f"cannot resume {run.path}: it has no checkpoint yet (no epoch finished); "
                          "start it again without --resume.")
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for a pretraining run.")
    values = {k: previous[k] for k in names if k in previous}
    changed = []
    for key, value in overrides.items():
        if value is None or value == "" or key in ("out", "resume"):
            continue
        if key in FREE_ON_RESUME:
            values[key] = value
            continue
        if key == "schedule" and value == "auto":
            continue
        theirs = previous.get(key)
        if key == "data":
            value, theirs = str(Path(value).resolve()), str(Path(theirs).resolve()) if theirs else theirs
        if key == "task_options":
            if not value:
                continue
            value = {**(theirs or {}), **value}
        if _norm(value) != _norm(theirs):
            changed.append(f"{_flag(key)} {_show(value)} (the run's: {_show(theirs)})")
    if changed:
        raise ConfigError(f"cannot resume {run.path} with {'; '.join(changed)}: "
                          f"{'this setting defines' if len(changed) == 1 else 'these settings define'} the run "
                          "(resume takes every setting from the run's config.json); leave "
                          f"{'it' if len(changed) == 1 else 'them'} out to resume, or start a new run in another "
                          "folder.")
    values.update(out=str(out), resume=True)
    return PretrainConfig(**values)


def _merge_for_resume(cfg: PretrainConfig) -> PretrainConfig:
    """A config built in Python with ``resume=True``: settings left at their defaults are not "given"
    and come from the run; the others go through :func:`resume_config` like typed flags."""
    given = {}
    for f in dataclasses.fields(PretrainConfig):
        value = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            given[f.name] = value  # task and data: compared with the run's (None: not given)
        elif value != default:
            given[f.name] = value
    given.pop("out", None)
    return resume_config(cfg.out, **given)


def _monitor_summary(monitor, history: list) -> dict:
    """The kNN monitor's part of summary.json."""
    monitored = [h for h in history if "monitor_knn" in h]
    return {"labelled": monitor.labelled, "every": monitor.every, "k": monitor.k, "t": monitor.t,
            "stages": monitor.stages, "reference_images": len(monitor.train_y), "test_images": len(monitor.test_y),
            "random_knn": monitor.random_reference().accuracy,
            "final_knn": monitored[-1]["monitor_knn"] if monitored else None}

def _flag(key: str) -> str:
    return "--option" if key == "task_options" else "--" + key.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


class _DecodeProgress:
    """Log lines while images are decoded: every 10% with the rate and the time left."""

    def __init__(self, emit: EventSink):
        self.emit, self.t0, self.next = emit, time.perf_counter(), 0.1

    def __call__(self, done: int, total: int) -> None:
        if total < 1000 or done < self.next * total or done == total:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / max(elapsed, 1e-9)
        self.emit(LogEvent(f"decoding images: {done:,}/{total:,} ({done / total:.0%}), {rate:,.0f} images/s, "
                           f"about {(total - done) / max(rate, 1e-9):.0f} s left"))
        while self.next * total <= done:
            self.next += 0.1


def _compile(net: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` the training step's module, with a sentence when this machine cannot."""
    if not hasattr(torch, "compile"):
        raise ConfigError("--compile needs PyTorch 2 or newer.")
    return torch.compile(net)


def _norm(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_norm(v) for v in value]
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _jsonable(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d, default=str))


def _get_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
