"""The ``sslstudio`` command line: argument parsing and printing only; the work is in the engine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from sslstudio.errors import JobError, RunBusyError, SSLStudioError
from sslstudio.figures import metric_text, pct, sig3


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressPrinter:
    """Turns engine events into a progress bar with ETA (a TTY) or periodic log lines (a pipe)."""

    def __init__(self, stream=None, width: int = 28):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self._last = 0.0
        self._line_open = False

    def _write_bar(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text[:200].ljust(120))
            self._line_open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _newline(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False

    def __call__(self, event) -> None:
        kind = event.kind
        if kind == "step":
            now = time.monotonic()
            last_step = event.step == event.steps_per_epoch
            every = max(1, event.steps_per_epoch // 4)
            if self.tty and now - self._last < 0.2 and not last_step:
                return
            if not self.tty and event.step % every and not last_step:
                return
            self._last = now
            frac = event.global_step / max(event.total_steps, 1)
            filled = int(self.width * frac)
            metric = ("" if event.metric is None else
                      f" {event.metric_name[:3]} {metric_text(event.metric_name, event.metric)}")
            self._write_bar(f"epoch {event.epoch + 1}/{event.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                            f"{100 * frac:3.0f}% loss {sig3(event.loss)}{metric} | {event.samples_per_s:,.0f} samples/s "
                            f"({event.images_per_s:,.0f} img/s) | ETA {_fmt_time(event.eta_s)}")
        elif kind == "progress":
            frac = event.done / max(event.total, 1)
            filled = int(self.width * frac)
            eta = "" if event.eta_s is None else f" | ETA {_fmt_time(event.eta_s)}"
            self._write_bar(f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:3.0f}%{eta} | {event.message}")
        elif kind == "epoch":
            if "repeat" in event.extra:
                return  # a comparison's fine-tuning epochs: its progress line says enough
            job = event.extra.get("mode")
            if job and (event.epoch + 1) % 10 and event.epoch + 1 != event.epochs:
                return  # fine-tuning jobs: every 10th epoch and the last
            self._newline()
            name = event.metric_name
            parts = [f"epoch {event.epoch + 1}/{event.epochs}:", f"train loss {sig3(event.train_loss)}"]
            if event.train_metric is not None:
                parts.append(f"train {name} {metric_text(name, event.train_metric)}")
            label = "test" if event.extra.get("mode") else "held-out"
            if event.val_metric is not None:
                parts.append(f"{label} {name} {metric_text(name, event.val_metric)}")
            if event.samples_per_s:
                parts.append(f"{event.samples_per_s:,.0f} samples/s")
            parts.append(f"ETA {_fmt_time(event.eta_s)}")
            self.stream.write("  ".join(parts) + "\n")
            from sslstudio.tasks.contrastive import spread_text

            spread = spread_text(event.extra)
            if spread:
                self.stream.write(f"  {spread}\n")
            knn = event.extra.get("monitor_knn")
            if knn:
                from sslstudio.evaluation.monitor import format_monitor

                line = format_monitor(knn, event.extra.get("monitor_knn_random"))
                self.stream.write(f"  {line} [{event.extra.get('monitor_s', 0):.1f} s]\n")
        elif kind == "log":
            self._newline()
            prefix = "warning: " if event.level == "warning" else ""
            self.stream.write(prefix + event.message + "\n")
        elif kind == "checkpoint":
            pass
        elif kind == "failed":
            self._newline()
        self.stream.flush()


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SSLStudioError(f"--option takes KEY=VALUE; got {pair!r}.")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# -- subcommands -------------------------------------------------------------------------------
def cmd_tasks(args) -> int:
    from sslstudio.tasks import get_task, list_tasks

    infos = [get_task(name)().info() for name in list_tasks()]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    for info in infos:
        print(f"{info['name']:<12} {info['description']}")
        print(f"{'':<12} paper: {info['paper']}")
        print(f"{'':<12} metric: {info['metric']}")
    return 0


def cmd_demo_data(args) -> int:
    from sslstudio.data import write_demo_data

    counts = write_demo_data(args.dir, seed=args.seed, size=args.size, n_unlabelled=args.n_unlabelled,
                             n_train_per_class=args.n_train_per_class, n_test_per_class=args.n_test_per_class)
    print(f"demo data written to {args.dir}: {json.dumps(counts, default=str)}")
    return 0


def cmd_preview(args) -> int:
    from sslstudio.engine.preview import check_preview, save_preview
    from sslstudio.tasks import create_task

    check_preview(args.n, args.image_size, args.seed, args.out)  # --n, --image-size, --out: before any work
    task = create_task(args.task, _options(args.option), args.image_size)
    path = save_preview(task, args.data, args.out, n=args.n, seed=args.seed)
    print(f"wrote {path} ({args.n} {args.task} samples)")
    return 0


def _cache_dir(args) -> str | None:
    """The decode cache folder of a command (``--no-cache``: none)."""
    if getattr(args, "no_cache", False):
        return None
    if getattr(args, "cache_dir", None):
        return args.cache_dir
    from sslstudio.data.cache import default_cache_dir

    return str(default_cache_dir())


#: ``sslstudio pretrain`` arguments and the :class:`~sslstudio.engine.PretrainConfig` fields they set.
_PRETRAIN_ARGS = ("task", "data", "arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule",
                  "warmup_epochs", "image_size", "device", "precision", "seed", "workers", "holdout",
                  "compile", "monitor_labelled", "monitor_every")


def _add_pretrain_settings(parser) -> None:
    """The run settings of ``sslstudio pretrain``, generated from :class:`~sslstudio.engine.PretrainConfig`'s
    declaration (flag, type, choices, help; every default ``None`` so that resume knows what was typed)."""
    from sslstudio.engine import PretrainConfig
    from sslstudio.settings import add_arguments

    add_arguments(parser, PretrainConfig, [n for n in _PRETRAIN_ARGS if n not in ("task", "data")],
                  defaults={"workers": min(4, os.cpu_count() or 1)})


def _typed_pretrain_settings(args) -> dict:
    """The settings the user typed (argparse leaves every other one at ``None``)."""
    typed = {k: getattr(args, k) for k in _PRETRAIN_ARGS if getattr(args, k) is not None}
    if not typed.get("compile"):
        typed.pop("compile", None)
    if args.option:
        typed["task_options"] = _options(args.option)
    if args.no_cache or args.cache_dir:
        typed["cache_dir"] = _cache_dir(args)
    return typed


def cmd_pretrain(args) -> int:
    from sslstudio.engine import PretrainConfig, pretrain, resume_config

    typed = _typed_pretrain_settings(args)
    if args.resume:  # every setting from the run's config.json; typed flags are checked against it
        config = resume_config(args.out, **typed)
    else:
        if args.task is None:
            raise SSLStudioError("--task is required (see `sslstudio tasks`).")
        if args.data is None:
            raise SSLStudioError("--data is required: the folder of unlabelled images.")
        typed.setdefault("workers", min(4, os.cpu_count() or 1))
        typed.setdefault("cache_dir", _cache_dir(args))
        config = PretrainConfig(out=args.out, **typed)
    summary = pretrain(config, on_event=ProgressPrinter())
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports for the run
        _print_pretrain_summary(summary, args.out)
    return _pretrain_exit(summary["status"])


def _pretrain_exit(status: str) -> int:
    """``sslstudio pretrain``'s exit status: a run that ended but did not learn is not an error of the
    program (0); a diverged run is a failed job (1); a stopped run is 130, as after Ctrl+C."""
    from sslstudio.engine import verdict

    return {verdict.FINISHED: 0, verdict.NOT_LEARNT: 0, verdict.DIVERGED: 1, verdict.CANCELLED: 130}.get(status, 1)


def _print_pretrain_summary(summary: dict, out: str) -> None:
    """The run's figures, then its status again with what to try when it did not learn (the last line)."""
    metric = summary["metric"]
    train, held_out = (metric_text(metric, summary.get(f"final_{part}_{metric}")) for part in ("train", "val"))
    best = summary.get("best") or {}
    best_text = (f" (best {metric_text(metric, best['score'])} at epoch {best['epoch'] + 1})"  # epochs from 1
                 if best.get("epoch") is not None and summary["epochs_completed"] > 1 else "")
    print(f"{summary['status']}: {summary['epochs_completed']}/{summary['epochs']} epochs in "
          f"{_fmt_time(summary['time_s'])}; train {metric} {train}, held-out {metric} {held_out}{best_text}, "
          f"{summary['samples_per_s'] or 0:,.0f} samples/s; skipped {summary['skipped']} file(s). Run: {out}")
    if summary.get("advice"):
        print(f"{summary['status']}: {summary['advice']}")
    elif summary["status"] == "cancelled" and summary["epochs_completed"]:
        print(f"cancelled: continue with `sslstudio pretrain --resume --out {out}`")


