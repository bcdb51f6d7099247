"""How long a comparison takes: head and kNN probes at every stage, repeated label draws, a label curve.

Prints the wall time of each scenario, without and with the feature cache, and where the time went
(feature extraction vs probes), e.g.::

    OMP_NUM_THREADS=2 python benchmarks/compare_speed.py --labelled ../shared/data/labelled \\
        --run runs/rot10 --repeats 5 --per-class 20 --curve 1,5,10,20,50,all

Scenarios: (1) one budget (``--per-class``) with ``--repeats`` draws; (2) the label curve with the
same repeats. The first runs with an empty feature cache (features computed and stored), the curve
once without the cache, and both again from the warm cache.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from sslstudio.evaluation import compare


def timed(label: str, **kwargs) -> dict:
    phases = {"features": 0.0}
    state = {"t": time.perf_counter(), "feature_start": None}

    def on_event(ev):
        if ev.kind == "log" and ": features of " in ev.message:
            state["feature_start"] = time.perf_counter()
        elif ev.kind == "progress" and ": features " in ev.message and state["feature_start"] is not None:
            phases["features"] += time.perf_counter() - state["feature_start"]
            state["feature_start"] = None

    t0 = time.perf_counter()
    result = compare(on_event=on_event, **kwargs)
    total = time.perf_counter() - t0
    rows = [r for r in result["rows"] if r.get("test_accuracy") is not None]
    print(f"{label:<44} {total:7.1f} s   features {phases['features']:6.1f} s   probes "
          f"{total - phases['features']:6.1f} s   rows {len(rows):3d}   cache hits {result['meta']['feature_cache']['hits']}")
    return {"label": label, "total_s": total, "features_s": phases["features"], "rows": len(rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labelled", required=True, help="DIR/train/<class> + DIR/test/<class>")
    p.add_argument("--run", action="append", default=[], help="a pretraining run folder (repeatable)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--curve", default="1,5,10,20,50,all")
    p.add_argument("--out", default=None, help="keep the comparison folders here")
    args = p.parse_args()

    work = Path(args.out or tempfile.mkdtemp(prefix="sslstudio-compare-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="sslstudio-feature-cache-"))
    common = dict(labelled=args.labelled, inits=args.run, baselines=["random"], modes=["head", "knn"],
                  layers="all", arch=args.arch, image_size=args.image_size, repeats=args.repeats, device="cpu")
    print(f"{len(args.run) + 1} initialisations x head+kNN x 4 stages, {args.repeats} repeats, "
          f"{args.image_size} px, {args.arch}")
    try:
        timed(f"{args.per_class} per class, cold (empty cache)", out=str(work / "one-cold"), per_class=args.per_class,
              cache_dir=str(cache), **common)
        timed(f"{args.per_class} per class, warm cache", out=str(work / "one-warm"), per_class=args.per_class,
              cache_dir=str(cache), **common)
        timed(f"curve {args.curve}, cold (no cache)", out=str(work / "curve-cold"), label_curve=args.curve,
              feature_cache=False, **common)
        timed(f"curve {args.curve}, warm cache", out=str(work / "curve-warm"), label_curve=args.curve,
              cache_dir=str(cache), **common)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
