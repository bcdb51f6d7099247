"""How responsive the window stays while it pretrains: event-loop stalls measured with a timer probe.

Opens the MainWindow (offscreen unless a display is available), scans a folder (tiny generated
images, or ``--data``), starts a pretraining run in the background and, for the whole run, records
the gaps between the ticks of a 5 ms ``QTimer``. A stall is a gap minus the interval. Prints the
count, median, p99 and maximum stall in ms and the training throughput the run reported in its
``summary.json``::

    python benchmarks/gui_responsiveness.py --epochs 2 --images 64 --image-size 32 --arch resnet18
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of unlabelled images (default: generated images)")
    parser.add_argument("--images", type=int, default=64, help="generated images (without --data)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--task", default="rotation")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interval-ms", type=int, default=5)
    args = parser.parse_args(argv)

    from benchwindow import application, open_window, prepare_pretraining

    app = application()
    from PySide6.QtCore import QElapsedTimer, QTimer

    from sslstudio.gui.workers import wait_for_signal

    tmp = Path(tempfile.mkdtemp(prefix="sslstudio-responsiveness-"))
    data = args.data
    if not data:
        from PIL import Image

        folder = tmp / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            arr = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
            arr[: args.image_size // 4] = (255, 0, 0)
            Image.fromarray(arr).save(folder / f"img_{i:04d}.png")
        data = str(folder)

    window = open_window(tmp)


    page = prepare_pretraining(window, data, args, timeout_s=120)

    clock = QElapsedTimer()
    gaps: list[float] = []
    last = [0]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    probe = QTimer()
    probe.setTimerType(probe.timerType().PreciseTimer)
    probe.setInterval(args.interval_ms)
    probe.timeout.connect(tick)
    clock.start()
    last[0] = clock.nsecsElapsed()
    probe.start()
    t0 = time.perf_counter()
    page.start()
    result = wait_for_signal(page.run_finished, 3600)
    wall = time.perf_counter() - t0
    probe.stop()
    window.close()
    if not result:
        print("the run did not finish", file=sys.stderr)
        return 1
    summary = json.loads((Path(page.run_dir) / "summary.json").read_text())
    stalls = np.maximum(np.asarray(gaps[1:] or [args.interval_ms]) - args.interval_ms, 0.0)
    print(f"run: {args.task} / {args.arch}, {args.epochs} epoch(s), {summary.get('images_used')} images at "
          f"{args.image_size} px, batch {args.batch_size}, device {args.device}, "
          f"platform {app.platformName()}, {wall:.1f} s")
    print(f"event-loop probe: {len(gaps)} ticks of {args.interval_ms} ms")
    print(f"stalls: {int((stalls > args.interval_ms).sum())} over {args.interval_ms} ms; median "
          f"{np.median(stalls):.2f} ms, p99 {np.percentile(stalls, 99):.2f} ms, max {stalls.max():.2f} ms")
    sps = summary.get("samples_per_s")
    ips = summary.get("images_per_s")
    print(f"training: {sps:.1f} samples/s ({ips:.1f} images/s) as reported in summary.json"
          if sps is not None else "training: no throughput in summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
