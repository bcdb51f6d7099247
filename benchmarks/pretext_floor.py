"""What a network that learnt nothing would score, beside what a pretraining run scores, on the same images.

    python benchmarks/pretext_floor.py --data ../shared/data/unlabelled --test ../shared/data/labelled/test \
        [--run runs/colorization ...] [--image-size 32]

For the tasks without a chance level (docs/fidelity.md, "Does each task learn with its CPU recipe?"):

- **colorization**: the best *constant* answer (one ab distribution for every pixel, fitted to the very
  images it is scored on, so a floor no network that ignores its input can beat) under the task's own loss
  (the class-rebalanced soft cross-entropy), and the commonest bin's share of the pixels;
- **autoencoder, inpainting**: the PSNR of answering every pixel with the images' mean colour.

With ``--run`` (a colorization run directory), the run's network is scored on the same batches, with
BatchNorm in evaluation mode (as the engine's held-out figure) and in training mode. The images are the
first 512 of ``--data`` (seen in training) and the first 500 of ``--test`` (never seen). Batches come from
the task's own ``make_batch`` (random crops and mirrors included), seed 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sslstudio.data import decode_images, scan_folder
from sslstudio.engine.loader import make_task_batch
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task
from sslstudio.tasks.colorization import soft_encode
from sslstudio.tasks.decoders import psnr_sum


def images(folder: str, size: int, n: int) -> np.ndarray:
    return np.asarray(decode_images(scan_folder(folder).files[:n], size).arrays)


def constant_colour_loss(task, target: torch.Tensor) -> tuple[float, float]:
    """(loss of the best constant ab distribution, commonest bin's share) on these targets."""
    q, h = len(task.centres), task.out_size
    centres, weights = task._on(target.device)  # noqa: SLF001 - the task's own bins and class weights
    _, ab = task._pixels(torch.zeros(len(target), q, h, h, device=target.device), target)  # noqa: SLF001
    w, idx = soft_encode(ab, centres, task.config.neighbours, task.config.sigma)
    mass = torch.zeros(q, device=target.device).index_add_(0, idx.reshape(-1),
                                                           (weights[idx[:, 0]][:, None] * w).reshape(-1))
    logq = (mass / mass.sum()).clamp_min(1e-12).log().view(1, q, 1, 1).expand(len(target), q, h, h)
    share = float(torch.bincount(idx[:, 0], minlength=q).max() / len(idx))
    return float(task.loss(logq.contiguous(), target)), share


def run_scores(run: Path, task, x: torch.Tensor, y: torch.Tensor) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    backbone = build_backbone(cfg["arch"])
    model = task.build_head(backbone, backbone.feature_dim).to(x.device)
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location=x.device)["model"])
    out = {}
    for mode in ("eval", "train"):
        model.train(mode == "train")
        loss = metric = count = n = 0.0
        with torch.no_grad():
            for i in range(0, len(x), 40):
                o = model(x[i:i + 40])
                loss += float(task.loss(o, y[i:i + 40])) * len(o)
                n += len(o)
                m, c = task.metric(o, y[i:i + 40])
                metric, count = metric + m, count + c
        out[f"loss_{mode}_bn"] = round(loss / n, 4)
        out[f"bin_accuracy_{mode}_bn"] = round(metric / max(count, 1), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--run", action="append", default=[])
    p.add_argument("--image-size", type=int, default=32)
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full, test = images(a.data, a.image_size, 10 ** 9), images(a.test, a.image_size, 500)
    train = full[:512]
    for name in ("autoencoder", "inpainting"):
        task = create_task(name, image_size=a.image_size)
        for part, arr in (("seen", train), ("unseen", test)):
            _, y = make_task_batch(task, arr, np.arange(len(arr)), 0, 0, 0, device)
            target, region = (y[:, :3], y[:, 3:4]) if name == "inpainting" else (y, None)
            mean = target.float().mean(dim=(0, 2, 3), keepdim=True).expand_as(target)
            s, k = psnr_sum(mean, target, region)
            print(f"{name} {part}: mean colour {s / max(k, 1):.2f} dB")
    runs = [Path(r) for r in a.run] or [None]
    for run in runs:
        options = json.loads((run / "config.json").read_text())["task_options"] if run else {}
        task = create_task("colorization", options, a.image_size)
        task.prepare(full, 0)  # the prior and class weights of the whole folder, as a run measures them
        for part, arr in (("seen", train), ("unseen", test)):
            x, y = make_task_batch(task, arr, np.arange(len(arr)), 0, 0, 0, device)
            loss, share = constant_colour_loss(task, y)
            line = {"part": part, "constant_answer_loss": round(loss, 4), "commonest_bin_share": round(share, 4)}
            if run:
                line.update(run=run.name, **run_scores(run, task, x, y))
            print("colorization", json.dumps(line))


if __name__ == "__main__":
    main()
