"""Loading a labelled image folder (one sub-folder per class) into train/test lists.

Accepted layouts::

    DIR/<class>/image.jpg                      (test images split off, seeded)
    DIR/train/<class>/image.jpg                (same, when there is no DIR/test)
    DIR/train/<class>/... and DIR/test/<class>/...

Images inside a class folder are found recursively. Every split and subset is
drawn with a random generator seeded from ``seed`` and the class name, after
sorting the paths, so the same inputs always give the same lists.
"""

from __future__ import annotations

import os
import random
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sslstudio.data.decode import format_counts
from sslstudio.data.scan import check_folder, walk_images
from sslstudio.errors import ConfigError, DataError

__all__ = ["LabelledSplit", "check_usable_classes", "load_labelled"]

_LAYOUT = "DIR/<class>/image.jpg or DIR/train/<class>/image.jpg (with an optional DIR/test/<class>/image.jpg)"


@dataclass
class LabelledSplit:
    """Labelled images split into a training and a test list.

    Attributes:
        classes: Class names, sorted; a label is an index into this list.
        train: ``(path, label)`` pairs for training, sorted by label then path.
        test: ``(path, label)`` pairs for testing, sorted by label then path.
        test_source: ``"folder"`` when the test images come from a test
            folder, ``"split"`` when they were split off the training images.
        train_dir: The folder holding the training class folders, when known.
        test_dir: The folder holding the test class folders, if there is one.
    """

    classes: list[str]
    train: list[tuple[Path, int]] = field(default_factory=list)
    test: list[tuple[Path, int]] = field(default_factory=list)
    test_source: str = "split"
    train_dir: Path | None = None
    test_dir: Path | None = None

    def class_folder(self, name: str) -> Path | None:
        """The training folder of class ``name``, when known."""
        return self.train_dir / name if self.train_dir is not None else None

    def summary(self) -> str:
        """Return a one-line description of the classes and the split."""
        origin = "test folder" if self.test_source == "folder" else "split off the training images"
        names = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
        return (
            f"{len(self.classes)} classes ({names}): {len(self.train):,} training and "
            f"{len(self.test):,} test images ({origin})"
        )


