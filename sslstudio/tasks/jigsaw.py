"""Jigsaw puzzles.

Noroozi and Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
ECCV 2016. A 225 px crop is cut into a 3 x 3 grid of 75 px cells; from every cell one 64 px tile
is taken at a random position inside the cell (the 11 px left over keep the tiles apart, so the
network cannot just continue edges from tile to tile). The nine tiles are shuffled with one
permutation out of a fixed set, and the network (the "context-free network": one shared
convolutional trunk per tile, the nine feature vectors concatenated, fully connected layers)
predicts which permutation of the set was applied. The set is chosen for large Hamming distances
between its permutations (the paper's Algorithm 1, "maximal" variant; the paper compares sets of
up to 1000 permutations, 100 by default here). Each tile is normalised on its own (per-tile,
per-channel mean and standard deviation) so that low-level statistics do not give the answer
away, and each tile's colour channels are shifted against each other by up to 2 px at 64 px
tiles, against chromatic aberration.

Here the crop is the whole (square) image: ``cell = image_size // 3``,
``tile = round(cell * 64 / 75)`` (:attr:`JigsawConfig.tile_fraction`), the grid placed at a random
offset where ``image_size`` is not a multiple of 3; 64 px images give 21 px cells and 18 px tiles,
32 px images 10 px cells and 9 px tiles. A puzzle is turned to greyscale with probability 0.3,
the rate used by common re-implementations of the paper, against colour shortcuts.

Permutation set: all ``9! = 362880`` permutations are scored at once with numpy. Starting from a
random permutation (drawn from the run seed), the paper's Algorithm 1 adds, at each step, the
permutation whose *summed* Hamming distance to the permutations already chosen is largest
(``D̄ = 1ᵀD``, ``j = argmax D̄``; equivalently the largest mean distance), until the set has the
requested size: ``hamming_criterion="mean"``, the default. ``hamming_criterion="min"`` is ours,
not the paper's: it adds the permutation whose *minimal* distance to the chosen set is largest
(a farthest-point selection that maximises the set's minimal distance). For 100 permutations
(seeds 0 to 2) the paper's rule gives a mean pairwise distance of 8.08 and a minimal one of 2 or
3, ours 8.06 to 8.07 and 6; random sets of 100 have a mean of 7.99 to 8.02 and a minimal
distance of 2 to 4 (six draws). Ties are broken at random with the same seeded generator. Each
step scores all permutations at once (100 permutations: 0.2 to 1 s, 1000: 2 to 10 s, depending
on the machine).
Sets are cached in memory per ``(size, seed, criterion)``, written to the run folder
(``jigsaw_permutations.json``), and their minimal and mean pairwise Hamming distances are
recorded in the run's ``task_info``.

Label semantics: cells are numbered row-major, ``0`` = top-left, ``8`` = bottom-right. For the
permutation ``perm = permutations[label]``, input position ``i`` holds the tile cut from cell
``perm[i]``: ``inputs[i] = tile[perm[i]]``. Putting every input back at cell ``perm[i]``
(``solved = inputs[argsort(perm)]``) restores the image.

Optimisation (the paper, section 4): SGD with momentum 0.9, weight decay 5e-4, batch 256,
learning rate 0.01 divided by 10 every 100K of 350K iterations (here: milestones at 2/7, 4/7 and
6/7 of the run); 350K iterations of 256 puzzles are about 70 ImageNet epochs.

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.tasks.base import ClassificationTask, Defence, OptimConfig, param
from sslstudio.tasks.patches import crop_batch, display, greyscale_batch, standardise_batch, to_float_batch
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import SMALL_TEXT_PX, TEXT_PX, font

GRID = 3
CELLS = GRID * GRID
ARTIFACT_NAME = "jigsaw_permutations.json"


# -- permutation sets ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def all_permutations() -> np.ndarray:
    """Every permutation of ``0..8`` in lexicographic order, int8 ``[362880, 9]`` (read-only)."""
    perms = np.array(list(itertools.permutations(range(CELLS))), dtype=np.int8)
    perms.flags.writeable = False
    return perms


@lru_cache(maxsize=1)
def _position_table() -> np.ndarray:
    """``table[k, v, m] = 1`` where permutation ``m`` has value ``v`` at position ``k`` (uint8)."""
    perms = all_permutations()
    table = (perms.T[:, None, :] == np.arange(CELLS, dtype=np.int8)[None, :, None]).astype(np.uint8)
    table.flags.writeable = False
    return table


def hamming_to_all(perm: np.ndarray) -> np.ndarray:
    """Hamming distance from ``perm`` to every permutation of :func:`all_permutations` (int16)."""
    table = _position_table()
    matches = table[np.arange(CELLS), np.asarray(perm, dtype=np.intp)].sum(axis=0, dtype=np.int16)
    return CELLS - matches


def hamming_matrix(perms: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of the rows of ``perms`` (``[n, n]`` int)."""
    perms = np.asarray(perms)
    return (perms[:, None, :] != perms[None, :, :]).sum(axis=-1)


