"""``sslstudio explore``: the embedding map and nearest-neighbour gallery of one or more initialisations,
plus activation maps and shortcut checks when those modules are present.

One exploration, phase by phase: the images (:func:`~sslstudio.explore.data.load_explore_set`) are
decoded once; for each initialisation (a run directory, ``random``, ``imagenet`` or a weights file)
the chosen stage's features come from the comparison's feature cache
(:mod:`sslstudio.evaluation.features`) or are computed once, are averaged per channel and
L2-normalised (:func:`~sslstudio.explore.embedding.map_features`), projected to 2-D
(:func:`~sslstudio.explore.embedding.project`) and searched for the query's neighbours
(:func:`~sslstudio.explore.neighbours.nearest`). Every initialisation maps the same images in the same
row order, so a window links a selection across maps by row index.

Files written to ``out``:

``embedding.png`` / ``embedding.csv``
    the first initialisation's map (``path,x,y,label``; label = class or ``cluster N``); with several
    initialisations also ``embedding_<name>.png`` / ``.csv`` for each;
``neighbours.png``
    one row per initialisation: the query, then its nearest images with class and cosine similarity;
``summary.json``
    the settings, the query, every initialisation's neighbours, projection notes, files and timings;
``activation_*.png``, ``shortcuts.md``
    from :mod:`sslstudio.explore.activations` / :mod:`sslstudio.explore.shortcuts`, when importable.

Points are coloured by class for a labelled folder; otherwise by k-means clusters of the *first*
initialisation's features, the same colours on every map (so a second map shows where the first one's
groups went). Progress goes to ``emit`` as :class:`~sslstudio.engine.events.ProgressEvent` /
:class:`~sslstudio.engine.events.LogEvent` (as :func:`sslstudio.evaluation.compare` does), and
``control.checkpoint()`` is checked between phases and feature batches; a t-SNE or UMAP runs in its own
process, which a Cancel ends at once (:func:`~sslstudio.explore.embedding.project` with ``control``).
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sslstudio.engine.events import Cancelled, EventSink, LogEvent, ProgressEvent, RunControl
from sslstudio.errors import ConfigError, DataError, SSLStudioError
from sslstudio.evaluation.compare import init_label
from sslstudio.evaluation.features import FeatureCache, cached_features, extract_stages, images_digest, weights_digest
from sslstudio.evaluation.finetuning import resolve_init, run_defaults
from sslstudio.explore.data import DEFAULT_LIMIT, ExploreSet, find_path, load_explore_set, load_query_image
from sslstudio.explore.embedding import (METHODS, MIN_IMAGES, check_method, cluster_labels, cluster_names,
                                         map_features, project, write_embedding_csv, write_embedding_png)
from sslstudio.explore.neighbours import DEFAULT_K, GalleryRow, Neighbours, nearest, write_gallery_png
from sslstudio.runs import RunDir, atomic_write_json, is_run_dir
from sslstudio.settings import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_settings, param

SUMMARY_FORMAT = 1
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


@dataclass
class ExploreConfig:
    """Settings of one exploration (``sslstudio explore``). ``run`` and ``inits`` (``random``, ``imagenet``,
    run directories, weights files) together name the initialisations, ``run`` first; ``labelled``
    (coloured by class) is explored when given, else ``data``."""

    out: str
    run: str | None = None
    inits: tuple = ()
    data: str | None = None
    labelled: str | None = None
    stage: str | None = param(None, "Backbone stage (default layer3 when the architecture has it, else the last).",
                              form=False)
    method: str = param("tsne", "Projection to 2-D: pca (instant), tsne or umap.", choices=METHODS)
    query: str | int | None = None  # a row of the set, or an image file (in the set or not); default row 0
    limit: int = param(DEFAULT_LIMIT, "Most images in the map (a seeded subset of a larger folder).",
                       min=MIN_IMAGES, max=1_000_000)
    image_size: int | None = param(None, "Side of the square inputs (default: the run's, else 64).",
                                   min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE, unit="px")
    device: str = "auto"
    seed: int = param(0, "Seed of the subset, the projection and k-means.", min=0)
    clusters: int = param(10, "k-means clusters that colour an unlabelled map.", min=1, max=100)
    neighbours: int = param(DEFAULT_K, "Nearest images shown per initialisation.", min=1, max=64)
    arch: str | None = None
    weights: str | None = None  # an ImageNet weights file for init imagenet
    feature_cache: bool = True
    feature_cache_dir: str | None = None
    activation_stages: tuple = ()  # stages of the activation maps (default: every stage)
    projector: bool = param(False, "Also write the features to TensorBoard's embedding projector "
                                   "(<out>/projector; tensorboard --logdir <out>/projector).")
    extras: bool = True  # activation maps and shortcut checks, when their modules are present
    trust_code: bool = False


def explore(config: ExploreConfig, emit: EventSink | None = None, control: RunControl | None = None) -> dict:
    """Run one exploration and write its files into ``config.out`` (see the module doc).

    Returns a dict: ``paths``, ``images`` (uint8 ``[N, S, S, 3]``), ``labels`` (int ``[N]``: class or cluster),
    ``label_names``, ``colour_by`` (``class`` | ``cluster``), ``classes``, ``query`` (``path``, ``index``
    or ``None`` when outside the set), ``inits`` (per initialisation: ``init``, ``label``, ``name``,
    ``coords`` float32 ``[N, 2]``, ``features`` (the L2-normalised pooled rows), ``neighbours``
    (:class:`~sslstudio.explore.neighbours.Neighbours`), ``projection``, ``feature_source``, ``files``),
    ``files``, ``timings``, ``notes``, ``extras`` and the settings. Bad input raises an
    :class:`~sslstudio.errors.SSLStudioError` with one sentence before any work.
    """
    emit = emit or (lambda e: None)
    control = control or RunControl()
    plan = plan_exploration(config)
    with RunDir(config.out).hold("explore"):
        return _Exploration(config, plan, emit, control).run()


def plan_exploration(config: ExploreConfig) -> dict:
    """Check the settings and resolve initialisations, architecture, image size, stage and method
    (one sentence for a bad one; nothing is read but the runs' settings)."""
    from sslstudio.data.scan import check_folder
    from sslstudio.models import arch_stages

    check_settings(config)
    inits = list(dict.fromkeys(([config.run] if config.run else []) + [str(i) for i in config.inits if str(i)]))
    if not inits:
        raise ConfigError("nothing to explore: give --run and/or --init (random, imagenet, a run or a weights file).")
    for init in inits:
        if init not in ("random", "imagenet") and not (is_run_dir(init) or Path(init).is_file()):
            raise ConfigError(f"{init!r} is neither random, imagenet, a run directory (with config.json) nor a "
                              "weights file; check the path.")
    if not (config.data or config.labelled):
        raise ConfigError("give a folder of images to explore: --data (unlabelled) or --labelled.")
    for folder, what in ((config.data, "The image folder"), (config.labelled, "The labelled folder")):
        if folder:
            check_folder(folder, what)
    q = config.query
    if isinstance(q, (str, Path)) and not str(q).strip().isdigit() and not Path(q).expanduser().is_file():
        raise DataError(f"the query image {q} does not exist; give an image file or a row number.")
    info = next((run_defaults(i) for i in inits if run_defaults(i)), {})
    arch = config.arch or info.get("arch") or "resnet18"
    stages = arch_stages(arch)
    stage = config.stage or ("layer3" if "layer3" in stages else stages[-1])
    if stage not in stages:
        raise ConfigError(f"unknown stage {stage!r}; the stages of {arch} are {', '.join(stages)}.")
    return {"inits": inits, "arch": arch, "stage": stage, "stages": stages, "method": check_method(config.method),
            "image_size": int(config.image_size or info.get("image_size") or 64),
            "names": init_file_names(inits)}


def init_file_names(inits: list[str]) -> list[str]:
    """A short, file-safe, unique name per initialisation: ``random``, ``imagenet``, the run folder's name,
    the weights file's stem (``embedding_<name>.png``)."""
    names: list[str] = []
    for init in inits:
        base = init if init in ("random", "imagenet") else (Path(init).name if is_run_dir(init) else Path(init).stem)
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "init"
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


class _Progress:
    """Units of work done, with an ETA from the mean time per unit so far (as the comparison's)."""

    def __init__(self, total: int, emit: EventSink):
        self.total, self.done, self.emit, self.t0 = max(1, total), 0, emit, time.perf_counter()
        self.said = 0.0

    def step(self, message: str, units: int = 1) -> None:
        self.done = min(self.total, self.done + units)
        self.say(message)

    def say(self, message: str, throttle: bool = False) -> None:
        """Emit the progress now; with ``throttle`` (progress inside a phase) at most twice a second."""
        now = time.perf_counter()
        if throttle and now - self.said < 0.5:
            return
        self.said = now
        elapsed = now - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.emit(ProgressEvent(self.done, self.total, message, elapsed, eta))


class _Exploration:
    """One exploration's walk: images -> per initialisation features -> colours -> maps and neighbours ->
    files -> activation maps and shortcut checks -> summary."""

    def __init__(self, config: ExploreConfig, plan: dict, emit: EventSink, control: RunControl):
        from sslstudio.engine.device import resolve_device, resolve_precision

        self.cfg, self.plan, self.emit, self.control = config, plan, emit, control
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.precision = resolve_precision("auto", self.device)
        self.cache = FeatureCache(config.feature_cache_dir, enabled=config.feature_cache)
        # images, query; features + map per initialisation; colours, files, extras, summary
        self.progress = _Progress(6 + 2 * len(plan["inits"]), emit)
        self.timings: dict = {}
        self.notes: list[str] = []
        self.inits: list[dict] = []
        self.unavailable: list[dict] = []
        self.t0 = time.perf_counter()

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogEvent(message, level))

    def run(self) -> dict:
        cfg, plan = self.cfg, self.plan
        self.log(f"explore: {', '.join(init_label(i) for i in plan['inits'])}; {plan['arch']} {plan['stage']}, "
                 f"{METHOD_NAMES[plan['method']]}, {plan['image_size']} px")
        backbones = self.backbones()
        self.images = self.load_images()
        self.query = self.resolve_query()
        for (init, name), backbone in backbones.items():
            self.control.checkpoint()
            self.inits.append(self.init_features(init, name, backbone))
            backbones[(init, name)] = None  # the features are what the rest reads
        self.labels, self.label_names, self.colour_by = self.colours()
        for entry in self.inits:
            self.control.checkpoint()
            self.map_and_neighbours(entry)
        files = self.write_files()
        extras = self.extras() if cfg.extras else {}
        if not cfg.extras:
            self.progress.step("activation maps and shortcut checks not asked for")
        files += [f for e in extras.values() for f in e.get("files", [])]
        return self.finish(files, extras)

    # -- phases ----------------------------------------------------------------------------------
    def load_images(self) -> ExploreSet:
        t = time.perf_counter()
        cfg = self.cfg

        def progress(done: int, total: int) -> None:
            self.control.checkpoint()
            self.progress.say(f"decoding images {done}/{total}", throttle=done < total)

        images = load_explore_set(cfg.data, cfg.labelled, self.plan["image_size"], cfg.limit, cfg.seed, progress)
        if len(images) < MIN_IMAGES:
            raise ConfigError(f"a map needs at least {MIN_IMAGES} images; {len(images)} could be used from "
                              f"{images.source}.")
        if images.skipped:
            self.log(f"{len(images.skipped)} file(s) could not be decoded and are left out", "warning")
        self.images_key = images_digest(images.paths)
        self.timings["images_s"] = time.perf_counter() - t
        self.progress.step(f"images: {images.summary()}")
        return images

    def resolve_query(self) -> dict:
        """The query: a row of the set (default 0) or an image file (its own row when it is in the set)."""
        q, paths = self.cfg.query, self.images.paths
        if q is None or isinstance(q, (int, np.integer)) or (str(q).strip().isdigit() and not Path(str(q)).exists()):
            index = 0 if q is None else int(str(q).strip())
            if not 0 <= index < len(paths):
                raise ConfigError(f"--query {index} is not a row of the {len(paths)} images explored; give 0 to "
                                  f"{len(paths) - 1} or an image file.")
            query = {"path": paths[index], "index": index, "image": self.images.images[index]}
        else:
            index = find_path(paths, q)
            image = (self.images.images[index] if index is not None
                     else load_query_image(q, self.plan["image_size"])[0])
            query = {"path": str(q) if index is None else paths[index], "index": index, "image": image}
        where = f"row {query['index']}" if query["index"] is not None else "outside the set"
        self.progress.step(f"query: {query['path']} ({where})")
        return query

    def backbones(self) -> dict:
        """Every initialisation's backbone, before any image is read; one that cannot be had (ImageNet
        weights offline, say) is a warning and is left out, unless none is left."""
        out, errors = {}, []
        for init, name in zip(self.plan["inits"], self.plan["names"]):
            self.control.checkpoint()
            try:
                out[(init, name)] = resolve_init(init, self.plan["arch"], self.cfg.seed, self.cfg.weights,
                                                 self.cfg.trust_code)[0]
            except SSLStudioError as exc:
                errors.append(exc)
                self.unavailable.append({"init": init, "label": init_label(init), "error": str(exc)})
                self.log(f"{init_label(init)} is left out: {exc}", "warning")
        if not out:
            raise errors[0]
        self.progress.total = 6 + 2 * len(out)
        return out

    def init_features(self, init: str, name: str, backbone) -> dict:
        """The initialisation's pooled, L2-normalised features and the query's (from the cache where present)."""
        label, stage, t = init_label(init), self.plan["stage"], time.perf_counter()
        digest, hits0, n = weights_digest(backbone), self.cache.hits, len(self.images)

        def progress(done: int, total: int) -> None:
            self.progress.say(f"{label}: features of {stage}, {done}/{total} images", throttle=done < total)

        raw = cached_features(self.cache, backbone, digest, self.images.images, self.images_key, [stage],
                              self.plan["image_size"], self.device, self.precision, self.control, progress)[stage]
        channels = backbone.stage_channels(stage)
        features = map_features(raw, channels)
        if self.query["index"] is None:  # outside the set: the same backbone, the same pooling
            q_raw = extract_stages(backbone, self.query["image"][None], [stage], self.device, self.precision)[stage]
            query_vec = map_features(q_raw, channels)[0]
        else:
            query_vec = features[self.query["index"]]
        source = "feature cache" if self.cache.hits > hits0 else "computed"
        seconds = time.perf_counter() - t
        self.progress.step(f"{label}: features of {n} images ({source}, {seconds:.1f} s)")
        return {"init": init, "label": label, "name": name, "features": features, "query_features": query_vec,
                "feature_source": source, "features_s": seconds, "channels": int(channels), "files": []}

    def colours(self) -> tuple[np.ndarray, list[str], str]:
        """Class labels for a labelled set; else k-means clusters of the first initialisation's features."""
        if self.images.labelled:
            self.progress.step(f"colours: {len(self.images.classes)} classes")
            return self.images.labels, list(self.images.classes), "class"
        t = time.perf_counter()
        labels = cluster_labels(self.inits[0]["features"], self.cfg.clusters, self.cfg.seed)
        k = int(labels.max()) + 1
        self.timings["clusters_s"] = time.perf_counter() - t
        self.progress.step(f"colours: {k} k-means clusters of {self.inits[0]['label']}'s features")
        return labels, cluster_names(k), "cluster"

    def map_and_neighbours(self, entry: dict) -> None:
        method = self.plan["method"]
        projection = project(entry["features"], method, self.cfg.seed, control=self.control)
        for note in projection.notes:
            self.log(f"{entry['label']}: {note}")
            if note not in self.notes:
                self.notes.append(note)
        entry.update(coords=projection.coords, projection={"method": method, "params": projection.params,
                                                            "notes": projection.notes,
                                                            "seconds": round(projection.seconds, 3)})
        entry["neighbours"] = nearest(entry["features"], entry["query_features"], self.cfg.neighbours,
                                      exclude=self.query["index"])
        self.progress.step(f"{entry['label']}: {METHOD_NAMES[method]} map in {projection.seconds:.1f} s")

    # -- files -----------------------------------------------------------------------------------
    def write_files(self) -> list[Path]:
        t, files = time.perf_counter(), []
        texts = [self.label_names[i] for i in self.labels]
        several = len(self.inits) > 1
        for i, entry in enumerate(self.inits):
            names = (["embedding"] if i == 0 else []) + ([f"embedding_{entry['name']}"] if several else [])
            for stem in names:
                entry["files"] += [
                    write_embedding_png(self.out / f"{stem}.png", entry["coords"], self.labels, self.label_names,
                                        self.map_title(entry), entry["projection"]["notes"]),
                    write_embedding_csv(self.out / f"{stem}.csv", self.images.paths, entry["coords"], texts)]
            files += entry["files"]
        files.append(self.write_gallery())
        if self.cfg.projector:
            files += self.write_projector(texts)
        self.timings["write_s"] = time.perf_counter() - t
        self.progress.step(f"wrote {len(files)} files")
        return files

    def write_projector(self, texts: list[str]) -> list[Path]:
        from sslstudio.explore.projector import write_projector

        folder, why = write_projector(self.out, self.inits, self.images.paths, texts, self.images.images)
        if folder is None:
            self.log(f"no projector files: {why}", "warning")
            return []
        self.log(f"TensorBoard projector: tensorboard --logdir {folder}")
        return [folder]

    def map_title(self, entry: dict) -> str:
        colour = "class" if self.colour_by == "class" else f"k-means cluster (k={len(self.label_names)})"
        return (f"{entry['label']}: {self.plan['stage']}, {METHOD_NAMES[self.plan['method']]} of "
                f"{len(self.images):,} images, coloured by {colour}")

    def write_gallery(self) -> Path:
        q, classes = self.query, self.images.classes
        captions = [classes[y] for y in self.images.labels] if self.images.labelled else None
        q_text = "query" if q["index"] is None else f"query #{q['index']}"
        if q["index"] is not None and captions:
            q_text += f"\n{captions[q['index']]}"
        elif q["index"] is None:
            q_text += "\n(outside the set)"
        rows = [GalleryRow(e["label"], e["neighbours"]) for e in self.inits]
        title = (f"Nearest images to {Path(q['path']).name} by cosine similarity of {self.plan['stage']} features "
                 f"({len(self.images):,} images)")
        return write_gallery_png(self.out / "neighbours.png", q["image"], q_text, rows, self.images.images,
                                 captions, self.cfg.neighbours, title)

    # -- activation maps and shortcut checks (other modules, when present) -----------------------
    def extras(self) -> dict:
        out = {"activations": self.guarded("activation maps", self.activation_maps),
               "shortcuts": self.guarded("shortcut checks", self.shortcut_checks)}
        self.progress.step("activation maps and shortcut checks done")
        return out

    def guarded(self, what: str, job) -> dict:
        """Run ``job``; a missing module or a failure is a log line, never the loss of the maps."""
        t = time.perf_counter()
        try:
            result = job()
        except ImportError as exc:
            self.log(f"{what} skipped: their module is not available here ({exc})")
            return {"skipped": f"module not available: {exc}"}
        except Cancelled:
            raise
        except SSLStudioError as exc:
            self.log(f"{what} could not be made: {exc}", "warning")
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the maps are written; one failed extra must not lose them
            self.log(f"{what} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", "warning")
            return {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(result, dict):
            return result
        return {"files": [Path(p) for p in result[0]], **result[1], "seconds": round(time.perf_counter() - t, 3)}

    def activation_maps(self):
        from sslstudio.explore.activations import write_activation_maps

        cfg = self.cfg
        inits = [e["init"] for e in self.inits]  # the run (first) and every other initialisation that loaded
        stages = list(cfg.activation_stages)  # empty: every stage
        self.control.checkpoint()
        paths = write_activation_maps(self.out, cfg.run, inits, str(self.query["path"]), stages,
                                      self.plan["image_size"], cfg.device, cfg.seed)
        self.log(f"activation maps: {len(paths)} file(s)")
        return list(paths), {"image": str(self.query["path"]), "stages": stages or "all"}

    def shortcut_checks(self):
        cfg = self.cfg
        if not cfg.run:
            self.log("shortcut checks skipped: they test a pretraining run's task (give --run)")
            return {"skipped": "no run"}
        from sslstudio.explore.shortcuts import write_shortcut_table

        def emit(event) -> None:  # their progress inside this exploration's one progress bar
            if isinstance(event, ProgressEvent):
                text = event.message if "shortcut" in event.message else f"shortcut checks: {event.message}"
                self.progress.say(f"{text} ({event.done}/{event.total})", throttle=event.done < event.total)
            else:
                self.emit(event)

        data = cfg.data or cfg.labelled
        rows = write_shortcut_table(self.out, cfg.run, data, self.plan["image_size"], cfg.device, cfg.seed,
                                    emit=emit, control=self.control)
        files = [self.out / "shortcuts.md"] if (self.out / "shortcuts.md").is_file() else []
        return files, {"rows": rows}

    # -- summary ---------------------------------------------------------------------------------
    def finish(self, files: list[Path], extras: dict) -> dict:
        self.timings["total_s"] = time.perf_counter() - self.t0
        result = {"format": SUMMARY_FORMAT, "arch": self.plan["arch"], "stage": self.plan["stage"],
                  "method": self.plan["method"], "image_size": self.plan["image_size"], "device": str(self.device),
                  "seed": self.cfg.seed, "source": self.images.source, "images_found": self.images.found,
                  "paths": self.images.paths, "images": self.images.images, "labels": self.labels,
                  "label_names": self.label_names, "colour_by": self.colour_by, "classes": self.images.classes,
                  "query": {"path": str(self.query["path"]), "index": self.query["index"]},
                  "inits": self.inits, "files": [Path(f) for f in files], "timings": self.timings,
                  "notes": self.notes, "extras": extras, "unavailable": self.unavailable,
                  "skipped": [(str(p), r) for p, r in self.images.skipped],
                  "feature_cache": {"enabled": self.cache.enabled, "hits": self.cache.hits,
                                    "misses": self.cache.misses}}
        summary_path = self.out / "summary.json"
        result["files"].append(summary_path)
        atomic_write_json(summary_path, summary_json(result, self.cfg))
        self.progress.step(f"explore finished in {self.timings['total_s']:.1f} s")
        self.log(f"explore finished in {self.timings['total_s']:.1f} s; files in {self.out}")
        return result


def summary_json(result: dict, config: ExploreConfig | None = None) -> dict:
    """What ``summary.json`` holds: the result without arrays (the coordinates are in the CSV files)."""
    inits = [{"init": e["init"], "label": e["label"], "name": e["name"], "feature_source": e["feature_source"],
              "features_s": round(e["features_s"], 3), "projection": e["projection"],
              "neighbours": e["neighbours"].as_json() if isinstance(e["neighbours"], Neighbours) else e["neighbours"],
              "files": [Path(f).name for f in e["files"]]} for e in result["inits"]]
    keep = ("format", "arch", "stage", "method", "image_size", "device", "seed", "source", "images_found",
            "label_names", "colour_by", "classes", "query", "notes", "unavailable", "feature_cache", "skipped")
    out = {k: result[k] for k in keep}
    out.update(images=len(result["paths"]), inits=inits, files=[Path(f).name for f in result["files"]],
               timings={k: round(v, 3) for k, v in result["timings"].items()},
               extras={k: {kk: ([Path(f).name for f in vv] if kk == "files" else vv) for kk, vv in v.items()}
                       for k, v in result["extras"].items()})
    if config is not None:
        out["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    return out


__all__ = ["ExploreConfig", "explore", "init_file_names", "plan_exploration", "summary_json"]