#: The numeric settings of ``finetune`` and ``compare``; their options come from the declarations
#: (:class:`~sslstudio.evaluation.FinetuneConfig`, :class:`~sslstudio.evaluation.compare.CompareSettings`).
_FINETUNE_NUMBERS = ("per_class", "fraction", "epochs", "batch_size", "lr", "image_size", "seed")
_EXPLORE_NUMBERS = ("limit", "image_size", "seed", "clusters", "neighbours")
_COMPARE_NUMBERS = ("per_class", "fraction", "repeats", "repeats_all", "knn_k", "knn_t", "epochs_all",
                    "image_size", "test_fraction", "seed")


def _typed(args, names) -> dict:
    """The settings among ``names`` that the user typed (the others take the declared defaults)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def cmd_finetune(args) -> int:
    from sslstudio.evaluation import FinetuneConfig, finetune

    summary = finetune(FinetuneConfig(init=args.init, labelled=args.labelled, test=args.test, mode=args.mode,
                                      out=args.out, arch=args.arch, layer=args.layer, device=args.device,
                                      weights=args.weights, trust_code=args.trust_torchscript,
                                      **_typed(args, _FINETUNE_NUMBERS)),
                       on_event=ProgressPrinter())
    print(f"{summary['status']}: test accuracy {pct(summary['test_accuracy'])} ({args.init}, {args.mode}, "
          f"{summary['layer']}); written to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from sslstudio.evaluation import compare

    inits = _csv(args.init) if args.init is not None else []
    if args.init is not None and not inits:
        raise SSLStudioError(f"--init {args.init!r} names no run directory or weights file; give them "
                             "comma-separated, or leave --init out to compare the baselines only.")
    numbers = _typed(args, _COMPARE_NUMBERS)
    if args.epochs is not None:  # the alias
        numbers.setdefault("epochs_all", args.epochs)
    result = compare(args.labelled, args.out, inits, test=args.test,
                     baselines=_csv(args.baselines), modes=_csv(args.modes), layers=args.layers, arch=args.arch,
                     label_curve=args.label_curve, head=args.head, device=args.device, weights=args.weights,
                     feature_cache=not args.no_feature_cache, cache_dir=args.feature_cache_dir,
                     on_event=ProgressPrinter(), trust_code=args.trust_torchscript, **numbers)
    print((Path(args.out) / "results.md").read_text())
    if (Path(args.out) / "label_curve.png").is_file():
        print(f"label curve: {Path(args.out) / 'label_curve.png'}")
    return 0 if any(r.get("test_accuracy") is not None for r in result["rows"]) else 1


def cmd_explore(args) -> int:
    """The embedding map and nearest-neighbour gallery (plus activation maps and shortcut checks) into --out."""
    from sslstudio.explore import ExploreConfig, explore

    inits = _csv(args.init)
    if args.init is not None and not inits:
        raise SSLStudioError(f"--init {args.init!r} names no initialisation; give random, imagenet, run "
                             "directories or weights files, comma-separated.")
    config = ExploreConfig(out=args.out, run=args.run, inits=tuple(inits), data=args.data, labelled=args.labelled,
                           stage=args.stage, method=args.method, query=args.query, device=args.device,
                           arch=args.arch, weights=args.weights, feature_cache=not args.no_feature_cache,
                           feature_cache_dir=args.feature_cache_dir, trust_code=args.trust_torchscript,
                           projector=args.projector, **_typed(args, _EXPLORE_NUMBERS))
    result = explore(config, emit=ProgressPrinter())
    names = ", ".join(e["label"] for e in result["inits"])
    files = ", ".join(Path(f).name for f in result["files"])
    print(f"explore: {len(result['paths']):,} images, {names}, {result['stage']}, {result['method']} "
          f"(coloured by {result['colour_by']}) in {_fmt_time(result['timings']['total_s'])}; wrote {files} "
          f"to {args.out}")
    return 0


def cmd_export(args) -> int:
    from sslstudio.export import export_run

    paths = export_run(args.run_dir, args.out, _csv(args.format) or None, which=args.checkpoint)
    for p in paths:
        print(p)
    return 0


def cmd_bench(args) -> int:
    from sslstudio.engine.bench import format_bench, run_bench

    result = run_bench(args.data, args.task, args.arch, args.image_size, args.batch_size, args.device,
                       args.precision, args.workers, args.steps, seed=args.seed, train_images=args.train_images,
                       compile=args.compile, log=lambda m: print(m, file=sys.stderr))
    print(format_bench(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_gui(args) -> int:
    """Open the window (the only command that loads Qt)."""
    try:
        from sslstudio.gui.app import run_app
    except ImportError as exc:
        raise SSLStudioError(f"the window needs PySide6 and pyqtgraph, which could not be imported ({exc}); "
                             "reinstall sslstudio with pip, or use the command line.") from None
    return run_app(getattr(args, "data", None), getattr(args, "workspace", None), getattr(args, "labelled", None))


def cmd_demo(args) -> int:
    """The demo data (written once), then the window on it, or the whole workflow headless."""
    from sslstudio.data import write_demo_data

    root = Path(args.dir).resolve()
    data = root / "data"
    if not (data / "unlabelled").is_dir():
        print(f"writing demo data to {data}", file=sys.stderr)
        write_demo_data(data, seed=0)
    if not args.headless:
        args.data, args.labelled, args.workspace = str(data / "unlabelled"), str(data / "labelled"), str(root / "workspace")
        return cmd_gui(args)
    return _demo_headless(args, root, data)


def _demo_headless(args, root: Path, data: Path) -> int:
    from sslstudio.engine import PretrainConfig, pretrain
    from sslstudio.engine.preview import save_preview
    from sslstudio.evaluation import compare
    from sslstudio.export import export_run
    from sslstudio.tasks import create_task

    task = create_task("rotation", image_size=args.image_size)
    grid = save_preview(task, str(data / "unlabelled"), str(root / "preview-rotation.png"), n=8)
    print(f"preview: {grid}", file=sys.stderr)
    run_dir = root / "runs" / "rotation"
    config = PretrainConfig(task="rotation", data=str(data / "unlabelled"), out=str(run_dir), arch=args.arch,
                            epochs=args.epochs, batch_size=32, image_size=args.image_size, workers=args.workers,
                            resume=(run_dir / "checkpoints" / "last.pt").is_file()
                            and not (run_dir / "summary.json").is_file())
    if not (run_dir / "summary.json").is_file():
        pretrain(config, on_event=ProgressPrinter())
    compare(str(data / "labelled"), str(root / "compare"), [str(run_dir)], baselines=["imagenet", "random"],
            modes=["head", "knn"], layers="all", on_event=ProgressPrinter())
    export_run(run_dir, root / "export")
    print((root / "compare" / "results.md").read_text())
    print(f"backbone exported to {root / 'export'}; load it with sslstudio.load_backbone('{root / 'export'}')")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sslstudio.evaluation import FinetuneConfig
    from sslstudio.evaluation.compare import CompareSettings
    from sslstudio.explore import ExploreConfig
    from sslstudio.settings import add_arguments

    p = argparse.ArgumentParser(prog="sslstudio", description="Self-supervised learning with pretext tasks.")
    from sslstudio import __version__

    p.add_argument("--version", action="version", version=f"sslstudio {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("tasks", help="list the pretext tasks")
    s.add_argument("--json", action="store_true", help="print the list as JSON")
    s.set_defaults(func=cmd_tasks)

    s = sub.add_parser("demo-data", help="write the procedurally drawn demo image set")
    s.add_argument("dir")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=64, help="image side in pixels")
    s.add_argument("--n-unlabelled", type=int, default=400)
    s.add_argument("--n-train-per-class", type=int, default=30)
    s.add_argument("--n-test-per-class", type=int, default=15)
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("preview", help="write a grid of generated samples with their labels")
    s.add_argument("--task", required=True)
    s.add_argument("--data", required=True, help="folder of images")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--n", type=int, default=16, help="number of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("--option", action="append", metavar="KEY=VALUE", help="task setting (repeatable)")
    s.set_defaults(func=cmd_preview)

    s = sub.add_parser("pretrain", help="pretrain a backbone on a pretext task")
    s.add_argument("--task", help="the pretext task (see sslstudio tasks)")
    s.add_argument("--data", help="folder of unlabelled images (searched recursively)")
    s.add_argument("--out", required=True, help="run directory")
    _add_pretrain_settings(s)
    s.add_argument("--option", action="append", metavar="KEY=VALUE", help="task setting (repeatable)")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with the run's own settings "
                        "(device, workers and the monitor may change; flags that would change the run are refused)")
    s.add_argument("--cache-dir", help="decode cache folder (default $SSLSTUDIO_CACHE_DIR or ~/.cache/sslstudio/decoded)")
    s.add_argument("--no-cache", action="store_true", help="decode the images without the decode cache")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("finetune", help="fine-tune a backbone on labelled images")
    s.add_argument("--init", required=True, help="RUN_DIR, imagenet, random or a weights file")
    s.add_argument("--labelled", required=True, help="DIR/<class>/... or DIR/train/<class>/...")
    s.add_argument("--test", help="test folder (default DIR/test, else a seeded stratified split)")
    s.add_argument("--mode", default="head", choices=["head", "all"])
    s.add_argument("--out", required=True)
    s.add_argument("--arch")
    s.add_argument("--layer", help="backbone stage the head-only probe reads (default: last)")
    add_arguments(s, FinetuneConfig, _FINETUNE_NUMBERS)
    s.add_argument("--device", default="auto")
    s.add_argument("--weights", help="ImageNet weights file for --init imagenet")
    s.add_argument("--trust-torchscript", action="store_true",
                   help="accept TorchScript archives as weights; opening one runs code from the file, so only "
                        "for files whose source you trust")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("compare", help="probe, kNN and fine-tune every initialisation; intervals over label draws",
                       description="Compare initialisations on a labelled folder: a linear (or MLP) probe and kNN "
                       "on frozen features of each stage, and all-layer fine-tuning, over repeated label draws, "
                       "with 95% intervals and paired verdicts against random init.")
    s.add_argument("--labelled", required=True, help="DIR/<class>/... or DIR/train/<class>/... (+ DIR/test)")
    s.add_argument("--test", help="test folder (default DIR/test, else a seeded stratified split)")
    s.add_argument("--init", help="run directories (or weights files), comma-separated")
    s.add_argument("--baselines", default="imagenet,random", help="imagenet and/or random (default both)")
    s.add_argument("--modes", default="head,knn,all", help="head (probe), knn, all (every layer); default all three")
    s.add_argument("--layers", default="last", help="stages read by head and knn: last, all, or names")
    s.add_argument("--out", required=True)
    s.add_argument("--arch")
    s.add_argument("--label-curve", metavar="B1,B2,...",
                   help="several budgets of images per class, e.g. 1,5,10,20,50,all (writes label_curve.png)")
    s.add_argument("--head", default="linear", choices=["linear", "mlp"],
                   help="head probe: logistic regression (L2 chosen on a validation split) or a 2-hidden-layer MLP")
    s.add_argument("--epochs", type=int, help="alias of --epochs-all")
    add_arguments(s, CompareSettings, _COMPARE_NUMBERS,
                  helps={"knn_k": "DINO's; 200 for InstDisc", "knn_t": "DINO's; 0.1 for InstDisc"})
    s.add_argument("--epochs-head", type=int, help=argparse.SUPPRESS)  # the probes fit to convergence
    s.add_argument("--device", default="auto")
    s.add_argument("--weights", help="ImageNet weights file for the imagenet baseline")
    s.add_argument("--no-feature-cache", action="store_true", help="compute every feature afresh (same results)")
    s.add_argument("--feature-cache-dir", help="feature cache folder (default $SSLSTUDIO_CACHE_DIR/features "
                   "or ~/.cache/sslstudio/features)")
    s.add_argument("--trust-torchscript", action="store_true",
                   help="accept TorchScript archives as weights; opening one runs code from the file, so only "
                        "for files whose source you trust")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("explore", help="embedding map and nearest-neighbour gallery of a backbone stage",
                       description="Look inside backbones: the chosen stage's features of up to --limit images "
                       "projected to 2-D (embedding.png/.csv, coloured by class or by k-means cluster), the "
                       "query image's nearest images under each initialisation (neighbours.png), and summary.json.")
    s.add_argument("--run", help="run directory to explore")
    s.add_argument("--init", help="other initialisations, comma-separated: random, imagenet, run directories, "
                   "weights files")
    s.add_argument("--data", help="folder of unlabelled images (searched recursively)")
    s.add_argument("--labelled", help="DIR/<class>/... or DIR/train/<class>/... (+ DIR/test): explored instead of "
                   "--data, points coloured by class")
    s.add_argument("--stage", help="backbone stage (default layer3 when the architecture has it, else the last)")
    s.add_argument("--method", default="tsne", help="pca (instant), tsne or umap (default tsne)")
    s.add_argument("--out", required=True, help="folder for the files")
    s.add_argument("--query", help="image file (in the set or not) or row number of the gallery's query "
                   "(default: the first image)")
    add_arguments(s, ExploreConfig, _EXPLORE_NUMBERS)
    s.add_argument("--arch", help="architecture of random / imagenet / weights-file inits (default: the run's, "
                   "else resnet18)")
    s.add_argument("--device", default="auto")
    s.add_argument("--weights", help="ImageNet weights file for --init imagenet")
    s.add_argument("--projector", action="store_true",
                   help="also write the features for TensorBoard's embedding projector (OUT/projector; needs the "
                        "tensorboard extra)")
    s.add_argument("--no-feature-cache", action="store_true", help="compute every feature afresh (same results)")
    s.add_argument("--feature-cache-dir", help="feature cache folder (default $SSLSTUDIO_CACHE_DIR/features "
                   "or ~/.cache/sslstudio/features)")
    s.add_argument("--trust-torchscript", action="store_true",
                   help="accept TorchScript archives as weights; opening one runs code from the file, so only "
                        "for files whose source you trust")
    s.set_defaults(func=cmd_explore)

    s = sub.add_parser("export", help="export a run's backbone")
    s.add_argument("run_dir")
    s.add_argument("--out", required=True)
    s.add_argument("--format", default="pt,safetensors,torchscript,onnx")
    s.add_argument("--checkpoint", default="last", choices=["last", "best"])
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", help="samples/s of a naive loader, the pipeline, the model step and the real loop")
    s.add_argument("--data", required=True, help="folder of images")
    s.add_argument("--task", default="rotation")
    s.add_argument("--arch", default="resnet18")
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("--batch-size", type=int, default=64, help="source images per batch")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    s.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    s.add_argument("--steps", type=int, default=20, help="timed batches per figure (after 3 warm-up batches)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train-images", type=int, default=512, help="images of the one-epoch real-loop run (0: all)")
    s.add_argument("--compile", action="store_true", help="also time the training step under torch.compile")
    s.add_argument("--json", help="also write the figures to this JSON file")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("gui", help="open the window")
    s.add_argument("data", nargs="?", help="folder of unlabelled images to open")
    s.add_argument("--labelled", help="labelled folder for fine-tuning")
    s.add_argument("--workspace", help="folder for runs, comparisons and exports")
    s.set_defaults(func=cmd_gui)

    s = sub.add_parser("demo", help="write the demo data and open the window on it (--headless: the whole "
                                    "workflow on the command line)")
    s.add_argument("--dir", default="sslstudio-demo")
    s.add_argument("--headless", action="store_true",
                   help="demo data -> preview -> rotation pretraining -> compare -> export, no window")
    s.add_argument("--arch", default="resnet18")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--image-size", type=int, default=32)
    s.add_argument("--workers", type=int, default=2)
    s.set_defaults(func=cmd_demo)
    return p


def _interrupted(args) -> str:
    """What Ctrl-C leaves: for a pretraining run, whether there is a checkpoint to continue from."""
    if getattr(args, "command", None) != "pretrain":
        return "interrupted."
    from sslstudio.runs import RunDir

    if RunDir(args.out).last_checkpoint.is_file():
        return f"interrupted; the last checkpoint is kept: continue with sslstudio pretrain --out {args.out} --resume"
    return "interrupted before the first epoch ended: there is no checkpoint; run the same command again to start over."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no subcommand: the window
        args.func = cmd_gui
    try:
        return int(args.func(args) or 0)
    except (JobError, RunBusyError) as exc:  # a job that failed, or could not start beside another
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except SSLStudioError as exc:  # bad input: a setting, a folder, a file
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment said no (a full disk, a read-only folder...)
        from sslstudio.fileutil import os_reason

        where = f" ({exc.filename})" if exc.filename else ""
        print(f"\nerror: the command stopped on a file it could not read or write: {os_reason(exc)}{where}.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed job is one sentence; the traceback on request
        if os.environ.get("SSLSTUDIO_DEBUG"):
            raise
        print(f"\nerror: the job failed: {type(exc).__name__}: {exc} (set SSLSTUDIO_DEBUG=1 to see where).",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