def min_hamming_distance(perms: np.ndarray) -> int:
    """Smallest Hamming distance between two different rows of ``perms``."""
    d = hamming_matrix(perms)
    np.fill_diagonal(d, CELLS + 1)
    return int(d.min())


def mean_hamming_distance(perms: np.ndarray) -> float:
    """Mean Hamming distance over the pairs of different rows of ``perms`` (rounded to 4 decimals; 0 for one row)."""
    d = hamming_matrix(perms)
    off = ~np.eye(len(d), dtype=bool)
    return round(float(d[off].mean()), 4) if off.any() else 0.0


@lru_cache(maxsize=32)
def _select(size: int, seed: int, criterion: str) -> np.ndarray:
    perms = all_permutations()
    if not 1 <= size <= len(perms):
        raise ConfigError(f"a jigsaw permutation set holds between 1 and {len(perms)} permutations; got {size}.")
    rng = np.random.default_rng(seed)
    j = int(rng.integers(len(perms)))
    chosen = [j]
    dist = hamming_to_all(perms[j]).astype(np.int32)
    taken = np.zeros(len(perms), dtype=bool)
    taken[j] = True
    for _ in range(size - 1):
        # chosen permutations score 0 ("min": distance to themselves) or -1 ("mean"), so they are
        # never picked again; ties are broken at random (seeded), not by lexicographic order
        score = dist if criterion == "min" else np.where(taken, -1, dist)
        best = np.flatnonzero(score == score.max())
        j = int(best[rng.integers(len(best))])
        chosen.append(j)
        taken[j] = True
        dj = hamming_to_all(perms[j])
        if criterion == "min":
            np.minimum(dist, dj, out=dist)
        else:
            dist += dj
    out = perms[np.array(chosen)].astype(np.int64)
    out.flags.writeable = False
    return out


def select_permutations(size: int, seed: int = 0, criterion: str = "mean") -> np.ndarray:
    """A set of ``size`` permutations of ``0..8`` with large Hamming distances (Algorithm 1).

    Args:
        size: Number of permutations.
        seed: Picks the first permutation; the set is a deterministic function of the seed.
        criterion: ``"mean"`` (the paper's Algorithm 1): add the permutation whose summed distance to
            the chosen set is largest. ``"min"`` (ours, not the paper's): add the one whose minimal
            distance to the chosen set is largest (maximises the set's minimal distance).

    Returns:
        Read-only int64 array ``[size, 9]``, in the order the permutations were chosen. Cached in
        memory per ``(size, seed, criterion)``.
    """
    if criterion not in ("min", "mean"):
        raise ConfigError(f"the Hamming criterion must be 'min' or 'mean'; got {criterion!r}.")
    return _select(int(size), int(seed), criterion)


