"""Training throughput inside the window against the command line, with the same settings.

Runs the same pretraining twice per repeat, alternating which goes first: once from the window's
Pretrain page (``MainWindow``, offscreen unless a display is available, with its live plots, log
and 10 Hz redraw), once as ``sslstudio pretrain`` in a fresh process with the settings the window
run recorded in its ``config.json``. Prints each run's samples/s (from its ``summary.json``: the
mean over epochs of the engine's own rate) and the ratio window / CLI::

    python benchmarks/window_vs_cli.py --data ../shared/data/unlabelled --limit 1024 \
        --task rotation --arch resnet18 --image-size 64 --epochs 2 --batch-size 64 --workers 2
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def link_subset(data: str, limit: int, folder: Path) -> str:
    """The first ``limit`` images of ``data`` as links in ``folder`` (all of ``data`` when 0)."""
    from sslstudio.data import scan_folder

    files = scan_folder(data).files
    if not limit or limit >= len(files):
        return data
    folder.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(files[:limit]):
        (folder / f"{k:07d}{path.suffix.lower()}").symlink_to(path.resolve())
    return str(folder)


def run_window(app, tmp: Path, data: str, args) -> dict:
    from benchwindow import open_window, prepare_pretraining

    from sslstudio.gui.workers import wait_for_signal

    window = open_window(tmp)
    page = prepare_pretraining(window, data, args)
    t0 = time.perf_counter()
    page.start()
    ok = wait_for_signal(page.run_finished, 7200)
    wall = time.perf_counter() - t0
    window.close()
    if not ok:
        raise SystemExit("the window's run did not finish")
    run = Path(page.run_dir)
    return {"run": run, "wall_s": wall, "summary": json.loads((run / "summary.json").read_text()),
            "config": json.loads((run / "config.json").read_text())}


def run_cli(config: dict, out: Path) -> dict:
    cmd = [sys.executable, "-m", "sslstudio", "pretrain", "--task", config["task"], "--data", config["data"],
           "--out", str(out), "--arch", config["arch"], "--epochs", str(config["epochs"]),
           "--batch-size", str(config["batch_size"]), "--lr", str(config["lr"]),
           "--image-size", str(config["image_size"]), "--device", config["device"].split(":")[0],
           "--precision", config["precision"], "--seed", str(config["seed"]),
           "--workers", str(config["workers"]), "--holdout", str(config["holdout"])]
    for key, value in config.get("task_options", {}).items():
        cmd += ["--option", f"{key}={json.dumps(value)}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return {"run": out, "wall_s": wall, "summary": json.loads((out / "summary.json").read_text()),
            "config": json.loads((out / "config.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of unlabelled images")
    parser.add_argument("--limit", type=int, default=1024, help="use the first N images (0: all)")
    parser.add_argument("--task", default="rotation")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="window/CLI pairs (the order alternates)")
    args = parser.parse_args(argv)

    from benchwindow import application

    app = application()
    tmp = Path(tempfile.mkdtemp(prefix="sslstudio-window-vs-cli-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # runs, checkpoints and the decode cache
    data = link_subset(args.data, args.limit, tmp / "images")

    rows = []
    config = None
    for r in range(args.repeats):
        order = ("cli", "window") if r % 2 == 1 else ("window", "cli")  # the window first sets the config
        for which in order:
            if which == "window":
                res = run_window(app, tmp / f"w{r}", data, args)
                config = res["config"]
            else:
                res = run_cli(config, tmp / f"cli{r}")
            rows.append((which, res))
            s = res["summary"]
            print(f"{which:6s} repeat {r + 1}: {s['samples_per_s']:8.1f} samples/s  ({s['images_per_s']:.1f} "
                  f"images/s, {s['epochs_completed']} epoch(s), {s['images_used']} images, wall {res['wall_s']:.1f} s)",
                  flush=True)
    win = [res["summary"]["samples_per_s"] for w, res in rows if w == "window"]
    cli = [res["summary"]["samples_per_s"] for w, res in rows if w == "cli"]
    c = rows[0][1]["config"]
    print(f"settings: {c['task']} / {c['arch']} at {c['image_size']} px, batch {c['batch_size']}, "
          f"{c['workers']} workers, device {c['device']}, precision {c['precision']}, {c['epochs']} epoch(s); "
          f"platform {app.platformName()}")
    print(f"window {sum(win) / len(win):.1f} samples/s, CLI {sum(cli) / len(cli):.1f} samples/s: "
          f"window / CLI = {sum(win) / sum(cli) * len(cli) / len(win):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
