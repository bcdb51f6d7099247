"""Context prediction (relative patch position).

Doersch, Gupta and Efros, "Unsupervised Visual Representation Learning by Context Prediction",
ICCV 2015. A patch and one of its eight neighbours on a 3 x 3 grid are shown to a siamese
network (one shared trunk per patch, the two feature vectors concatenated, fully connected
layers), which predicts where the second patch lies relative to the first. The paper's patches
are 96 px with a 48 px gap between neighbouring cells (half a patch) and each patch jittered by up
to 7 px, so that the network cannot match edges or continue lines across the boundary. Against
chromatic aberration (which tells where in the lens' field a patch lies), the paper either drops
two of the three colour channels of each patch, replacing them with Gaussian noise of about 1/100
of the remaining channel's standard deviation ("colour dropping", the default here), or shifts
green and magenta towards grey ("projection"). Against a reliance on fine detail only, some
patches are down-sampled to as little as 100 pixels (10 x 10) and up-sampled again. Each patch
is normalised on its own (mean and standard deviation).

Scaling with the image: the whole grid, jitter included, must fit the image, so
``patch = image_size / (3 + 2 * gap_fraction + 2 * jitter_fraction)`` rounded down (the paper's
96 px patches need 3*96 + 2*48 + 2*7 = 398 px), ``gap = round(patch / 2)``,
``jitter = round(patch * 7 / 96)``: 64 px images give 15 px patches, 8 px gaps and 1 px of
jitter; 32 px images 7 px patches, 4 px gaps, 1 px of jitter. The grid is placed at a random
position where it fits. Pixelation goes down to ``max(3, round(patch * 10 / 96))`` px, for a
third of the patches (the paper says "some"; configurable).

Label semantics: the label is the neighbour's cell relative to the centre patch, numbered
row-major around the centre, skipping it (:data:`DIRECTIONS`, :data:`OFFSETS`)::

    0 top-left     1 top      2 top-right
    3 left         (centre)   4 right
    5 bottom-left  6 bottom   7 bottom-right

``inputs[0]`` is the centre patch, ``inputs[1]`` the neighbour; without jitter the neighbour's
top-left pixel is the centre's plus ``OFFSETS[label] * (patch + gap)`` (rows, columns).

Optimisation: the paper trains an AlexNet-style network with batch normalisation by SGD in Caffe
for about four weeks on one K40 GPU and gives no learning-rate schedule; the recipe here is a
standard SGD one for such a classifier (momentum 0.9, learning rate 0.01, weight decay 5e-4,
batch 128 pairs, 100 epochs, the rate divided by 10 at 60% and 80% of the run).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.tasks.base import ClassificationTask, Defence, OptimConfig, param
from sslstudio.tasks.patches import (crop_batch, display, dominant_channel, pixelate_batch, pixelation_matrices,
                                    project_colour_batch, standardise_batch, to_float_batch)
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import SMALL_TEXT_PX, TEXT_PX, font, grid, wrap

#: Direction of the neighbour relative to the centre patch, per label.
DIRECTIONS = ("top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right")
#: Grid step ``(rows, columns)`` from the centre to the neighbour, per label.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
CENTRE_COLOUR = (255, 200, 0)
NEIGHBOUR_COLOUR = (0, 200, 255)


@dataclass(frozen=True)
class ContextConfig:
    """Context-prediction settings (the paper's values, as fractions of the patch size)."""

    gap_fraction: float = param(0.5, "Gap between neighbouring grid cells as a fraction of the patch (paper: "
                                     "48 px for 96 px patches). The patch is sized so that the grid fits the "
                                     "image: patch = image_size / (3 + 2 * gap_fraction + 2 * jitter_fraction), "
                                     "gap = round(patch * gap_fraction); 64 px images: 15 px patches, 8 px gaps.",
                                min=0.0, max=1.0)
    jitter_fraction: float = param(7 / 96, "Largest random shift of each patch (rows and columns) as a fraction "
                                           "of the patch (paper: 7 px for 96 px patches); jitter = round(patch * "
                                           "value) px, 1 px for 32 and 64 px images. 0 turns it off.",
                                   min=0.0, max=0.25)
    colour: str = param("drop", "Defence against chromatic aberration: 'drop' keeps one random channel per patch "
                                "and replaces the others with faint Gaussian noise (paper), 'project' removes "
                                "the green-magenta component of every pixel (paper), 'none' keeps colours.",
                        choices=("drop", "project", "none"))
    drop_noise: float = param(0.01, "Standard deviation of the noise that replaces dropped channels, relative to "
                                    "the kept channel's (paper: about 1/100).", min=0.0, max=1.0,
                                    label="Dropped-channel noise")
    pixelation_probability: float = param(1 / 3, "Fraction of patches down-sampled and up-sampled again (the paper "
                                                 "does it to 'some' patches; a third by default).",
                                          min=0.0, max=1.0)
    pixelation_min_fraction: float = param(10 / 96, "Smallest side a patch is down-sampled to, as a fraction of "
                                                    "the patch (paper: 100 pixels = 10 x 10 for 96 px patches); "
                                                    "at least 3 px. The side is uniform between that and the "
                                                    "patch size.", min=0.0, max=1.0, label="Pixelation min. fraction")
    hidden_dim: int = param(1024, "Width of the fully connected layer on the two concatenated patch features "
                                  "(paper: 4096 on 2 x 4096 fc6 features; 1024 here on 2 x 512 for resnet18).",
                            min=16, max=8192, label="Hidden units")
    dropout: float = param(0.5, "Dropout after the fully connected layer.", min=0.0, max=0.9)


class ContextHead(nn.Module):
    """Siamese model: shared backbone on both patches, features concatenated (centre first), fc, 8 classes."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, len(OFFSETS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 2, 3, p, p]`` (centre, neighbour) -> ``[B, 8]`` position logits."""
        b = x.shape[0]
        features = self.backbone(x.flatten(0, 1))  # [2B, F]
        return self.classifier(self.fc(features.reshape(b, 2 * features.shape[-1])))


@register_task("context")
class ContextTask(ClassificationTask):
    """Predict in which of the eight neighbouring cells a second patch lies relative to a centre patch."""

    description = "Predict where a second patch lies (one of 8 neighbours) relative to a centre patch"
    paper = ("Doersch, Gupta, Efros. Unsupervised Visual Representation Learning by Context Prediction. "
             "ICCV 2015")
    metric_name = "accuracy"
    config_cls = ContextConfig
    optim = OptimConfig(epochs=100, batch_size=128, lr=0.01, momentum=0.9, nesterov=False,
                        weight_decay=5e-4, lr_decay=0.1, milestones=(0.6, 0.8))
    samples_per_image = 1
    min_image_size = 20
    small_image_policy = "upscale"
    needs_colour = False
    # the per-patch normalisation is not a setting (always on), so it is not declared here
    defences = (
        Defence("gap", "A gap between neighbouring cells (half a patch), so that the network cannot match "
                       "edges or continue lines across the boundary.", {"gap_fraction": 0.0}),
        Defence("jitter", "Each patch shifted at random by up to 7/96 of its side, so that exact alignment "
                          "does not give the position away.", {"jitter_fraction": 0.0}),
        Defence("colour dropping / projection", "Two of three colour channels dropped per patch (or the "
                "green-magenta component removed), against chromatic aberration, which tells where in the "
                "lens' field a patch lies.", {"colour": "none"}),
    )

    def __init__(self, config: ContextConfig | None = None, image_size: int = 64):
        super().__init__(config, image_size)
        c = self.config
        size = self.image_size
        patch = int(math.floor(size / (3 + 2 * c.gap_fraction + 2 * c.jitter_fraction)))
        while patch > 0:
            gap, jitter = int(round(patch * c.gap_fraction)), int(round(patch * c.jitter_fraction))
            if 3 * patch + 2 * gap + 2 * jitter <= size:
                break
            patch -= 1
        if patch < 3:
            raise ConfigError(f"context patches of {patch} px are too small for {size} px images; use larger "
                              "images or a smaller gap_fraction / jitter_fraction.")
        self.patch, self.gap, self.jitter = patch, gap, jitter
        self.step = patch + gap
        self.extent = 3 * patch + 2 * gap + 2 * jitter
        self.min_side = min(patch, max(3, int(round(patch * c.pixelation_min_fraction))))
        self._pixelation: dict = {}
        #: Where :meth:`make_batch` cut its last batch's patches (``cell0``, ``centre``, ``neighbour``:
        #: ``[B, 2]`` top-left pixels on the CPU), for :meth:`render_preview` to outline them.
        self.last_positions: dict | None = None

    # -- samples -----------------------------------------------------------------------------
    def geometry(self) -> dict:
        """Patch, gap and jitter in pixels for this image size."""
        return {"patch_px": self.patch, "gap_px": self.gap, "jitter_px": self.jitter,
                "pixelation_min_px": self.min_side, "grid_px": self.extent}

    def run_info(self) -> dict:
        return self.geometry()

    def batch_choices(self, size: int, batch: int, generator: torch.Generator) -> dict:
        """The random choices of a batch of pairs, drawn on the CPU from ``generator``.

        Returns ``label [B]``, ``origin [B, 2]``, ``jitters [B, 2, 2]`` (centre, neighbour; rows,
        columns), ``side [B, 2]`` (the side each patch is down-sampled to; ``patch``: not
        pixelated), ``keep [B, 2]`` (the channel colour dropping keeps) and ``noise
        [B, 2, 3, p, p]`` (standard normal, for the dropped channels). Labels, grid origin, jitter,
        pixelated sides and kept channels are uniform; a patch is pixelated with
        ``pixelation_probability``.
        """
        g, p = generator, self.patch
        label = torch.randint(0, len(OFFSETS), (batch,), generator=g)
        origin = torch.randint(0, size - self.extent + 1, (batch, 2), generator=g)
        jitters = torch.randint(-self.jitter, self.jitter + 1, (batch, 2, 2), generator=g)
        side = torch.full((batch, 2), p, dtype=torch.long)
        if self.min_side < p:
            pixelated = torch.rand(batch, 2, generator=g) < self.config.pixelation_probability
            side = torch.where(pixelated, torch.randint(self.min_side, p, (batch, 2), generator=g), side)
        out = {"label": label, "origin": origin, "jitters": jitters, "side": side}
        if self.config.colour == "drop":
            out["keep"] = torch.randint(0, 3, (batch, 2), generator=g)
            out["noise"] = torch.randn(batch, 2, 3, p, p, generator=g)
        return out

    def _pixelation_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Resampling matrices of every side from ``min_side`` to ``patch`` (identity), on ``device``."""
        key = str(device)
        if key not in self._pixelation:
            down, up = pixelation_matrices(self.patch, range(self.min_side, self.patch + 1))
            self._pixelation[key] = (down.to(device), up.to(device))
        return self._pixelation[key]

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs ``[B, 2, 3, p, p]`` (centre, neighbour) and labels ``[B]`` of a uint8 batch
        ``[B, S, S, 3]``, on its device.

        Both patches of every pair are cut in one gather; pixelation applies each patch's own
        down- and up-sampling matrices (identity when not pixelated) as batched matrix products;
        colour dropping, projection and the per-patch normalisation are whole-tensor operations.
        """
        b, size = images.shape[0], images.shape[1]
        if images.shape[2] != size or size < self.extent:
            raise ValueError(f"context needs square images of at least {self.extent} px; "
                             f"got {tuple(images.shape[1:3])}")
        r = self.batch_choices(size, b, generator)
        dev, p = images.device, self.patch
        offsets = torch.tensor(OFFSETS, dtype=torch.long)[r["label"]]  # [B, 2] (rows, columns)
        cell0 = r["origin"] + self.jitter
        centre = cell0 + self.step + r["jitters"][:, 0]
        neighbour = cell0 + (1 + offsets) * self.step + r["jitters"][:, 1]
        pos = torch.stack([centre, neighbour], dim=1)  # [B, 2, 2]
        self.last_positions = {"cell0": cell0, "centre": centre, "neighbour": neighbour}
        raw = crop_batch(images, pos[..., 0], pos[..., 1], p)  # [B, 2, 3, p, p] uint8
        if self.min_side < p:
            down, up = self._pixelation_on(dev)
            k = (r["side"] - self.min_side).to(dev)
            x = pixelate_batch(raw, down[k], up[k]).div_(255.0)
        else:
            x = to_float_batch(raw)
        if self.config.colour == "drop":
            keep = r["keep"].to(dev)
            kept = x.gather(2, keep.view(b, 2, 1, 1, 1).expand(-1, -1, 1, p, p))  # [B, 2, 1, p, p]
            mean = kept.mean(dim=(-2, -1), keepdim=True)
            std = (kept - mean).pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
            noisy = mean + r["noise"].to(dev) * (self.config.drop_noise * std)
            chosen = torch.arange(3, device=dev).view(1, 1, 3, 1, 1) == keep.view(b, 2, 1, 1, 1)
            x = torch.where(chosen, x, noisy)
        elif self.config.colour == "project":
            x = project_colour_batch(x)
        return standardise_batch(x, per_channel_std=False), r["label"].to(dev)

    # -- model and scores --------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        return ContextHead(backbone, feature_dim, self.config.hidden_dim, self.config.dropout)

    # -- drawing -----------------------------------------------------------------------------
    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        """The two network inputs (centre, neighbour) and a 3 x 3 diagram of the label."""
        label = int(target.reshape(-1)[0])
        pred = None if output is None else int(output.reshape(-1, len(OFFSETS))[0].argmax())
        return _hstack([self._input_view(inputs[0], "centre", CENTRE_COLOUR),
                        self._input_view(inputs[1], "neighbour", NEIGHBOUR_COLOUR),
                        _diagram(label, pred)])

    def _input_view(self, patch: torch.Tensor, name: str, colour) -> Image.Image:
        """A network input, framed, captioned with the colour channel it kept (colour dropping)."""
        if self.config.colour == "drop":
            kept = dominant_channel(patch)
            if kept >= 0:
                name += f" ({'RGB'[kept]} only)"
        return _framed(display(patch), name, colour)

    def render_preview(self, images, items, index, inputs, target, seed) -> Image.Image | None:
        """Per sample of the preview's batch: the source with the grid and both patches outlined (where
        :meth:`make_batch` cut them), the two inputs, the label."""
        where = self.last_positions
        if where is None or len(where["centre"]) != len(index):
            return None  # not the batch make_batch made last: the plain tiles
        panels = []
        for b, i in enumerate(index):
            positions = [tuple(int(v) for v in where[key][b]) for key in ("cell0", "centre", "neighbour")]
            panels.append(_hstack([self._source_view(items[int(i)], *positions),
                                   self._input_view(inputs[b, 0], "centre", CENTRE_COLOUR),
                                   self._input_view(inputs[b, 1], "neighbour", NEIGHBOUR_COLOUR),
                                   _diagram(int(target[b]))]))
        return grid(panels, 1, title=f"{self.name}: {self.description} (seed {seed}; "
                                           f"patch {self.patch} px, gap {self.gap} px, jitter \u00b1{self.jitter} px)")

    def _source_view(self, image: np.ndarray, cell0: tuple[int, int], centre: tuple[int, int],
                     neighbour: tuple[int, int], shown: int = 160) -> Image.Image:
        """The source image with the unjittered 3 x 3 grid (grey) and the two patches outlined."""
        scale = shown / image.shape[0]
        view = Image.fromarray(np.ascontiguousarray(image), "RGB").resize((shown, shown), Image.NEAREST)
        draw = ImageDraw.Draw(view)

        def box(y: int, x: int, colour, width: int) -> None:
            x0, y0 = x * scale, y * scale
            x1, y1 = (x + self.patch) * scale - 1, (y + self.patch) * scale - 1
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)

        for r in range(3):
            for c in range(3):
                box(cell0[0] + r * self.step, cell0[1] + c * self.step, (150, 150, 150), 1)
        box(*centre, CENTRE_COLOUR, 2)
        box(*neighbour, NEIGHBOUR_COLOUR, 2)
        return _captioned(view, "source + grid")


    def caption(self, target: torch.Tensor) -> str:
        return f"neighbour: {DIRECTIONS[int(torch.as_tensor(target).reshape(-1)[0])]}"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        label = int(torch.as_tensor(target).reshape(-1)[0])
        colour = {"drop": " Each patch keeps only one colour channel, so colour fringes cannot give the answer "
                          "away.",
                  "project": " Green and magenta are removed from both patches, so colour fringes cannot give "
                             "the answer away.", "none": ""}[self.config.colour]
        return (f"The network sees two patches of the image, a centre patch (yellow) and one of its eight "
                f"neighbours (blue), and must say where the second lies relative to the first: here "
                f"{DIRECTIONS[label]} (label {label}).{colour}")

