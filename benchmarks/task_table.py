"""Every pretext task side by side: pretext metric after a short run, and head-only probes vs random init.

    python benchmarks/task_table.py --data ../shared/data --out task-table --epochs 3 --image-size 64

``--data`` holds ``unlabelled/`` and ``labelled/train|test/<class>/``. For each task a short
pretraining run (same architecture, image size, epochs and seed for all) is made in
``OUT/runs/<task>`` (kept: a second call reuses finished runs), then every backbone and a randomly
initialised one are probed head-only at each stage with the same schedule. Prints a Markdown table
and writes it to ``OUT/table.md`` (the raw rows are in ``OUT/compare/results.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sslstudio.cli import ProgressPrinter
from sslstudio.engine import PretrainConfig, pretrain
from sslstudio.evaluation import compare
from sslstudio.tasks import list_tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", help="comma-separated (default: all)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--layers", default="all")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    data, out = Path(args.data), Path(args.out)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else list_tasks()
    runs, pretext = [], {}
    for name in tasks:
        run = out / "runs" / name
        if not (run / "summary.json").is_file():
            t0 = time.perf_counter()
            print(f"== pretraining {name}", file=sys.stderr)
            pretrain(PretrainConfig(task=name, data=str(data / "unlabelled"), out=str(run), arch=args.arch,
                                    epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                                    workers=args.workers, seed=args.seed), on_event=ProgressPrinter())
            print(f"   {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        summary = json.loads((run / "summary.json").read_text())
        metric = summary["metric"]
        held_out = summary.get(f"final_val_{metric}")
        pretext[name] = (metric, held_out if held_out is not None else summary.get(f"final_train_{metric}"),
                         "held-out" if held_out is not None else "train", summary)
        runs.append(str(run))

    rows = compare(str(data / "labelled" / "train"), str(out / "compare"), runs, test=str(data / "labelled" / "test"),
                   baselines=["random"], modes=["head"], layers=args.layers, arch=args.arch,
                   image_size=args.image_size, seed=args.seed, on_event=ProgressPrinter())["rows"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))

    def accs(init: str) -> list[str]:
        cells = []
        for layer in layers:
            r = next(r for r in rows if r["init"] == init and r["layer"] == layer)
            cells.append("n/a" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}")
        return cells

    lines = [f"{args.arch}, {args.image_size} px, {args.epochs} pretraining epochs, batch {args.batch_size}, "
             f"seed {args.seed}; head-only probes: logistic regression on the frozen stage's pooled features (L2 chosen on a validation split).",
             "", "| task | pretext metric | " + " | ".join(f"probe {l} (%)" for l in layers) + " | pretrain time |",
             "|---|---|" + "---|" * len(layers) + "---|"]
    for name, run in zip(tasks, runs):
        metric, value, where, summary = pretext[name]
        shown = "n/a" if value is None else (f"{value:.3f}" if metric == "accuracy" else f"{value:.2f} dB")
        lines.append(f"| {name} | {where} {metric} {shown} | " + " | ".join(accs(run)) +
                     f" | {summary['time_s'] / 60:.1f} min |")
    lines.append("| random init | - | " + " | ".join(accs("random")) + " | - |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
