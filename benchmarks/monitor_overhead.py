"""Overhead of the live kNN monitor: its seconds per epoch against the epoch's training seconds.

Runs the real pretraining loop (the same code as ``sslstudio pretrain --monitor-labelled DIR``) and
reads the epoch records of its ``metrics.jsonl``: ``epoch_time_s`` (the training steps of the epoch)
and ``monitor_s`` (the monitor call after it, timed inside the loop). The share is the monitor's own
cost, so it stays meaningful when other processes share the CPUs (two runs' wall times would not).
With ``--caps`` it also times the monitor alone on the trained backbone with smaller image caps.

    OMP_NUM_THREADS=2 python benchmarks/monitor_overhead.py \\
        --data /work/shared/data/unlabelled --labelled /work/shared/data/labelled --epochs 1

Prints one line per epoch and a summary; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/unlabelled")
    p.add_argument("--labelled", default="/work/shared/data/labelled")
    p.add_argument("--task", default="rotation")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-train-per-class", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--out", help="run directory (default: a temporary folder)")
    p.add_argument("--caps", action="store_true", help="also time the monitor alone with smaller image caps")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)

    from sslstudio.cli import ProgressPrinter
    from sslstudio.data.cache import default_cache_dir
    from sslstudio.engine import PretrainConfig, pretrain
    from sslstudio.runs import RunDir

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="monitor-overhead-")) / "run"
    cfg = PretrainConfig(task=args.task, data=args.data, out=str(out), arch=args.arch, epochs=args.epochs,
                         image_size=args.image_size, workers=args.workers, device=args.device,
                         cache_dir=str(default_cache_dir()), monitor_labelled=args.labelled,
                         monitor_max_train_per_class=args.max_train_per_class, monitor_max_test=args.max_test)
    print(f"equivalent command: sslstudio pretrain --task {args.task} --data {args.data} --out {out} "
          f"--arch {args.arch} --epochs {args.epochs} --image-size {args.image_size} --workers {args.workers} "
          f"--monitor-labelled {args.labelled}", flush=True)
    t0 = time.perf_counter()
    summary = pretrain(cfg, on_event=ProgressPrinter())
    wall = time.perf_counter() - t0
    records = [r for r in RunDir(out).read_metrics() if r["type"] == "epoch"]
    mon = summary["monitor"]
    rows = []
    print(f"\nmonitor: {mon['reference_images']} reference + {mon['test_images']} test images, "
          f"stages {', '.join(mon['stages'])}")
    for r in records:
        share = r["monitor_s"] / r["epoch_time_s"]
        rows.append({"epoch": r["epoch"] + 1, "epoch_time_s": r["epoch_time_s"], "monitor_s": r["monitor_s"],
                     "share": share, "samples_per_s": r["samples_per_s"]})
        print(f"epoch {r['epoch'] + 1}: training {r['epoch_time_s']:.1f} s ({r['samples_per_s']:.0f} samples/s), "
              f"monitor {r['monitor_s']:.2f} s = {100 * share:.1f}% of the epoch")
    result = {"config": vars(args), "run": str(out), "wall_s": wall, "epochs": rows,
              "monitor_images": mon["reference_images"] + mon["test_images"],
              "max_share": max(r["share"] for r in rows)}
    if args.caps:
        import torch

        from sslstudio.evaluation.monitor import KnnMonitor
        from sslstudio.models.pretrained import load_run_backbone

        backbone, _config = load_run_backbone(out)
        device = torch.device(summary["device"])
        caps = []
        for per_class, max_test in ((None, None), (50, 250), (20, 100)):
            m = KnnMonitor(args.labelled, args.arch, args.image_size, device, summary["precision"],
                           max_train_per_class=per_class, max_test=max_test)
            m.measure(backbone)  # warm-up
            res = m.measure(backbone)
            share = res.seconds / rows[-1]["epoch_time_s"]
            caps.append({"max_train_per_class": per_class, "max_test": max_test, "images": m.num_images,
                         "monitor_s": res.seconds, "share": share, "knn": res.accuracy})
            knn = ", ".join(f"{k} {100 * v:.1f}%" for k, v in res.accuracy.items())
            print(f"cap {per_class}/class, {max_test} test: {m.num_images} images, {res.seconds:.2f} s = "
                  f"{100 * share:.1f}% of the last epoch; kNN {knn}")
        result["caps"] = caps
    print(f"\nlargest monitor share of an epoch: {100 * result['max_share']:.1f}% (limit 10%)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
