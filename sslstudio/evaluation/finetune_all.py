"""All-layer fine-tuning that still learns when only a handful of labels are available.

The protocol (:func:`train_all_layers`) is *LP-FT* with a multi-stage grid head:

1. **BatchNorm.** With a small labelled set (fewer than :data:`BN_FREEZE_BELOW` images) the
   BatchNorm running statistics are re-estimated once on the un-augmented training images and
   then frozen (BatchNorm layers stay in eval mode; their affine weights still train). Batch
   statistics of 16-32 augmented images of 10-20 classes are noisy, differ between training and
   test and, from a random initialisation, the stored statistics (mean 0, variance 1) do not
   describe the network at all. Larger sets train BatchNorm normally.
2. **Head.** The classifier reads every stage of the backbone, each feature map average-pooled to
   a small grid (the same grid as the frozen probes of :mod:`sslstudio.evaluation.features`) and
   standardised with the training images' mean and standard deviation. With few labels the best
   frozen features of a backbone are often shallow (a random ResNet's ``layer1`` grid beats its
   pooled ``layer4`` vector by 10 points), so a head on the global mean of the last stage alone
   starts far behind the probes it is compared with.
3. **Linear probe first (LP).** The head is fitted on the frozen features by multinomial logistic
   regression, its inverse regularisation ``C`` picked on a held-out quarter of the *training*
   images (never the test set), then refitted on all of them.
4. **Then fine-tune everything (FT)** from that head: SGD with Nesterov momentum, a learning rate
   proportional to the batch (``lr`` is per :data:`LR_REFERENCE_BATCH` images), linear warm-up
   over :data:`WARMUP_FRACTION` of the steps, then cosine decay to zero; random crops and flips.
   Starting from a fitted head means the first gradients do not come from a random classifier
   and so distort the pretrained features less (Kumar et al., 2022, "Fine-Tuning can Distort
   Pretrained Features and Underperform Out-of-Distribution", ICLR).
5. **Budget in steps.** ``steps`` defaults to ``max(MIN_STEPS, DEFAULT_EPOCHS * steps_per_epoch)``:
   a set of 100 images still gets :data:`MIN_STEPS` updates instead of 1 per epoch. Batches are
   drawn from a stream of seeded permutations, so every step has a full batch.

Test accuracy is measured at 10-30 evaluation points (every epoch, or an equal share of the steps
when epochs are shorter than that); the reported ``test_accuracy`` is the last point's, never the
best. Runs are deterministic per ``seed`` on the CPU.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.engine.device import autocast
from sslstudio.engine.events import RunControl
from sslstudio.evaluation.features import forward_stages, probe_grid
from sslstudio.tasks.base import normalise_batch

__all__ = ["train_all_layers", "GridHead", "resolve_settings", "lr_at", "MIN_STEPS", "BN_FREEZE_BELOW"]

#: Fewest optimisation steps of a run, however small the labelled set.
MIN_STEPS = 100
#: Steps of a larger set: this many passes over it (if more than :data:`MIN_STEPS`).
DEFAULT_EPOCHS = 15
#: Largest default batch; smaller sets get about an eighth of the set (at least 16).
MAX_BATCH = 64
MIN_BATCH = 16
#: Peak learning rate per this many images in a batch (scaled linearly with the batch).
LR_REFERENCE_BATCH = 256
DEFAULT_LR = 0.1
#: Backbone learning rate as a share of the head's.
BACKBONE_LR_SCALE = 1.0
WARMUP_FRACTION = 0.1
#: Below this many training images BatchNorm statistics are re-estimated once and frozen.
BN_FREEZE_BELOW = 1000
#: Inverse L2 strengths tried for the linear-probe head (picked on a split of the training set).
LP_C = (0.01, 0.1, 1.0)
MIN_EVAL_POINTS = 10
MAX_EVAL_POINTS = 30
EVAL_BATCH = 256
#: Largest gradient norm of a step (a safety net for backbones without working normalisation).
GRAD_CLIP = 5.0
#: A feature's standard deviation is floored at this share of its stage's median, so that
#: near-constant features do not magnify the gradients reaching the backbone.
STD_FLOOR = 0.1


# ----------------------------------------------------------------------------------------------
def _stage_maps(backbone: nn.Module, x: torch.Tensor, stages: list[str]) -> list[torch.Tensor]:
    """Feature maps of ``stages`` (in the backbone's order) from one forward pass."""
    return list(forward_stages(backbone, x, stages).values())


class GridHead(nn.Module):
    """Linear classifier on the concatenated, standardised pooled grids of several stages.

    Args:
        grids: Pooled grid side per stage.
        dims: Feature size per stage (channels * grid * grid).
        num_classes: Number of classes.
    """

    def __init__(self, stages: list[str], grids: list[int], dims: list[int], num_classes: int) -> None:
        super().__init__()
        self.stages, self.grids = list(stages), list(grids)
        total = int(sum(dims))
        self.register_buffer("mean", torch.zeros(total))
        self.register_buffer("std", torch.ones(total))
        self.linear = nn.Linear(total, num_classes)

    def features(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Raw (un-standardised) pooled features ``[N, D]`` of the stage maps."""
        return torch.cat([F.adaptive_avg_pool2d(m.float(), g).flatten(1) for m, g in zip(maps, self.grids)], 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.linear((self.features(maps) - self.mean) / self.std)


class _Model(nn.Module):
    def __init__(self, backbone: nn.Module, head: GridHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_stage_maps(self.backbone, x, self.head.stages))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop (reflect-pad 1/8 of the side) and horizontal flip of a batch ``[N, 3, H, W]``."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g).tolist()
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g).tolist()
    flip = (torch.rand(n, generator=g) < 0.5).tolist()
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def _batches(arrays: np.ndarray, batch_size: int):
    for start in range(0, len(arrays), batch_size):
        yield start, normalise_batch(torch.from_numpy(np.ascontiguousarray(arrays[start:start + batch_size])))


def _bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def _recalibrate_bn(backbone: nn.Module, images: np.ndarray, device, precision, control) -> None:
    """Replace BatchNorm running statistics by their average over ``images`` (one pass)."""
    layers = _bn_layers(backbone)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    backbone.train()
    for _, x in _batches(images, EVAL_BATCH):
        if control:
            control.checkpoint()
        with autocast(device, precision):
            backbone(x.to(device))
    for m, mom in zip(layers, saved):
        m.momentum = mom
    backbone.eval()


@torch.no_grad()
def _map_batches(model: "_Model", images: np.ndarray, device, precision, control, fn) -> list[torch.Tensor]:
    """``fn`` of each evaluation batch of ``images`` (eval mode, no gradients), on the CPU."""
    model.eval()
    out = []
    for _, x in _batches(images, EVAL_BATCH):
        if control:
            control.checkpoint()
        with autocast(device, precision):
            out.append(fn(x.to(device)).cpu())
    return out


def _features(model: _Model, images: np.ndarray, device, precision, control) -> torch.Tensor:
    return torch.cat(_map_batches(model, images, device, precision, control,
                                  lambda x: model.head.features(_stage_maps(model.backbone, x, model.head.stages))
                                  .float()))


def _std_floor(feats: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Per-feature standard deviation, floored per stage at :data:`STD_FLOOR` of the stage median."""
    if len(feats) < 2:
        return torch.ones(feats.shape[1])
    std = feats.std(0)
    out, start = [], 0
    for d in dims:
        block = std[start:start + d]
        out.append(block.clamp_min(max(float(block.median()) * STD_FLOOR, 1e-6)))
        start += d
    return torch.cat(out)


def _fit_probe(feats: np.ndarray, y: np.ndarray, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Logistic regression on standardised features; ``C`` picked on a quarter of the training set."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = len(y) // 4
    val, fit = order[:n_val], order[n_val:]
    best_c = LP_C[-1]
    if n_val >= num_classes and len(np.unique(y[fit])) == num_classes:
        best = -1.0
        for c in LP_C:
            clf = LogisticRegression(max_iter=1000, C=c).fit(feats[fit], y[fit])
            acc = clf.score(feats[val], y[val])
            if acc > best:
                best, best_c = acc, c
    clf = LogisticRegression(max_iter=1000, C=best_c).fit(feats, y)
    coef, bias = clf.coef_, clf.intercept_
    if coef.shape[0] != num_classes:  # absent classes (or two classes: sklearn's single row)
        full_w = np.zeros((num_classes, feats.shape[1]), np.float32)
        full_b = np.full(num_classes, -10.0, np.float32)
        if coef.shape[0] == 1 and len(clf.classes_) == 2:
            coef, bias = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
        full_w[clf.classes_], full_b[clf.classes_] = coef, bias
        coef, bias = full_w, full_b
    return coef.astype(np.float32), bias.astype(np.float32), float(best_c)


def resolve_settings(n_train: int, *, steps=None, epochs=None, batch_size=None, lr=None, warmup=None,
                     bn=None, min_steps=MIN_STEPS) -> dict:
    """The budget and schedule :func:`train_all_layers` uses for ``n_train`` labelled images."""
    if batch_size is None:
        batch_size = 1 << max(0, round(math.log2(max(1, n_train / 8))))
        batch_size = max(MIN_BATCH, min(MAX_BATCH, batch_size))
    batch_size = int(max(1, min(batch_size, n_train)))
    per_epoch = n_train / batch_size
    if steps is None:
        steps = max(int(min_steps), math.ceil((DEFAULT_EPOCHS if epochs is None else epochs) * per_epoch))
    steps = int(max(1, steps))
    if lr is None:
        lr = DEFAULT_LR * batch_size / LR_REFERENCE_BATCH
    if warmup is None:
        warmup = max(1, round(WARMUP_FRACTION * steps))
    warmup = int(min(warmup, steps - 1)) if steps > 1 else 0
    if bn is None:
        bn = "recalibrate-frozen" if n_train < BN_FREEZE_BELOW else "train"
    if bn not in ("recalibrate-frozen", "frozen", "train"):
        raise ValueError(f"bn must be recalibrate-frozen, frozen or train; got {bn!r}")
    epochs_f = steps / per_epoch
    # Each evaluation costs about a third of a training pass over the test set: tiny sets get the
    # minimum number of points, larger ones one per epoch (within the bounds).
    if n_train < BN_FREEZE_BELOW:
        points = MIN_EVAL_POINTS
    else:
        points = int(min(MAX_EVAL_POINTS, max(MIN_EVAL_POINTS, round(epochs_f))))
    points = min(points, steps)
    return {"batch_size": batch_size, "steps": steps, "epochs": epochs_f, "lr": float(lr), "warmup": warmup,
            "schedule": "linear warm-up, cosine to 0", "bn": bn, "eval_points": points}


def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up to ``peak``, then cosine to 0."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def _build_head(backbone, train_x, train_y, num_classes, stages, seed, device, precision, control,
                linear_probe_first) -> tuple["_Model", list[int], float | None]:
    """The grid head on ``stages``: standardisation from the training images and, for LP-FT, the
    weights of a logistic probe fitted on the frozen features. Returns (model, grids, probe C)."""
    backbone.eval()
    with torch.no_grad():
        probe_x = normalise_batch(torch.from_numpy(np.ascontiguousarray(train_x[:1]))).to(device)
        maps = _stage_maps(backbone, probe_x, stages)
    grids = [probe_grid(m.shape[1], min(m.shape[2], m.shape[3])) for m in maps]
    dims = [m.shape[1] * g * g for m, g in zip(maps, grids)]
    torch.manual_seed(seed)
    head = GridHead(stages, grids, dims, num_classes)
    model = _Model(backbone, head).to(device)
    feats = _features(model, train_x, device, precision, control)
    mean, std = feats.mean(0), _std_floor(feats, dims)
    head.mean.copy_(mean.to(device))
    head.std.copy_(std.to(device))
    probe_c = None
    if linear_probe_first:
        coef, bias, probe_c = _fit_probe(((feats - mean) / std).numpy(), np.asarray(train_y), num_classes, seed)
        with torch.no_grad():
            head.linear.weight.copy_(torch.from_numpy(coef))
            head.linear.bias.copy_(torch.from_numpy(bias))
    return model, grids, probe_c


def _batch_stream(n: int, batch_size: int, g: torch.Generator):
    """Index batches from a stream of seeded permutations of ``range(n)``: every batch is full."""
    stream: list[int] = []
    while True:
        while len(stream) < batch_size:
            stream.extend(torch.randperm(n, generator=g).tolist())
        idx, stream = torch.tensor(stream[:batch_size]), stream[batch_size:]
        yield idx


def _train_step(model: "_Model", opt, x, y, bn_train: bool, device, precision) -> tuple[float, torch.Tensor]:
    """One update (BatchNorm layers kept in eval mode unless ``bn_train``); returns (loss, logits)."""
    model.train()
    if not bn_train:
        for m in _bn_layers(model.backbone):
            m.eval()
    with autocast(device, precision):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return float(loss.detach()), logits.detach()


def train_all_layers(backbone: nn.Module, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     test_y: np.ndarray, num_classes: int, *, seed: int = 0,
                     device: torch.device = torch.device("cpu"), precision: str = "fp32",
                     control: RunControl | None = None,
                     on_epoch: Callable[[int, float, float, float], None] | None = None,
                     steps: int | None = None, epochs: float | None = None, batch_size: int | None = None,
                     lr: float | None = None, weight_decay: float = 5e-4, warmup: int | None = None,
                     bn: str | None = None, linear_probe_first: bool = True,
                     head_stages: list[str] | None = None, backbone_lr_scale: float = BACKBONE_LR_SCALE,
                     min_steps: int = MIN_STEPS, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Fine-tune every layer of ``backbone`` plus a new head on a (possibly tiny) labelled set.

    See the module docstring for the protocol (BatchNorm handling, multi-stage grid head, linear
    probe first, step budget, warm-up and cosine schedule) and why. The backbone is trained in
    place.

    Args:
        backbone: An :class:`sslstudio.models.Backbone`.
        train_x: Training images, uint8 ``[N, H, W, 3]``.
        train_y: Training labels, int64 ``[N]``.
        test_x: Test images, uint8 ``[M, H, W, 3]``.
        test_y: Test labels, int64 ``[M]``.
        num_classes: Number of classes.
        seed: Seeds the head, the batch order, the augmentations and the probe's validation split.
        device: Where to train.
        precision: ``fp32`` or ``bf16`` (autocast around forward passes).
        control: Pause / cancel token, checked between steps (``Cancelled`` propagates).
        on_epoch: Called as ``on_epoch(point, train_loss, train_acc, test_acc)`` at each evaluation
            point (an epoch, or an equal share of the steps for tiny sets).
        steps: Optimisation steps; default ``max(min_steps, epochs * steps_per_epoch)``.
        epochs: Passes over the training set used for the default ``steps`` (default
            :data:`DEFAULT_EPOCHS`); never fewer than ``min_steps`` steps.
        batch_size: Default: about an eighth of the set, a power of two in [16, 64].
        lr: Peak learning rate of the head; default ``0.1 * batch_size / 256``.
        weight_decay: L2 weight decay of the fine-tuning phase.
        warmup: Linear warm-up steps; default a tenth of ``steps``.
        bn: ``recalibrate-frozen`` (re-estimate the running statistics on the training images, then
            keep BatchNorm in eval mode), ``frozen`` (keep the stored statistics, eval mode) or
            ``train`` (batch statistics). Default: ``recalibrate-frozen`` below
            :data:`BN_FREEZE_BELOW` images, else ``train``.
        linear_probe_first: Fit the head on frozen features before fine-tuning (LP-FT).
        head_stages: Stages the head reads (default all of them).
        backbone_lr_scale: Backbone learning rate as a share of the head's.
        min_steps: Fewest steps when ``steps`` is not given.
        on_step: Called as ``on_step(step, lr)`` before each update (for tests and plots).

    Returns:
        ``history`` (``(train_loss, train_acc, test_acc)`` per evaluation point), ``test_accuracy``
        (the last point's), ``test_pred`` (last predictions on ``test_x``), ``train_accuracy``,
        ``steps``, ``epochs`` (effective passes, a float), ``settings`` (the resolved settings)
        and ``time_s``.
    """
    t0 = time.perf_counter()
    n = len(train_y)
    if n == 0:
        raise ValueError("no training images")
    cfg = resolve_settings(n, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, bn=bn,
                           min_steps=min_steps)
    total, peak = cfg["steps"], cfg["lr"]
    backbone.to(device)

    # BatchNorm statistics.
    if cfg["bn"] == "recalibrate-frozen":
        _recalibrate_bn(backbone, train_x, device, precision, control)

    stages = list(head_stages or backbone.stage_names())
    model, grids, probe_c = _build_head(backbone, train_x, train_y, num_classes, stages, seed, device, precision,
                                        control, linear_probe_first)
    history, pred = _fine_tune(model, train_x, train_y, test_x, test_y, cfg, seed, backbone_lr_scale, weight_decay,
                               device, precision, control, on_epoch, on_step)
    model.eval()
    settings = {**cfg, "weight_decay": weight_decay, "backbone_lr": peak * backbone_lr_scale,
                "head": f"linear on standardised pooled grids of {', '.join(stages)} (grids {grids})",
                "linear_probe_first": linear_probe_first, "probe_C": probe_c, "augment": "crop+flip",
                "optimizer": "SGD nesterov momentum 0.9"}
    return {"history": history, "test_accuracy": history[-1][2], "test_pred": pred,
            "train_accuracy": history[-1][1], "steps": total, "epochs": cfg["epochs"], "settings": settings,
            "time_s": time.perf_counter() - t0}


def _fine_tune(model: _Model, train_x, train_y, test_x, test_y, cfg: dict, seed: int, backbone_lr_scale: float,
               weight_decay: float, device, precision, control, on_epoch, on_step) -> tuple[list, np.ndarray]:
    """The fine-tuning steps (SGD, warm-up then cosine, the backbone at ``backbone_lr_scale`` of the head's
    rate), with the test set predicted at each of ``cfg["eval_points"]``; returns the history and the
    last predictions."""
    groups = [{"params": list(model.backbone.parameters()), "scale": backbone_lr_scale},
              {"params": list(model.head.linear.parameters()), "scale": 1.0}]
    opt = torch.optim.SGD([{"params": gr["params"], "lr": 0.0} for gr in groups], momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    n, bsz, total, peak, warm = len(train_y), cfg["batch_size"], cfg["steps"], cfg["lr"], cfg["warmup"]
    bn_train = cfg["bn"] == "train"
    train_y_t = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    test_y_t = torch.from_numpy(np.asarray(test_y, dtype=np.int64))
    g = torch.Generator().manual_seed(seed)
    points = cfg["eval_points"]
    marks = sorted({max(1, round(total * (k + 1) / points)) for k in range(points)})
    history: list[tuple[float, float, float]] = []
    pred = np.zeros(len(test_y), np.int64)
    loss_sum = correct = seen = 0.0
    for step, idx in zip(range(total), _batch_stream(n, bsz, g)):
        if control:
            control.checkpoint()
        x = _augment(normalise_batch(torch.from_numpy(np.ascontiguousarray(train_x[idx.numpy()]))), g).to(device)
        y = train_y_t[idx].to(device)
        lr_now = lr_at(step, total, warm, peak)
        for group, spec in zip(opt.param_groups, groups):
            group["lr"] = lr_now * spec["scale"]
        if on_step:
            on_step(step, lr_now)
        loss, logits = _train_step(model, opt, x, y, bn_train, device, precision)
        loss_sum += loss * len(idx)
        correct += float((logits.argmax(1) == y).sum())
        seen += len(idx)
        if step + 1 in marks:
            pred = _predict(model, test_x, device, precision, control)
            test_acc = float((torch.from_numpy(pred) == test_y_t).float().mean()) if len(test_y) else 0.0
            history.append((loss_sum / seen, correct / seen, test_acc))
            if on_epoch:
                on_epoch(len(history) - 1, *history[-1])
            loss_sum = correct = seen = 0.0
    return history, pred


def _predict(model: _Model, images: np.ndarray, device, precision, control) -> np.ndarray:
    out = _map_batches(model, images, device, precision, control, lambda x: model(x).float().argmax(1))
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)