def _captioned(image: Image.Image, caption: str, colour=(235, 235, 235)) -> Image.Image:
    """``image`` with ``caption`` under it (wrapped to the image's width)."""
    lines = wrap(caption, image.width - 4, TEXT_PX)
    line_h = TEXT_PX + 4
    band = 6 + line_h * len(lines)
    out = Image.new("RGB", (image.width, image.height + band), (24, 24, 28))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((image.width // 2, image.height + 3 + line_h * k + line_h // 2), line, fill=colour,
                  font=font(TEXT_PX), anchor="mm")
    return out


def _framed(image: Image.Image, caption: str, colour, shown: int = 120) -> Image.Image:
    """A network input upscaled (nearest) inside a coloured frame, with a caption."""
    border = 3
    out = Image.new("RGB", (shown + 2 * border, shown + 2 * border), colour)
    out.paste(image.convert("RGB").resize((shown, shown), Image.NEAREST), (border, border))
    return _captioned(out, caption, colour)


def _diagram(label: int, pred: int | None = None, cell: int = 36, gap: int = 8) -> Image.Image:
    """A 3 x 3 diagram: centre cell, the labelled neighbour cell, and the label as text."""
    side = 3 * cell + 2 * gap
    pad = 8
    img = Image.new("RGB", (side + 2 * pad, side + 2 * pad), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    dr, dc = OFFSETS[label]
    for r in range(3):
        for c in range(3):
            x, y = pad + c * (cell + gap), pad + r * (cell + gap)
            fill, outline = (50, 50, 56), (110, 110, 118)
            if (r, c) == (1, 1):
                fill, outline = (90, 75, 20), CENTRE_COLOUR
            elif (r, c) == (1 + dr, 1 + dc):
                fill, outline = (10, 70, 90), NEIGHBOUR_COLOUR
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill, outline=outline, width=2)
            if (r, c) != (1, 1):
                k = OFFSETS.index((r - 1, c - 1))
                draw.text((x + cell // 2, y + cell // 2), str(k), fill=(235, 235, 235), font=font(SMALL_TEXT_PX),
                          anchor="mm")
            if pred is not None and (r, c) != (1, 1) and OFFSETS.index((r - 1, c - 1)) == pred and pred != label:
                draw.rectangle((x + 3, y + 3, x + cell - 4, y + cell - 4), outline=(255, 120, 120), width=2)
    text = f"{label}: {DIRECTIONS[label]}"
    colour = (255, 255, 255)
    if pred is not None:
        text += f" \u2192 {pred}"
        colour = (120, 230, 120) if pred == label else (255, 120, 120)
    return _captioned(img, text, colour)


def _hstack(images: list[Image.Image], gap: int = 6, bg=(24, 24, 28)) -> Image.Image:
    """Side by side, vertically centred."""
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), bg)
    x = 0
    for i in images:
        out.paste(i, (x, (h - i.height) // 2))
        x += i.width + gap
    return out
