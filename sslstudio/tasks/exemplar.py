"""Exemplar-CNN: every seed patch is a class of its own (surrogate classes).

Dosovitskiy, Fischer, Springenberg, Riedmiller and Brox, "Discriminative Unsupervised Feature
Learning with Exemplar Convolutional Neural Networks", TPAMI 2016 (and NIPS 2014). N "seed"
patches of 32x32 pixels are taken from N different images of the 96x96 STL-10 unlabelled set, at
positions drawn with probability proportional to the mean squared gradient magnitude in the patch
(so patches hold objects or parts rather than flat sky). Each seed defines a surrogate class: its
samples are the seed under random compositions of elementary transformations, and the network
classifies a transformed patch into one of the N classes (cross-entropy). The transformations and
their ranges (section 3.1 of the TPAMI paper):

* translation: vertical and horizontal, by up to 0.2 of the patch size;
* scaling: the patch scale multiplied by a factor between 0.7 and 1.4;
* rotation: by up to 20 degrees;
* contrast 1: the projection of each pixel onto the principal components of the set of all
  pixels multiplied by a factor between 0.5 and 2 (one factor per component, the same for all
  pixels of the patch);
* contrast 2: saturation and value (HSV) raised to a power between 0.25 and 4, multiplied by a
  factor between 0.7 and 1.4, plus a value between -0.1 and 0.1;
* colour: hue shifted by a value between -0.1 and 0.1.

These are the journal version's ranges (TPAMI 2016, section 3.1), which this task follows. Where
the NIPS 2014 version ("Discriminative Unsupervised Feature Learning with Convolutional Neural
Networks") differs in them is unverified: the sources reachable here quote the same six
transformations and values without saying which version they come from, and the NIPS paper's
own section could not be read. What is known to differ is an addition of the journal version:
for its descriptor-matching experiments it trains an "Exemplar-CNN-blur" with blur of variable
strength as a further transformation (on Flickr images, first layer 64c7s2; checked only through
a third-party note quoting it), which is not implemented here.

The paper's main networks use 8000 surrogate classes (from the 100,000 unlabelled STL-10 images)
and a fixed set of transformed samples per class; here fresh transformations are drawn every
time, ``copies`` per seed and visit, in whole batches on the training device (one affine
resampling per copy for the geometry, vectorised colour operations with an RGB <-> HSV in torch);
the seeds themselves are chosen once, before training. The paper trains with SGD, momentum 0.9 and an initial
learning rate of 0.01, lowered when the validation error stops decreasing (here: a step schedule,
the rate divided by 3 at 50% and 75% of the run), with dropout in the fully connected layers
(here weight decay 5e-4 instead).

Label ``k`` means "a transformation of seed patch ``k``". The held-out metric is the accuracy on
fresh transformations of the same seeds (the classes are the seeds themselves, so held-out images
have no class).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.tasks.base import ClassificationTask, OptimConfig, normalise, param, to_image
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import hstack, labelled_tile, titled, vstack

_CHUNK = 256  # images per chunk when scoring seed positions


@dataclass(frozen=True)
class ExemplarConfig:
    """Exemplar-CNN settings: the paper's transformation ranges as defaults."""

    classes: int = param(8000, "Number of surrogate classes (seed patches, each from a different image; paper: "
                               "8000). Capped at the number of training images.", min=1, max=1_000_000)
    patch_fraction: float = param(1 / 3, "Seed patch side as a fraction of the image side (paper: 32 px patches "
                                         "from 96 px STL-10 images = 1/3). The patch is also the network input; "
                                         "it is never smaller than min_patch (nor larger than the image).",
                                  min=0.05, max=1.0)
    min_patch: int = param(16, "Smallest patch side in pixels (at 32 px images 1/3 would leave 11 px, too few "
                               "for the network's strides).", min=4, max=1024, label="Min. patch", unit="px")
    context: float = param(2.0, "Side of the stored region around each seed, as a multiple of the patch side: "
                                "translation, down-scaling and rotation then show real surroundings instead of "
                                "reflected borders (beyond the image border the image is mirrored).",
                           min=1.0, max=4.0)
    copies: int = param(4, "Transformed copies of a seed per visit (so each class appears this many times in "
                           "a batch). Items per epoch = classes; samples = classes x copies.", min=1, max=64)
    translation: float = param(0.2, "Largest vertical/horizontal shift, as a fraction of the patch side "
                                    "(paper: 0.2).", min=0.0, max=1.0)
    scale_min: float = param(0.7, "Smallest scale factor (paper: 0.7; drawn log-uniformly).", min=0.1, max=1.0,
                             label="Scale min.")
    scale_max: float = param(1.4, "Largest scale factor (paper: 1.4).", min=1.0, max=10.0, label="Scale max.")
    rotation: float = param(20.0, "Largest rotation in degrees, either way (paper: 20).", min=0.0, max=180.0, unit="°")
    contrast_min: float = param(0.5, "Smallest factor on each principal-colour-component projection "
                                     "(paper: 0.5; drawn log-uniformly).", min=0.01, max=1.0, label="Contrast min.")
    contrast_max: float = param(2.0, "Largest factor on each principal-colour-component projection (paper: 2).",
                                min=1.0, max=100.0, label="Contrast max.")
    contrast_pca: str = param("dataset", "Principal colour components of contrast 1: of all seed-patch pixels "
                                         "(the paper's 'set of all pixels') or of each patch's own pixels.",
                              choices=("dataset", "patch"), label="Contrast PCA")
    power_min: float = param(0.25, "Smallest power applied to saturation and value (paper: 0.25; drawn "
                                   "log-uniformly, separately for S and V).", min=0.01, max=1.0, label="Power min.")
    power_max: float = param(4.0, "Largest power applied to saturation and value (paper: 4).", min=1.0, max=100.0,
                             label="Power max.")
    sv_factor_min: float = param(0.7, "Smallest factor on saturation and value (paper: 0.7).", min=0.0, max=1.0,
                                 label="S/V factor min.")
    sv_factor_max: float = param(1.4, "Largest factor on saturation and value (paper: 1.4).", min=1.0, max=10.0,
                                 label="S/V factor max.")
    sv_shift: float = param(0.1, "Largest value added to (or subtracted from) saturation and value (paper: 0.1).",
                            min=0.0, max=1.0, label="S/V shift")
    hue_shift: float = param(0.1, "Largest hue shift, in turns of the colour wheel (paper: 0.1).", min=0.0, max=0.5)

    def __post_init__(self):
        for lo, hi in (("scale_min", "scale_max"), ("contrast_min", "contrast_max"), ("power_min", "power_max"),
                       ("sv_factor_min", "sv_factor_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"ExemplarConfig.{lo} must not exceed {hi}; got {getattr(self, lo)} > "
                                  f"{getattr(self, hi)}.")


# -- colour helpers (torch, float RGB in [0, 1], channels at dim -3) -------------------------
def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] ``[..., 3, H, W]`` -> HSV in [0, 1] (hue in turns), same shape."""
    r, g, b = rgb.unbind(-3)
    v = rgb.amax(-3)
    c = v - rgb.amin(-3)
    s = c / torch.where(v > 0, v, torch.ones_like(v))
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(c > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], -3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] ``[..., 3, H, W]`` -> float RGB in [0, 1]: channel n is
    ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for R, G, B."""
    h, s, v = hsv.unbind(-3)
    k = torch.remainder(torch.stack([5.0 + 6.0 * h, 3.0 + 6.0 * h, 1.0 + 6.0 * h], -3), 6.0)
    return v.unsqueeze(-3) * (1.0 - s.unsqueeze(-3) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def colour_pca(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and principal components (3x3, columns) of float RGB pixels (..., 3)."""
    x = pixels.reshape(-1, 3).astype(np.float64)
    mean = x.mean(0)
    cov = np.cov((x - mean).T) if len(x) > 1 else np.eye(3)
    _, vecs = np.linalg.eigh(cov)
    return mean.astype(np.float32), vecs[:, ::-1].astype(np.float32)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Mirror integer indices into [0, n) (symmetric reflection, edge pixel repeated)."""
    period = 2 * n
    m = np.mod(i, period)
    return np.where(m >= n, period - 1 - m, m)


class ExemplarHead(nn.Module):
    """Backbone followed by a linear classifier over the surrogate classes."""

    def __init__(self, backbone: nn.Module, feature_dim: int, classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # [B, copies, C, H, W] -> [B * copies, C, H, W]
            x = x.flatten(0, 1)
        return self.classifier(self.backbone(x))


@register_task("exemplar")
class ExemplarTask(ClassificationTask):
    """Classify transformed patches into the seed patch (surrogate class) they were made from."""

    description = "Tell which seed patch (surrogate class) a randomly transformed patch was made from"
    paper = ("Dosovitskiy, Fischer, Springenberg, Riedmiller, Brox. Discriminative Unsupervised Feature Learning "
             "with Exemplar Convolutional Neural Networks. TPAMI 2016")
    metric_name = "accuracy"
    config_cls = ExemplarConfig
    optim = OptimConfig(epochs=100, batch_size=128, lr=0.01, momentum=0.9, nesterov=False,
                        weight_decay=5e-4, lr_decay=1 / 3, milestones=(0.5, 0.75))
    samples_per_image = 4
    min_image_size = 16
    small_image_policy = "upscale"
    needs_colour = True

    def __init__(self, config=None, image_size: int = 64):
        super().__init__(config, image_size)
        self.samples_per_image = int(self.config.copies)
        c = self.config
        self.patch = int(min(image_size, max(c.min_patch, round(c.patch_fraction * image_size))))
        margin = int(round((c.context - 1.0) * self.patch / 2))
        self.region = self.patch + 2 * margin  # stored side; (region - patch) is even: centre crop is exact
        self.sources: np.ndarray | None = None  # image index of each seed
        self.positions: np.ndarray | None = None  # (y, x) of each seed patch's top-left corner
        self.pca: tuple[np.ndarray, np.ndarray] | None = None  # dataset colour mean and components

    # -- seeds ----------------------------------------------------------------------------------
    def seed_positions(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Top-left (y, x) of one patch per image, drawn with probability proportional to the mean
        squared gradient magnitude inside the patch (uniform on a perfectly flat image)."""
        p = self.patch
        out = np.zeros((len(images), 2), dtype=np.int64)
        for start in range(0, len(images), _CHUNK):
            chunk = images[start:start + _CHUNK].astype(np.float32) / 255.0
            grey = chunk @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
            energy = np.zeros_like(grey)
            energy[:, :, :-1] += np.diff(grey, axis=2) ** 2
            energy[:, :-1, :] += np.diff(grey, axis=1) ** 2
            integral = np.pad(energy.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
            windows = (integral[:, p:, p:] - integral[:, :-p, p:] - integral[:, p:, :-p]
                       + integral[:, :-p, :-p]).astype(np.float64)
            windows = np.clip(windows, 0, None).reshape(len(chunk), -1)
            total = windows.sum(1, keepdims=True)
            weights = np.where(total > 1e-12, windows, 1.0)
            cdf = np.cumsum(weights, 1)
            cdf /= cdf[:, -1:]
            u = rng.random(len(chunk))
            flat = np.minimum((cdf < u[:, None]).sum(1), cdf.shape[1] - 1)
            side = images.shape[2] - p + 1
            out[start:start + len(chunk)] = np.stack([flat // side, flat % side], 1)
        return out

    def extract(self, image: np.ndarray, position) -> np.ndarray:
        """The stored region (uint8 region x region x 3) centred on the patch at ``position``."""
        margin = (self.region - self.patch) // 2
        y, x = int(position[0]), int(position[1])
        h, w = image.shape[:2]
        rows = _reflect(np.arange(y - margin, y - margin + self.region), h)
        cols = _reflect(np.arange(x - margin, x - margin + self.region), w)
        return image[rows[:, None], cols[None, :]]

    def select_seeds(self, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pick ``min(classes, len(images))`` seeds from different images; deterministic for ``seed``.

        Returns:
            ``(regions [N, R, R, 3] uint8, source image indices [N], positions [N, 2])``.
        """
        if images.ndim != 4 or images.shape[1] < self.patch or images.shape[2] < self.patch:
            raise ValueError(f"exemplar needs images of at least {self.patch} px stacked as [N, H, W, 3]")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xE8E8]))
        n = min(int(self.config.classes), len(images))
        sources = np.sort(rng.permutation(len(images))[:n])
        positions = self.seed_positions(images[sources], rng)
        regions = np.stack([self.extract(images[i], pos) for i, pos in zip(sources, positions)]) if n else \
            np.zeros((0, self.region, self.region, 3), np.uint8)
        return regions, sources, positions

    def centre(self, region: np.ndarray) -> np.ndarray:
        """The seed patch itself (the centre of a stored region)."""
        m = (region.shape[0] - self.patch) // 2
        return region[m:m + self.patch, m:m + self.patch]

    # -- the batch transform ----------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw ``n`` compositions of the paper's transformations from the configured ranges (CPU
        float32 tensors: tx, ty in pixels, scale, angle in degrees [n]; contrast [n, 3]; power,
        sv_factor, sv_shift [n, 2] for S and V; hue [n] in turns). Factors are drawn log-uniformly."""
        c = self.config
        u = torch.rand(n, 14, generator=generator, dtype=torch.float64)

        def span(x, lo, hi):
            return lo + (hi - lo) * x

        def log_span(x, lo, hi):
            return torch.exp(span(x, math.log(lo), math.log(hi)))

        t = c.translation * self.patch
        params = {"tx": span(u[:, 0], -t, t), "ty": span(u[:, 1], -t, t),
                  "scale": log_span(u[:, 2], c.scale_min, c.scale_max),
                  "angle": span(u[:, 3], -c.rotation, c.rotation),
                  "contrast": log_span(u[:, 4:7], c.contrast_min, c.contrast_max),
                  "power": log_span(u[:, 7:9], c.power_min, c.power_max),
                  "sv_factor": span(u[:, 9:11], c.sv_factor_min, c.sv_factor_max),
                  "sv_shift": span(u[:, 11:13], -c.sv_shift, c.sv_shift),
                  "hue": span(u[:, 13], -c.hue_shift, c.hue_shift)}
        return {k: v.float() for k, v in params.items()}

    def warp(self, regions: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Translate, scale and rotate the patch at the centre of each region (bilinear, mirrored borders).

        ``regions``: float RGB ``[N, 3, R, R]``; returns ``[N, 3, P, P]``. The content moves by
        (tx, ty) pixels, grows by ``scale`` and turns by ``angle`` degrees counter-clockwise (as seen
        on screen). The inverse map output -> source, in grid_sample's [-1, 1] coordinates, is one
        affine matrix per copy.
        """
        n, r = regions.shape[0], regions.shape[-1]
        a = torch.deg2rad(p["angle"])
        ca, sa = a.cos(), a.sin()
        k = self.patch / (r * p["scale"])  # output unit -> source unit
        m = 2.0 / (r * p["scale"])  # pixels -> source units
        tx, ty = p["tx"], p["ty"]
        theta = torch.stack([torch.stack([ca * k, -sa * k, -m * (ca * tx - sa * ty)], -1),
                             torch.stack([sa * k, ca * k, -m * (sa * tx + ca * ty)], -1)], 1)
        grid = F.affine_grid(theta, [n, 3, self.patch, self.patch], align_corners=False)
        return F.grid_sample(regions, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def recolour(self, rgb: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Contrast 1 (principal colour components), contrast 2 (S and V) and colour (hue) of float
        RGB ``[N, 3, P, P]`` in [0, 1]."""
        c = self.config
        if c.contrast_min != 1.0 or c.contrast_max != 1.0:
            x = rgb.flatten(2).transpose(1, 2)  # [N, P*P, 3]
            if self.pca is not None and c.contrast_pca == "dataset":
                mean = torch.from_numpy(self.pca[0]).to(x.device)
                vecs = torch.from_numpy(self.pca[1]).to(x.device).expand(len(x), 3, 3)
            else:  # each patch's own principal components, largest first
                mean = x.mean(1, keepdim=True)
                xc = x - mean
                vecs = torch.linalg.eigh(xc.transpose(1, 2) @ xc / max(1, x.shape[1] - 1))[1].flip(-1)
            mix = vecs @ torch.diag_embed(p["contrast"]) @ vecs.transpose(1, 2)  # scale each projection
            rgb = (mean + (x - mean) @ mix).clamp(0.0, 1.0).transpose(1, 2).reshape(rgb.shape)
        sv_identity = (c.power_min == c.power_max == 1.0 and c.sv_factor_min == c.sv_factor_max == 1.0
                       and c.sv_shift == 0.0)
        if sv_identity and c.hue_shift == 0:
            return rgb
        hsv = rgb_to_hsv(rgb)
        h, sv = hsv[:, :1], hsv[:, 1:]
        if not sv_identity:
            sv = (sv ** p["power"][..., None, None] * p["sv_factor"][..., None, None]
                  + p["sv_shift"][..., None, None]).clamp(0.0, 1.0)
        h = torch.remainder(h + p["hue"].view(-1, 1, 1, 1), 1.0)
        return hsv_to_rgb(torch.cat([h, sv], 1))

    def transform(self, regions: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Transformed copies (float RGB ``[N, 3, P, P]`` in [0, 1]) of the seeds in uint8 regions
        ``[N, R, R, 3]``, one composition of ``params`` (from :meth:`draw`) each, on the regions' device."""
        p = {k: v.to(regions.device) for k, v in params.items()}
        return self.recolour(self.warp(regions.permute(0, 3, 1, 2).float().div_(255.0), p), p)

    # -- protocol -------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray, seed: int) -> np.ndarray:
        """The seed regions (uint8 [N, R, R, 3], N = min(classes, images)); also the dataset colour PCA."""
        regions, self.sources, self.positions = self.select_seeds(images, seed)
        if len(regions):
            m = (self.region - self.patch) // 2
            centres = regions[:, m:m + self.patch, m:m + self.patch]
            self.pca = colour_pca(centres.astype(np.float32) / 255.0)
        return regions

    def holdout_items(self, train_items: np.ndarray, holdout_images: np.ndarray) -> np.ndarray:
        """The first seeds again (as many as there are held-out images, at least 8): held-out
        accuracy is the accuracy on fresh transformations of them. A prefix keeps each item's
        index equal to its surrogate class."""
        return train_items[: max(8, len(holdout_images))]

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``copies`` transformations of each seed region of a uint8 batch ``[B, R, R, 3]``:
        inputs ``[B, copies, 3, P, P]`` (normalised) and targets ``[B, copies]`` = the seed's index
        (its surrogate class), on the regions' device."""
        if index is None:
            raise ValueError("exemplar's make_batch needs the items' indices: each seed's index is its class.")
        b, copies = images.shape[0], int(self.config.copies)
        regions = images.repeat_interleave(copies, 0)  # [B * copies, R, R, 3], copies of a seed together
        rgb = self.transform(regions, self.draw(b * copies, generator))
        inputs = normalise(rgb.movedim(1, -1), scale=1.0).unflatten(0, (b, copies))
        target = index.to(images.device, torch.long).view(-1, 1).expand(b, copies).contiguous()
        return inputs, target

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        classes = len(self.sources) if self.sources is not None else int(self.config.classes)
        return ExemplarHead(backbone, feature_dim, max(1, classes))

    def run_info(self) -> dict:
        return {"surrogate_classes": None if self.sources is None else int(len(self.sources)),
                "patch_size": self.patch, "stored_region": self.region}

    # -- drawing --------------------------------------------------------------------------------
    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        tiles = []
        for k in range(inputs.shape[0]):
            t = int(target.reshape(-1)[k])
            label = f"seed {t}, copy {k + 1}"
            colour = (255, 255, 255)
            if output is not None:
                pred = int(output[k].argmax())
                label = f"seed {t} \u2192 {pred}"
                colour = (120, 230, 120) if pred == t else (255, 120, 120)
            tiles.append(labelled_tile(to_image(inputs[k]), label, colour=colour))
        return hstack(tiles)

    def render_preview(self, images: np.ndarray, items: np.ndarray, index, inputs: torch.Tensor,
                       target: torch.Tensor, seed: int) -> Image.Image:
        """One row per seed of the batch: its source image (patch boxed), the seed, and the
        transformed copies in ``inputs`` (what :meth:`make_batch` made for training)."""
        rows = []
        tile = 112
        f = tile / images.shape[2]
        for k, i in enumerate(np.asarray(torch.as_tensor(index).cpu()).tolist()):
            src = Image.fromarray(images[self.sources[i]]).convert("RGB").resize((tile, tile), Image.NEAREST)
            y, x = self.positions[i]
            ImageDraw.Draw(src).rectangle([x * f, y * f, (x + self.patch) * f - 1, (y + self.patch) * f - 1],
                                          outline=(255, 230, 0), width=2)
            tiles = [labelled_tile(src, f"image {int(self.sources[i])}", size=tile),
                     labelled_tile(Image.fromarray(np.ascontiguousarray(self.centre(items[i]))),
                                   f"seed patch {i}", size=tile)]
            tiles += [labelled_tile(to_image(view), f"copy {c + 1}", size=tile)
                      for c, view in enumerate(inputs[k])]
            rows.append(hstack(tiles))
        title = (f"{self.name}: each seed patch (boxed in its image) is a class; random transformations "
                 f"of it share its label (seed {seed})")
        return titled(vstack(rows, gap=8, bg=(40, 40, 46)), title)

    def caption(self, target: torch.Tensor) -> str:
        t = torch.as_tensor(target).reshape(-1)
        if len(t) == 1:
            return f"seed patch {int(t[0])}"
        return f"seed patch {int(t[0])}, {len(t)} copies"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        t = torch.as_tensor(target).reshape(-1)
        classes = len(self.sources) if self.sources is not None else int(self.config.classes)
        copies = "a random change" if len(t) == 1 else f"{len(t)} random changes"
        return (f"These are {copies} (shift, scale, rotation, colour) of seed patch {int(t[0])}, a patch cut "
                f"from one of the images. The network must say which of the {classes} seed patches each one was "
                "made from.")
