"""Scanning a folder of 100,000 small image files: how long it takes, and whether the window stays responsive.

Generates N tiny, distinct image files (16 to 24 px PNGs and JPEGs in nested sub-folders, plus a
few non-image files) in a temporary folder, or in ``--dir`` (reused when it already holds the same
set), then times :func:`sslstudio.data.scan_folder` (the first scan after generating, then warm
scans) and the header check :func:`sslstudio.data.inspect_images`.

With ``--gui`` it also opens the real :class:`~sslstudio.gui.window.MainWindow` (offscreen unless a
display is available), sets the folder on the data page as the "Choose folder" button does, and
reports the time until the count of images is shown, the time until the header check has finished,
and the gaps between the ticks of a 10 ms ``QTimer`` during all that (the longest gap is how long
the window was blocked; the target is well under 100 ms)::

    python benchmarks/scan_100k.py                       # 100,000 files in a temporary folder
    python benchmarks/scan_100k.py --gui --dir /tmp/scan100k --keep
    python benchmarks/scan_100k.py -n 20000 --gui --profile
"""

from __future__ import annotations

import argparse
import gc
import io
import multiprocessing
import os
import shutil
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

MARKER = ".scan_100k_set"  # hidden: the scan skips it
FILES_PER_FOLDER = 500
FOLDERS_PER_PART = 20