def _class_folders(folder: Path) -> list[str]:
    """Return the sorted names of the non-hidden sub-folders of ``folder``."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise DataError(f"The folder {folder} cannot be read ({exc.strerror}); check its permissions.") from exc


def _collect(folder: Path, names: list[str], role: str) -> dict[str, list[Path]]:
    """Find the images of each class folder; an empty class folder is an error."""
    images: dict[str, list[Path]] = {}
    for name in names:
        found, _ = walk_images(folder / name)
        if not found:
            raise DataError(
                f"The {role} class folder '{name}' ({folder / name}) contains no images; "
                "add images to it or remove the folder."
            )
        images[name] = [Path(p) for p in found]
    return images


def _rng(seed: int, purpose: str, name: str) -> random.Random:
    """Return a generator seeded from ``seed``, a purpose and a class name."""
    return random.Random(f"{int(seed)}/{purpose}/{name}")


def _split(images: dict[str, list[Path]], test_fraction: float, seed: int) -> tuple[dict, dict]:
    """Split every class into train and test with a seeded, stratified shuffle."""
    train: dict[str, list[Path]] = {}
    test: dict[str, list[Path]] = {}
    for name, paths in images.items():
        n = len(paths)
        if n < 2:
            raise DataError(
                f"The class '{name}' has only one image ({paths[0]}), so it cannot be split into "
                "training and test images; add more images to it or provide a test folder."
            )
        n_test = min(max(1, round(n * test_fraction)), n - 1)
        shuffled = sorted(paths)
        _rng(seed, "split", name).shuffle(shuffled)
        test[name] = sorted(shuffled[:n_test])
        train[name] = sorted(shuffled[n_test:])
    return train, test


def _subset(train: dict[str, list[Path]], per_class: int, seed: int) -> dict[str, list[Path]]:
    """Keep a seeded random subset of ``per_class`` images of each class."""
    short = [f"{name} ({len(paths)})" for name, paths in train.items() if len(paths) < per_class]
    if short:
        warnings.warn(
            f"{len(short)} classes have fewer than {per_class} training images and keep all they have: "
            + ", ".join(short)
            + ".",
            UserWarning,
            stacklevel=3,
        )
    out: dict[str, list[Path]] = {}
    for name, paths in train.items():
        if len(paths) <= per_class:
            out[name] = list(paths)
        else:
            out[name] = sorted(_rng(seed, "subset", name).sample(sorted(paths), per_class))
    return out


def _subset_fraction(train: dict[str, list[Path]], fraction: float, seed: int) -> dict[str, list[Path]]:
    """Keep a seeded random ``fraction`` of each class (at least one image)."""
    return {name: sorted(_rng(seed, "subset", name).sample(sorted(paths), max(1, round(fraction * len(paths)))))
            for name, paths in train.items()}


def _resolve_layout(root: Path, test_root: str | os.PathLike[str] | None) -> tuple[Path, Path | None]:
    """Return the training folder and the test folder (if any)."""
    train_dir = root / "train"
    if train_dir.is_dir():
        test_dir = root / "test"
        if test_root is None and test_dir.is_dir():
            return train_dir, test_dir
    else:
        train_dir = root
    if test_root is not None:
        return train_dir, check_folder(test_root, "The test folder")
    return train_dir, None


def _check_settings(test_fraction: float, per_class: int | None, fraction: float | None = None) -> None:
    """Raise :class:`ConfigError` for settings that cannot work."""
    if fraction is not None and not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(f"The label fraction must be in (0, 1], but {fraction} was given.")
    if fraction is not None and per_class is not None:
        raise ConfigError("Give either a number of images per class or a fraction of them, not both.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"The test fraction must be between 0 and 1 (exclusive), but {test_fraction} was given.")
    if per_class is not None and int(per_class) < 1:
        raise ConfigError(f"The number of images per class must be at least 1, but {per_class} was given.")


def load_labelled(
    root: str | os.PathLike[str],
    test_root: str | os.PathLike[str] | None = None,
    *,
    per_class: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    fraction: float | None = None,
) -> LabelledSplit:
    """Load a labelled folder into seeded, deterministic train and test lists.

    Args:
        root: ``DIR`` holding class folders, or a ``train/`` (and optional
            ``test/``) folder of class folders.
        test_root: Folder of test class folders; overrides ``DIR/test``.
        per_class: Keep at most this many training images per class (a
            seeded subset, taken after the split); classes with fewer keep
            all of them, with a warning.
        fraction: Keep this seeded share of each class's training images
            (at least one), instead of ``per_class``.
        test_fraction: Share of each class used for testing when there is no
            test folder (at least one image in test and one in train).
        seed: Seed of the split and the subset.

    Returns:
        The classes and the train/test lists.

    Raises:
        DataError: A folder is missing, a class folder is empty, there are
            fewer than two classes, a class cannot be split, or the test
            folder has a class the training folder lacks.
        ConfigError: ``test_fraction`` or ``per_class`` is out of range.
    """
    _check_settings(test_fraction, per_class, fraction)
    root_dir = check_folder(root, "The labelled folder")
    train_dir, test_dir = _resolve_layout(root_dir, test_root)

    classes = _class_folders(train_dir)
    if not classes:
        raise DataError(
            f"The labelled folder {train_dir} contains no class folders; arrange the images as {_LAYOUT}."
        )
    if len(classes) < 2:
        raise DataError(
            f"Labelled data needs at least two classes, but {train_dir} has only 1: {classes[0]}; "
            f"add a folder per class, as in {_LAYOUT}."
        )
    train_images = _collect(train_dir, classes, "training")

    if test_dir is not None:
        test_classes = _class_folders(test_dir)
        unknown = [name for name in test_classes if name not in train_images]
        if unknown:
            raise DataError(
                f"The test folder {test_dir} has classes that are not in the training folder {train_dir}: "
                f"{', '.join(unknown)}; rename or remove them so every test class also has training images."
            )
        if not test_classes:
            raise DataError(
                f"The test folder {test_dir} contains no class folders; arrange it as {test_dir}/<class>/image.jpg."
            )
        missing = [name for name in classes if name not in test_classes]
        if missing:
            warnings.warn(
                f"The test folder {test_dir} has no images for {len(missing)} classes: {', '.join(missing)}; "
                "those classes are not tested.",
                UserWarning,
                stacklevel=2,
            )
        test_images = _collect(test_dir, test_classes, "test")
        source = "folder"
    else:
        train_images, test_images = _split(train_images, float(test_fraction), seed)
        source = "split"

    if per_class is not None:
        train_images = _subset(train_images, int(per_class), seed)
    elif fraction is not None:
        train_images = _subset_fraction(train_images, float(fraction), seed)

    index = {name: i for i, name in enumerate(classes)}
    return LabelledSplit(
        classes=list(classes),
        train=[(p, index[name]) for name in classes for p in train_images[name]],
        test=[(p, index[name]) for name in classes if name in test_images for p in test_images[name]],
        test_source=source,
        train_dir=train_dir,
        test_dir=test_dir,
    )


def check_usable_classes(split: LabelledSplit, kept: Iterable[str | os.PathLike[str]],
                         skipped: Iterable[tuple[str | os.PathLike[str], str]]) -> None:
    """Stop when decoding left a class without a usable training image; warn when it left one untested.

    Without this, a class whose files are all broken would silently vanish from training while the
    classifier still has an output for it.

    Args:
        split: The lists the decoded files came from.
        kept: The files that were decoded (train and test).
        skipped: ``(path, reason)`` of the files that were not.

    Raises:
        DataError: A class has no usable training image; the sentence names the class, its folder
            and why its files were skipped.
    """
    usable = {Path(p) for p in kept}
    reasons = {Path(p): str(r) for p, r in skipped}
    by_class: list[dict[str, list[Path]]] = [{"train": [], "test": []} for _ in split.classes]
    for role, items in (("train", split.train), ("test", split.test)):
        for p, y in items:
            by_class[y][role].append(Path(p))
    untested = []
    for name, files in zip(split.classes, by_class):
        train, test = files["train"], files["test"]
        if test and not any(p in usable for p in test):
            untested.append(name)
        if not train or any(p in usable for p in train):
            continue
        counts = Counter(reasons[p] for p in train + test if p in reasons)
        n = sum(counts.values())
        what = "training image" if any(p in usable for p in test) else "image"
        folder = split.class_folder(name) or os.path.commonpath([os.fspath(p.parent) for p in train])
        raise DataError(
            f"The class '{name}' in {folder} has no usable {what} ({n:,} file{'' if n == 1 else 's'} skipped: "
            f"{format_counts(dict(counts))}); replace or remove the unusable files, or remove the class folder."
        )
    if untested:
        one = len(untested) == 1
        warnings.warn(
            f"{len(untested)} class{'' if one else 'es'} ({', '.join(untested)}) {'has' if one else 'have'} "
            f"no usable test image and {'is' if one else 'are'} not tested.",
            UserWarning,
            stacklevel=2,
        )
