"""All-layers fine-tuning (:func:`sslstudio.evaluation.finetune_all.train_all_layers`) against the
layer1 linear probe of the same backbone, with few labels. Prints a table.

The layer1 probe: pooled layer1 grid features (:func:`sslstudio.evaluation.features.extract_stages`),
standardised with the training mean / std, logistic regression with ``C`` in (0.01, 0.1, 1) picked on
a held-out quarter of the training images, refitted on all of them, scored on the test set.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/finetune_few_labels.py \
        --inits random /tmp/ft_rot --per-class 20 --seeds 0 1

``/tmp/ft_rot`` is a run folder, e.g. from ``sslstudio pretrain --task rotation --data
/work/shared/data/unlabelled --out /tmp/ft_rot --arch resnet18 --epochs 3 --image-size 64``.
A benchmark, not a test: a 20-per-class row takes one to several minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from sslstudio.evaluation.features import extract_stages
from sslstudio.evaluation.finetune_all import train_all_layers
from sslstudio.evaluation.finetuning import load_labelled_data
from sslstudio.models import build_backbone
from sslstudio.runs import load_run_backbone


def make_backbone(init: str):
    if init == "random":
        torch.manual_seed(0)
        return build_backbone("resnet18")
    return load_run_backbone(init)[0]


def layer1_probe(backbone, data, seed: int) -> float:
    cpu = torch.device("cpu")
    tr = extract_stages(backbone, data.train_x, ["layer1"], cpu)["layer1"]
    te = extract_stages(backbone, data.test_x, ["layer1"], cpu)["layer1"]

    def standardise(a, b):
        m, s = a.mean(0), a.std(0) + 1e-6
        return (a - m) / s, (b - m) / s

    order = np.random.default_rng(seed).permutation(len(data.train_y))
    val, fit = order[: len(order) // 4], order[len(order) // 4:]
    best = (-1.0, 1.0)
    for c in (0.01, 0.1, 1.0):
        a, v = standardise(tr[fit], tr[val])
        acc = LogisticRegression(max_iter=1000, C=c).fit(a, data.train_y[fit]).score(v, data.train_y[val])
        best = max(best, (acc, c), key=lambda t: t[0])
    a, t = standardise(tr, te)
    return LogisticRegression(max_iter=1000, C=best[1]).fit(a, data.train_y).score(t, data.test_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", nargs="+", default=["random"])
    parser.add_argument("--per-class", nargs="+", type=int, default=[20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--labelled", default="/work/shared/data/labelled/train")
    parser.add_argument("--test", default="/work/shared/data/labelled/test")
    parser.add_argument("--steps", type=int, default=None, help="override the step budget")
    parser.add_argument("--settings", default="{}", help="extra train_all_layers keywords, as JSON")
    args = parser.parse_args()
    extra = json.loads(args.settings)
    rows = []
    print(f"{'init':<16} {'per class':>9} {'seed':>4} {'layer1 probe %':>14} {'all layers %':>12} "
          f"{'steps':>5} {'batch':>5} {'seconds':>7}", flush=True)
    for init in args.inits:
        for per_class in args.per_class:
            for seed in args.seeds:
                data = load_labelled_data(args.labelled, args.test, 64, per_class, 0.2, seed)
                probe = layer1_probe(make_backbone(init), data, seed)
                t0 = time.perf_counter()
                result = train_all_layers(make_backbone(init), data.train_x, data.train_y, data.test_x,
                                          data.test_y, len(data.classes), seed=seed, steps=args.steps, **extra)
                seconds = time.perf_counter() - t0
                s = result["settings"]
                rows.append((init, per_class, seed, probe, result["test_accuracy"], seconds))
                print(f"{init:<16} {per_class:>9} {seed:>4} {100 * probe:>14.1f} "
                      f"{100 * result['test_accuracy']:>12.1f} {s['steps']:>5} {s['batch_size']:>5} "
                      f"{seconds:>7.0f}   curve " + " ".join(f"{100 * h[2]:.0f}" for h in result["history"]),
                      flush=True)


if __name__ == "__main__":
    main()