# -- generating the files ---------------------------------------------------------------------------
def _png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """A valid 8-bit RGB PNG of ``rgb`` (``height * width * 3`` bytes), written without PIL (fast)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1))
            + chunk(b"IEND", b""))


def _jpeg_bases() -> list[bytes]:
    from PIL import Image

    out = []
    rng = np.random.default_rng(1)
    for width, height in ((16, 16), (24, 16), (16, 20), (20, 20)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


_SIZES = ((16, 16), (24, 16), (16, 24), (20, 20))


def relative_path(i: int) -> str:
    """Where file ``i`` goes: ``part_03/group_07/img_031234.png`` (every fourth one a JPEG)."""
    ext = "jpg" if i % 4 == 3 else "png"
    part, group = i // (FILES_PER_FOLDER * FOLDERS_PER_PART), (i // FILES_PER_FOLDER) % FOLDERS_PER_PART
    return f"part_{part:02d}/group_{group:02d}/img_{i:06d}.{ext}"


def _write_range(args: tuple[str, int, int]) -> int:
    """Write files ``start <= i < stop`` under ``root`` (one process of the pool)."""
    root, start, stop = args
    rng = np.random.default_rng(start)
    bases = {size: bytearray(rng.integers(0, 256, size[0] * size[1] * 3, dtype=np.uint8).tobytes())
             for size in _SIZES}
    jpegs = _jpeg_bases()
    made: set[str] = set()
    for i in range(start, stop):
        rel = relative_path(i)
        path = os.path.join(root, rel)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
            with open(os.path.join(folder, "notes.txt"), "w") as fh:  # one non-image file per folder
                fh.write("not an image\n")
        if rel.endswith(".jpg"):
            base = jpegs[i % len(jpegs)]
            comment = f"image {i}".encode()
            # a COM segment right after SOI makes every file distinct; the pixels stay valid
            data = base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]
        else:
            width, height = _SIZES[i % len(_SIZES)]
            rgb = bases[(width, height)]
            rgb[0:4] = i.to_bytes(4, "big")  # distinct pixels in every file
            data = _png_bytes(width, height, bytes(rgb))
        with open(path, "wb") as fh:
            fh.write(data)
    return stop - start


def generate(root: Path, n: int, processes: int) -> float:
    """Write the ``n`` files under ``root`` (reusing a complete earlier set); return the seconds taken."""
    marker = root / MARKER
    if marker.is_file() and marker.read_text().strip() == str(n):
        return 0.0
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    step = FILES_PER_FOLDER * 4
    ranges = [(str(root), s, min(s + step, n)) for s in range(0, n, step)]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            written = sum(pool.imap_unordered(_write_range, ranges))
    else:
        written = sum(map(_write_range, ranges))
    assert written == n
    marker.write_text(str(n))
    return time.perf_counter() - t0


# -- timing the engine ----------------------------------------------------------------------------
def time_engine(root: Path, n: int, repeats: int, inspect: bool) -> dict[str, float]:
    from sslstudio.data import inspect_images, scan_folder

    t0 = time.perf_counter()
    report = scan_folder(root)
    first = time.perf_counter() - t0
    if len(report.files) != n:
        raise SystemExit(f"the scan found {len(report.files):,} images, expected {n:,}")
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scan_folder(root)
        warm.append(time.perf_counter() - t0)
    out = {"scan_first": first, "scan_warm": statistics.median(warm), "ignored": report.ignored}
    if inspect:
        t0 = time.perf_counter()
        check = inspect_images(report.files)
        out["inspect"] = time.perf_counter() - t0
        if check.readable != n:
            raise SystemExit(f"the header check read {check.readable:,} of {n:,} files: {check.reasons()}")
    return out


# -- timing the window ----------------------------------------------------------------------------
def time_window(root: Path, n: int, interval_ms: int, settle_s: float, timeout_s: float) -> dict:
    from benchwindow import application, open_window

    app = application()
    from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

    tmp = Path(tempfile.mkdtemp(prefix="sslstudio-scan100k-"))
    window = open_window(tmp)
    page = window.data_page

    clock = QElapsedTimer()
    ticks: list[int] = []
    marks: dict[str, float] = {}
    loop = QEventLoop()

    def now_ms() -> float:
        return clock.nsecsElapsed() / 1e6

    def tick() -> None:
        ticks.append(clock.nsecsElapsed())

    def on_progress(done: int, total: int) -> None:
        marks.setdefault("first_progress", now_ms())

    def on_scanned(report) -> None:
        marks["count_shown"] = now_ms()
        marks["count"] = len(report.files)

    def on_inspected(inspection) -> None:
        marks["checked"] = now_ms()
        marks["readable"] = inspection.readable
        QTimer.singleShot(int(settle_s * 1000), loop.quit)  # keep probing while the view lays out and paints

    def on_failed(message: str) -> None:
        marks["failed"] = message
        loop.quit()

    def start() -> None:
        marks["start"] = now_ms()
        page.set_folder(str(root))
        marks["set_folder_returned"] = now_ms()
        page.job.worker.progress.connect(on_progress)

    collections: list[tuple[int, float]] = []  # (generation, ms) of each garbage collection while probing
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif clock.isValid():
            collections.append((int(info["generation"]), (time.perf_counter() - gc_started[0]) * 1000))

    page.scan_finished.connect(on_scanned)
    page.inspect_finished.connect(on_inspected)
    page.scan_failed.connect(on_failed)
    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(interval_ms)
    probe.timeout.connect(tick)
    for _ in range(5):
        app.processEvents()
    # The window collects garbage on a timer in the GUI thread; a full collection (every two minutes
    # or so) stalls it for as long as it takes, whatever the window is doing. Start from a fresh
    # count, so that the figures below are about the scan; the full collection's cost is printed.
    t0 = time.perf_counter()
    gc.collect()
    full_gc_ms = (time.perf_counter() - t0) * 1000
    gc.callbacks.append(on_gc)
    clock.start()
    probe.start()
    QTimer.singleShot(200, start)  # from inside the event loop, as a click would
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    probe.stop()
    gc.callbacks.remove(on_gc)
    rows = page.model.rowCount()
    window.close()
    window.wait_for_workers()
    shutil.rmtree(tmp, ignore_errors=True)
    if "failed" in marks:
        raise SystemExit(f"the scan failed: {marks['failed']}")
    if "checked" not in marks:
        raise SystemExit(f"the header check did not finish within {timeout_s:.0f} s")
    times = np.asarray(ticks, dtype=np.float64) / 1e6
    begin = marks["start"] - 2 * interval_ms
    gaps = np.diff(times[times >= begin])
    worst = int(np.argmax(gaps))
    return {
        "count_shown": marks["count_shown"] - marks["start"],
        "first_progress": marks.get("first_progress", float("nan")) - marks["start"],
        "set_folder": marks["set_folder_returned"] - marks["start"],
        "checked": marks["checked"] - marks["start"],
        "count": marks["count"], "readable": marks["readable"], "rows": rows,
        "ticks": len(gaps), "max_gap": float(gaps.max()),
        "max_gap_at": float(times[times >= begin][worst] - marks["start"]),
        "p99_gap": float(np.percentile(gaps, 99)), "median_gap": float(np.median(gaps)),
        "gaps_over_50": int((gaps > 50).sum()), "gaps_over_100": int((gaps > 100).sum()),
        "longest": [(float(gaps[i]), float(times[times >= begin][i] - marks["start"]))
                    for i in np.argsort(gaps)[::-1][:5]],
        "platform": app.platformName(),
        "full_gc_ms": full_gc_ms,
        "collections": collections,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--files", type=int, default=100_000, help="number of image files (default 100,000)")
    parser.add_argument("--dir", help="folder for the files (reused if it already holds the same set; "
                                      "default: a temporary folder, deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes writing the files")
    parser.add_argument("--repeats", type=int, default=3, help="warm scans (the median is printed)")
    parser.add_argument("--no-inspect", action="store_true", help="skip timing the header check on its own")
    parser.add_argument("--gui", action="store_true", help="also time the data page of the real window")
    parser.add_argument("--interval-ms", type=int, default=10, help="period of the event-loop probe")
    parser.add_argument("--settle-s", type=float, default=1.0, help="probing after the header check ends")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one scan_folder call")
    args = parser.parse_args(argv)

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sslstudio-scan100k-")) / "images"
    n = int(args.files)
    try:
        gen = generate(root, n, max(1, args.processes))
        rows = [("files", f"{n:,} images ({n // 4:,} JPEG, {n - n // 4:,} PNG, 16-24 px) in "
                          f"{-(-n // FILES_PER_FOLDER):,} folders, in {root}"),
                ("generating", f"{gen:.1f} s" if gen else "reused the existing set")]
        eng = time_engine(root, n, max(1, args.repeats), not args.no_inspect)
        rows += [("scan_folder, first in this process", f"{eng['scan_first']:.2f} s"),
                 (f"scan_folder, warm (median of {args.repeats})", f"{eng['scan_warm']:.2f} s"),
                 ("other files ignored", f"{eng['ignored']:,}")]
        if "inspect" in eng:
            rows.append(("inspect_images (header check)", f"{eng['inspect']:.2f} s"))
        if args.profile:
            import cProfile
            import pstats

            from sslstudio.data import scan_folder

            prof = cProfile.Profile()
            prof.runcall(scan_folder, root)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(12)
        if args.gui:
            gui = time_window(root, n, args.interval_ms, args.settle_s, args.timeout_s)
            rows += [("window: platform", gui["platform"]),
                     ("window: set_folder() returned after", f"{gui['set_folder']:.0f} ms"),
                     ("window: first progress after", f"{gui['first_progress']:.0f} ms"),
                     ("window: count shown after", f"{gui['count_shown'] / 1000:.2f} s ({gui['count']:,} images, "
                                                   f"{gui['rows']:,} rows)"),
                     ("window: header check done after", f"{gui['checked'] / 1000:.2f} s "
                                                         f"({gui['readable']:,} readable)"),
                     (f"window: {args.interval_ms} ms ticks", f"{gui['ticks']:,}"),
                     ("window: gap between ticks, median / p99", f"{gui['median_gap']:.1f} / {gui['p99_gap']:.1f} ms"),
                     ("window: longest gap (blocking)",
                      f"{gui['max_gap']:.0f} ms, at {gui['max_gap_at'] / 1000:.2f} s"),
                     ("window: gaps over 50 / 100 ms", f"{gui['gaps_over_50']} / {gui['gaps_over_100']}"),
                     ("window: 5 longest gaps (ms at s)",
                      ", ".join(f"{gap:.0f} at {at / 1000:.2f}" for gap, at in gui["longest"])),
                     ("window: garbage collections (generation: count, longest)",
                      "; ".join(f"{g}: {sum(1 for c, _ in gui['collections'] if c == g)}, "
                                f"{max((ms for c, ms in gui['collections'] if c == g), default=0):.0f} ms"
                                for g in (0, 1, 2))),
                     ("window: one full collection (before probing)", f"{gui['full_gc_ms']:.0f} ms")]
        width = max(len(k) for k, _ in rows)
        print()
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        ok = eng["scan_first"] < 10 and (not args.gui or gui["max_gap"] < 100)
        print(f"{'target':<{width}}  scan under 10 s{', longest gap under 100 ms' if args.gui else ''}: "
              f"{'met' if ok else 'NOT met'}")
        return 0
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