def load_permutations(path) -> np.ndarray:
    """Read a permutation set written by :meth:`JigsawTask.save_artifacts`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return np.asarray(data["permutations"], dtype=np.int64)


# -- config and model ------------------------------------------------------------------------
@dataclass(frozen=True)
class JigsawConfig:
    """Jigsaw settings (the paper's values; tile geometry scaled with the image size)."""

    permutations: int = param(100, "Size of the permutation set = number of classes (the paper studies "
                                   "100 to 1000). Chosen for maximal Hamming distance and saved with the run.",
                              min=2, max=1000)
    hamming_criterion: str = param("mean", "How the permutation set is grown: 'mean' = add the permutation with the "
                                           "largest summed (mean) Hamming distance to those chosen (the paper's "
                                           "Algorithm 1); 'min' = the largest minimal distance (ours, not the "
                                           "paper's: maximises the set's minimal distance).",
                                   choices=("mean", "min"), label="Hamming rule")
    tile_fraction: float = param(64 / 75, "Tile side as a fraction of its cell (paper: 64 px tiles in 75 px cells "
                                          "of a 225 px crop). The crop is the whole image: cell = image_size // 3, "
                                          "tile = round(cell * tile_fraction); 64 px images give 18 px tiles, "
                                          "32 px images 9 px tiles. Below 1, the rest of the cell is a random gap.",
                                 min=0.3, max=1.0)
    greyscale_probability: float = param(0.3, "Probability that a puzzle is turned to greyscale (0.3, as in common "
                                              "re-implementations of the paper), against colour shortcuts.",
                                         min=0.0, max=1.0)
    channel_jitter: float = param(2 / 64, "Largest shift of each colour channel of a tile against the others, "
                                          "as a fraction of the tile (paper: 2 px on 64 px tiles; round(tile * "
                                          "value) px, so none below 16 px tiles). 0 turns it off.",
                                  min=0.0, max=0.25)
    hidden_dim: int = param(1024, "Width of the fully connected layer on the nine concatenated tile features "
                                  "(paper: 4096 on 9 x 1024; 1024 here on 9 x 512 for resnet18).",
                            min=16, max=8192, label="Hidden units")
    dropout: float = param(0.5, "Dropout after the fully connected layer.", min=0.0, max=0.9)


class JigsawHead(nn.Module):
    """Shared backbone on the nine tiles, features concatenated in input order, fc, classifier."""

    def __init__(self, backbone: nn.Module, feature_dim: int, classes: int, hidden: int = 1024,
                 dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Sequential(nn.Linear(CELLS * feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 9, 3, t, t]`` tiles in input order -> ``[B, classes]`` permutation logits."""
        b, n = x.shape[:2]
        features = self.backbone(x.flatten(0, 1))  # [B*9, F]
        return self.classifier(self.fc(features.reshape(b, n * features.shape[-1])))


@register_task("jigsaw")
class JigsawTask(ClassificationTask):
    """Predict which permutation of a fixed set shuffled the nine tiles of a 3 x 3 grid."""

    description = "Predict which permutation shuffled the nine tiles of a 3x3 jigsaw puzzle"
    paper = ("Noroozi, Favaro. Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles. "
             "ECCV 2016")
    metric_name = "accuracy"
    config_cls = JigsawConfig
    optim = OptimConfig(epochs=70, batch_size=256, lr=0.01, momentum=0.9, nesterov=False,
                        weight_decay=5e-4, lr_decay=0.1, milestones=(2 / 7, 4 / 7, 6 / 7))
    samples_per_image = 1
    min_image_size = 18
    small_image_policy = "upscale"
    needs_colour = False
    # the per-tile normalisation is not a setting (always on), so it is not declared here
    defences = (
        Defence("gaps between tiles", "Tiles smaller than their cells, at random positions in them, so that "
                "the network cannot continue edges from tile to tile.", {"tile_fraction": 1.0}),
        Defence("greyscale", "Some puzzles turned to greyscale, against colour shortcuts.",
                {"greyscale_probability": 0.0}),
        Defence("channel jitter", "Each colour channel of a tile shifted against the others, against "
                "chromatic aberration.", {"channel_jitter": 0.0}),
    )

    def __init__(self, config: JigsawConfig | None = None, image_size: int = 64):
        super().__init__(config, image_size)
        self.cell = self.image_size // GRID
        self.tile = max(1, min(self.cell, int(round(self.cell * self.config.tile_fraction))))
        if self.tile < 3:
            raise ConfigError(f"jigsaw tiles of {self.tile} px are too small; use images of at least "
                              f"{self.min_image_size} px or a larger tile_fraction.")
        self.shift = int(round(self.tile * self.config.channel_jitter))
        self.seed = 0
        self.permutations = select_permutations(self.config.permutations, 0, self.config.hamming_criterion)

    # -- permutation set ---------------------------------------------------------------------
    def prepare(self, images: np.ndarray, seed: int) -> np.ndarray:
        """Choose the permutation set from the run seed; the items are the images themselves."""
        self.seed = int(seed)
        self.permutations = select_permutations(self.config.permutations, self.seed, self.config.hamming_criterion)
        return images

    def run_info(self) -> dict:
        return {"permutations": int(len(self.permutations)),
                "min_hamming_distance": min_hamming_distance(self.permutations),
                "mean_hamming_distance": mean_hamming_distance(self.permutations),
                "hamming_criterion": self.config.hamming_criterion, "permutation_seed": self.seed,
                "cell_px": self.cell, "tile_px": self.tile, "channel_shift_px": self.shift,
                "permutation_file": ARTIFACT_NAME}

    def save_artifacts(self, folder) -> list:
        """Write the permutation set (``jigsaw_permutations.json``): row ``label`` is ``perm``."""
        path = Path(folder) / ARTIFACT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"semantics": "inputs[i] is the tile of cell perm[i] (cells row-major, 0 = top-left); "
                             "the label is the row index of perm",
                "seed": self.seed, "hamming_criterion": self.config.hamming_criterion,
                "min_hamming_distance": min_hamming_distance(self.permutations),
                "mean_hamming_distance": mean_hamming_distance(self.permutations),
                "permutations": self.permutations.tolist()}
        path.write_text(json.dumps(data), encoding="utf-8")
        return [path]

    # -- samples -----------------------------------------------------------------------------
    def batch_geometry(self, size: int, batch: int, generator: torch.Generator) -> dict:
        """The random choices of a batch of puzzles, drawn on the CPU from ``generator``.

        Returns ``origin [B, 2]``, ``offsets [B, 9, 2]``, ``shifts [B, 9, 3, 2]`` (per cell),
        ``label [B]`` and ``grey [B]``: the grid's offset where the image side is not a multiple of 3,
        each tile's position in its cell and each colour channel's shift (uniform), the permutation
        (uniform over the set) and greyscale (with ``greyscale_probability``).
        """
        g = generator
        return {"origin": torch.randint(0, size - GRID * self.cell + 1, (batch, 2), generator=g),
                "offsets": torch.randint(0, self.cell - self.tile + 1, (batch, CELLS, 2), generator=g),
                "shifts": torch.randint(-self.shift, self.shift + 1, (batch, CELLS, 3, 2), generator=g),
                "label": torch.randint(0, len(self.permutations), (batch,), generator=g),
                "grey": torch.rand(batch, generator=g) < self.config.greyscale_probability}

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Puzzles ``[B, 9, 3, t, t]`` and labels ``[B]`` of a uint8 batch ``[B, S, S, 3]``, on its device.

        The tile positions of every cell are computed for the whole batch, reordered by each
        puzzle's permutation (input ``i`` comes from cell ``perm[i]``) and cut in one gather
        (each colour channel from its own shifted window); greyscale and the per-tile,
        per-channel standardisation are whole-tensor operations.
        """
        b, size = images.shape[0], images.shape[1]
        if images.shape[2] != size:
            raise ValueError("jigsaw needs square images (the data pipeline crops them square)")
        r = self.batch_geometry(size, b, generator)
        cells = torch.arange(CELLS)
        grid_yx = torch.stack([cells // GRID, cells % GRID], dim=-1) * self.cell  # [9, 2]
        pos = r["origin"][:, None, :] + grid_yx + r["offsets"]  # [B, 9, 2] in cell order
        perm = torch.from_numpy(np.array(self.permutations, dtype=np.int64))[r["label"]]  # [B, 9]
        pos = pos.gather(1, perm[..., None].expand(-1, -1, 2))  # input order: pos[:, i] = cell perm[i]
        shifts = r["shifts"].gather(1, perm[..., None, None].expand(-1, -1, 3, 2))
        dev = images.device
        tiles = crop_batch(images, pos[..., 0], pos[..., 1], self.tile,
                           shifts.to(dev) if self.shift else None)  # [B, 9, 3, t, t] uint8
        x = to_float_batch(tiles)
        grey = r["grey"].to(dev).view(b, 1, 1, 1, 1)
        x = torch.where(grey, greyscale_batch(x), x)
        return standardise_batch(x, per_channel_std=True), r["label"].to(dev)

    @staticmethod
    def solve(inputs: torch.Tensor, perm) -> torch.Tensor:
        """Put every input tile back in its cell: ``solved[perm[i]] = inputs[i]``."""
        perm = torch.tensor(np.array(perm, dtype=np.int64))
        return inputs[torch.argsort(perm)]

    # -- model and scores --------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        return JigsawHead(backbone, feature_dim, len(self.permutations), self.config.hidden_dim,
                          self.config.dropout)

    # -- drawing -----------------------------------------------------------------------------
    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        """Shuffled tiles (input order, each marked with its home cell), the label, the solved grid."""
        label = int(target.reshape(-1)[0])
        perm = self.permutations[label]
        shown = 58
        shuffled = _tile_grid([display(t) for t in inputs], shown, numbers=[int(p) for p in perm])
        solved = _tile_grid([display(t) for t in self.solve(inputs, perm)], shown,
                            numbers=list(range(CELLS)))
        pad, head, foot = 8, 22, 42
        width = shuffled.width + solved.width + 3 * pad + 28
        out = Image.new("RGB", (width, head + shuffled.height + foot), (24, 24, 28))
        draw = ImageDraw.Draw(out)
        x2 = pad + shuffled.width + pad + 28
        out.paste(shuffled, (pad, head))
        out.paste(solved, (x2, head))
        draw.text((pad + shuffled.width // 2, head // 2), "input (n: home cell)", fill=(235, 235, 235),
                  font=font(SMALL_TEXT_PX), anchor="mm")
        draw.text((x2 + solved.width // 2, head // 2), "solved (perm undone)", fill=(235, 235, 235),
                  font=font(SMALL_TEXT_PX), anchor="mm")
        ax, ay = pad + shuffled.width + pad + 4, head + shuffled.height // 2
        draw.line((ax, ay, ax + 20, ay), fill=(235, 235, 235), width=2)
        draw.polygon([(ax + 20, ay - 5), (ax + 20, ay + 5), (ax + 26, ay)], fill=(235, 235, 235))
        y = head + shuffled.height + 4
        draw.text((width // 2, y + 9), f"permutation {label}: {' '.join(str(int(p)) for p in perm)}",
                  fill=(255, 255, 255), font=font(TEXT_PX), anchor="mm")
        if output is not None:
            pred = int(output.reshape(-1, output.shape[-1])[0].argmax())
            ok = pred == label
            draw.text((width // 2, y + 28), f"predicted {pred}" + (" \u2713" if ok else " \u2717"),
                      fill=(120, 230, 120) if ok else (255, 120, 120), font=font(TEXT_PX), anchor="mm")
        return out

    def caption(self, target: torch.Tensor) -> str:
        return f"permutation {int(torch.as_tensor(target).reshape(-1)[0])}"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        label = int(torch.as_tensor(target).reshape(-1)[0])
        order = " ".join(str(int(p)) for p in self.permutations[label])
        return (f"The image was cut into a three-by-three grid of tiles and the tiles were shuffled by permutation "
                f"{label} (their home cells, in the order shown: {order}). The network sees the nine shuffled tiles "
                f"and must say which of the {len(self.permutations)} permutations was used.")


def _tile_grid(tiles: list[Image.Image], shown: int, numbers: list[int] | None = None,
               gap: int = 3) -> Image.Image:
    """Nine tiles in a 3 x 3 grid (row-major), each upscaled to ``shown`` px, with a corner number."""
    side = GRID * shown + (GRID + 1) * gap
    out = Image.new("RGB", (side, side), (70, 70, 78))
    draw = ImageDraw.Draw(out)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, GRID)
        x, y = gap + c * (shown + gap), gap + r * (shown + gap)
        out.paste(tile.convert("RGB").resize((shown, shown), Image.NEAREST), (x, y))
        if numbers is not None:
            draw.rectangle((x, y, x + 16, y + 17), fill=(0, 0, 0))
            draw.text((x + 8, y + 9), str(numbers[i]), fill=(255, 230, 90), font=font(SMALL_TEXT_PX), anchor="mm")
    return out
