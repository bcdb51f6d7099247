"""DeepCluster: classify images into the clusters of the network's own features.

Caron, Bojanowski, Joulin and Douze, "Deep Clustering for Unsupervised Learning of Visual
Features", ECCV 2018. Before every epoch the features of all training images are computed by the
current network, reduced to 256 dimensions with PCA, whitened, L2-normalised and clustered with
k-means (k = 10,000 for the 1.28M ImageNet images, about 128 images per cluster). The cluster
assignments become the pseudo-labels of the epoch: a classifier on top of the network, re-created
at random each epoch (weights drawn from N(0, 0.01), bias 0, as in the paper's code), is trained
with cross-entropy against them. Two safeguards against trivial solutions (section 3.3): an empty
cluster is refilled by splitting a random non-empty one, and the images of an epoch are drawn
uniformly over the clusters so that a huge cluster does not dominate. Inputs are random resized
crops with horizontal flips (made in whole batches on the training device). The stability of the
clustering is tracked with the normalised mutual information (NMI) between consecutive epochs'
assignments. The paper's recipe: SGD with momentum
0.9, a constant learning rate of 0.05, weight decay 1e-5, batches of 256 images, 500 epochs
(an AlexNet with batch normalisation, on Sobel-filtered greyscale input). The released code
(facebookresearch/deepcluster, ``main.py``) trains the re-created top layer with an optimiser of
its own, plain SGD without momentum at the same learning rate (``--lr``, 0.05) and weight decay
(``10**--wd``, 1e-5), while the rest of the network's SGD has momentum 0.9; this task does the
same with two parameter groups (:meth:`DeepClusterTask.param_groups`: the classifier's with
momentum ``classifier_momentum``, 0 by default), which a checkpoint saves and a resumed run restores.

Differences from the paper, all settable: k-means starts from k-means++ seeds instead of random
points (as costly as one more iteration, and it avoids merged clusters); the default number of
clusters follows the data (one per 128 images, as 10,000 for ImageNet); the Sobel input is off by
default so that the exported backbone takes plain RGB like every torchvision model; the
classifier sits directly on the backbone's pooled features (no fully connected layers between).
Everything done before an epoch draws its randomness from generators seeded by (seed, epoch), and
the last assignments are kept in the model's ``assignments`` buffer, so a resumed run re-clusters
exactly as an uninterrupted one (on the same device).

Here the labels are the k-means clusters of this epoch (``0..k-1``); their numbering is arbitrary
and changes from one epoch to the next, which is why the classifier is re-initialised. There is no
held-out metric: pseudo-labels of unseen images mean nothing to the classifier trained on this
epoch's clustering. The training metric is the accuracy against the current pseudo-labels.

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
from sslstudio.tasks.base import (ClassificationTask, EpochPlan, MEAN, STD, OptimConfig, normalise_batch, param,
                                  to_image)
from sslstudio.tasks.clustering import kmeans, l2_normalize, nmi, pca_whiten, uniform_cluster_order
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import TEXT_PX, font, hstack, labelled_tile, titled, vstack

#: Images per cluster in the paper (10,000 clusters for 1.28M ImageNet images).
IMAGES_PER_CLUSTER = 128
#: Whitening inverts a covariance estimated from the data: keep at least this many images per dimension.
IMAGES_PER_PCA_DIM = 8
#: Aspect-ratio range of the random resized crop (torchvision's RandomResizedCrop, which the paper used).
RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster settings (paper values as defaults)."""

    clusters: int = param(0, "Number of k-means clusters (pseudo-classes). 0 = automatic: one cluster per "
                             "128 training images, as the paper's 10,000 clusters for 1.28M ImageNet images, "
                             "at least 10 and at most 10,000. Always capped at half the number of training "
                             "images so that a cluster holds two images on average.", min=0, max=100_000,
                             label="Clusters", special="auto")
    pca_dim: int = param(256, "PCA dimensions kept before whitening (paper: 256). Capped at the backbone's "
                              "feature size and at one dimension per 8 training images: whitening inverts the "
                              "covariance of the features, and with fewer images than that it maps them to the "
                              "corners of a regular simplex where k-means has nothing to find.", min=2, max=4096,
                              label="PCA dimensions")
    kmeans_iters: int = param(20, "k-means iterations per clustering (the paper's implementation: 20).",
                              min=1, max=1000, label="k-means iterations")
    sobel: bool = param(False, "Feed the backbone Sobel-filtered greyscale instead of colour (the paper does for "
                               "AlexNet/VGG so that colour does not become the easy clustering cue). The three "
                               "input channels are then (horizontal gradient, vertical gradient, magnitude). Off "
                               "by default: the exported backbone is meant for plain RGB input in torchvision, "
                               "and a backbone trained on gradients would need the same filter in front of it.",
                               label="Sobel filter input")
    crop_scale_min: float = param(0.08, "Smallest area of the random resized crop, as a fraction of the image "
                                        "(torchvision's default, which the paper used). The crop is resized to the "
                                        "image size whatever that is.", min=0.01, max=1.0, label="Crop scale min.")
    horizontal_flip: bool = param(True, "Mirror the crop left-right with probability 0.5 (paper: yes).")
    classifier_momentum: float = param(0.0, "SGD momentum of the classifier that is re-created every epoch. The "
                                            "released code trains it with its own plain SGD (momentum 0) at the "
                                            "run's learning rate and weight decay, while the backbone takes the "
                                            "run's momentum (paper: 0.9).", min=0.0, max=0.999)
    feature_batch_size: int = param(256, "Images per batch when computing the features for clustering "
                                         "(memory only; the result does not depend on it).", min=1, max=65_536,
                                         label="Feature batch size")


class Sobel(nn.Module):
    """Normalised RGB -> (gx, gy, magnitude) of the greyscale image, in normalised grey units / 4."""

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        self.register_buffer("kernels", torch.stack([kx, kx.T]).unsqueeze(1), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean
        grey = (rgb * self.grey).sum(1, keepdim=True) / 0.226
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernels.to(grey.dtype))
        mag = g.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()
        return torch.cat([g, mag], 1)


class DeepClusterHead(nn.Module):
    """Backbone (optionally behind a Sobel filter) and a linear classifier over the clusters.

    The buffer ``assignments`` holds the last clustering (``-1`` before the first), so that a
    resumed run compares its first clustering with the one it resumed from.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, clusters: int, items: int, sobel: bool):
        super().__init__()
        self.backbone = backbone
        self.sobel = Sobel() if sobel else None
        self.classifier = nn.Linear(feature_dim, clusters)
        self.register_buffer("assignments", torch.full((items,), -1, dtype=torch.long))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of normalised RGB images (what is clustered)."""
        return self.backbone(self.sobel(x) if self.sobel is not None else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@register_task("deepcluster")
class DeepClusterTask(ClassificationTask):
    """Cluster the network's features each epoch and learn to predict the cluster of each image."""

    description = "Predict each image's k-means cluster of the network's own features (re-clustered every epoch)"
    paper = ("Caron, Bojanowski, Joulin, Douze. Deep Clustering for Unsupervised Learning of Visual Features. "
             "ECCV 2018")
    metric_name = "accuracy"
    config_cls = DeepClusterConfig
    optim = OptimConfig(epochs=500, batch_size=256, lr=0.05, momentum=0.9, nesterov=False,
                        weight_decay=1e-5, lr_decay=1.0, milestones=())
    samples_per_image = 1
    min_image_size = 8
    small_image_policy = "upscale"
    needs_colour = False

    def __init__(self, config=None, image_size: int = 64):
        super().__init__(config, image_size)
        self.items: int | None = None
        self._labels: np.ndarray | None = None
        self._labels_on: torch.Tensor | None = None  # the labels on the training device

    @property
    def labels(self) -> np.ndarray | None:
        """The cluster of every training image from the last clustering (``None`` before it)."""
        return self._labels

    @labels.setter
    def labels(self, value) -> None:
        self._labels = None if value is None else np.asarray(value, dtype=np.int64)
        self._labels_on = None

    # -- sizes ----------------------------------------------------------------------------------
    def clusters_for(self, n: int) -> int:
        """Number of clusters used for ``n`` training images (see the ``clusters`` help)."""
        k = self.config.clusters or min(10_000, max(10, round(n / IMAGES_PER_CLUSTER)))
        return int(max(1, min(k, n // 2)))

    def pca_dim_for(self, n: int, feature_dim: int) -> int:
        """PCA dimensions used for ``n`` images with ``feature_dim``-dimensional features."""
        return int(max(2, min(self.config.pca_dim, feature_dim, n // IMAGES_PER_PCA_DIM)))

    # -- protocol -------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray, seed: int) -> np.ndarray:
        self.items = len(images)
        return images

    def holdout_items(self, train_items: np.ndarray, holdout_images: np.ndarray) -> None:
        """None: pseudo-labels exist only for the images clustered this epoch."""
        return None

    def crop_boxes(self, batch: int, height: int, width: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision's RandomResizedCrop boxes for ``batch`` images, drawn at once (CPU).

        Up to 10 tries per image of an area fraction uniform in ``[crop_scale_min, 1]`` and an
        aspect ratio log-uniform in ``RATIO``; the first box that fits is kept (the whole image, or
        its central square, when none does), at a uniform integer position.

        Returns:
            ``(boxes [B, 4] int64 as (x0, y0, w, h), flips [B] bool)``.
        """
        u = torch.rand(batch, 10, 2, generator=generator, dtype=torch.float64)
        lo = self.config.crop_scale_min
        target = height * width * (lo + (1.0 - lo) * u[..., 0])
        log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
        found = fits.any(1)
        side = float(min(height, width))
        w = torch.where(found, w.gather(1, first)[:, 0], side)
        h = torch.where(found, h.gather(1, first)[:, 0], side)
        pos = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
        x0 = torch.where(found, torch.floor(pos[:, 0] * (width - w + 1)), float((width - side) // 2))
        y0 = torch.where(found, torch.floor(pos[:, 1] * (height - h + 1)), float((height - side) // 2))
        flips = torch.rand(batch, generator=generator) < 0.5
        if not self.config.horizontal_flip:
            flips = torch.zeros_like(flips)
        return torch.stack([x0, y0, w, h], 1).long(), flips

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random resized crops (resized to the image size) with horizontal flips of a uint8 batch
        ``[B, H, W, 3]``, normalised: inputs ``[B, 3, S, S]`` and each image's current cluster
        ``[B]`` (``-1`` before the first clustering or without ``index``), on the images' device.

        Each crop is one affine resampling (bilinear, half-pixel centres, clamped to the box's
        pixels: what cropping the box and then resizing it does), mirrored by the sign of its x scale
        when flipped.
        """
        b, height, width = images.shape[:3]
        boxes, flips = self.crop_boxes(b, height, width, generator)
        x0, y0, w, h = boxes.double().unbind(1)
        sign = 1.0 - 2.0 * flips.double()
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sign * w / width, zero, (2 * x0 + w) / width - 1], 1),
                             torch.stack([zero, h / height, (2 * y0 + h) / height - 1], 1)], 1)
        size = torch.tensor([width, height], dtype=torch.float64)
        lo = (2 * torch.stack([x0, y0], 1) + 1) / size - 1  # centres of the box's first and last pixels
        hi = (2 * torch.stack([x0 + w, y0 + h], 1) - 1) / size - 1
        grid = F.affine_grid(theta.to(images.device, torch.float32), [b, 3, self.image_size, self.image_size],
                             align_corners=False)
        grid = torch.maximum(torch.minimum(grid, hi.to(grid).view(b, 1, 1, 2)), lo.to(grid).view(b, 1, 1, 2))
        inputs = F.grid_sample(normalise_batch(images), grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
        if index is None or self.labels is None:
            return inputs, torch.full((b,), -1, dtype=torch.long, device=images.device)
        return inputs, self.labels_on(images.device)[index.to(images.device, torch.long)]

    def labels_on(self, device: torch.device) -> torch.Tensor:
        """The current cluster labels as a tensor on ``device`` (copied once per clustering)."""
        if self._labels_on is None or self._labels_on.device != torch.device(device):
            self._labels_on = torch.from_numpy(self.labels).to(device)
        return self._labels_on

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        n = self.items if self.items is not None else 0
        k = self.clusters_for(n) if n else (self.config.clusters or 10)
        return DeepClusterHead(backbone, feature_dim, k, n, self.config.sobel)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Two SGD groups, as the released code's two optimisers: everything but the classifier (the
        run's settings), then the classifier with momentum ``classifier_momentum`` (0: plain SGD).
        The order of the parameters is ``model.parameters()``'s (the classifier is registered last)."""
        classifier = list(model.classifier.parameters())
        ids = {id(p) for p in classifier}
        momentum = float(self.config.classifier_momentum)
        head = {"params": classifier, "momentum": momentum}
        if momentum == 0.0:
            head["nesterov"] = False  # torch refuses Nesterov without momentum
        return [{"params": [p for p in model.parameters() if id(p) not in ids]}, head]

    # -- clustering -----------------------------------------------------------------------------
    @torch.no_grad()
    def compute_features(self, model: nn.Module, items: np.ndarray, device: torch.device) -> torch.Tensor:
        """Features of every item by ``model`` (its backbone, behind the Sobel filter if any) in eval mode."""
        was_training = model.training
        model.eval()
        embed = model.embed if hasattr(model, "embed") else model.backbone
        feats = []
        bs = self.config.feature_batch_size
        try:
            for start in range(0, len(items), bs):
                batch = torch.from_numpy(np.ascontiguousarray(items[start:start + bs])).to(device)
                feats.append(embed(normalise_batch(batch)).float())
        finally:
            model.train(was_training)
        return torch.cat(feats)

    def cluster(self, features: torch.Tensor, k: int, seed: int):
        """PCA + whitening + L2 normalisation + k-means of ``features`` (DeepCluster's pipeline)."""
        n, d = features.shape
        x = l2_normalize(pca_whiten(features, self.pca_dim_for(n, d)))
        return kmeans(x, k, iters=self.config.kmeans_iters, seed=seed)

    def begin_epoch(self, model: nn.Module, items: np.ndarray, epoch: int, device: torch.device,
                    optimizer: torch.optim.Optimizer, seed: int) -> EpochPlan:
        """Re-cluster the training images, reset the classifier and plan a cluster-uniform epoch.

        Deterministic for (weights, seed, epoch): k-means, the classifier's new weights and the
        order all draw from generators seeded by ``(seed, epoch)``; the global random state is not
        touched.
        """
        n = len(items)
        if n == 0:
            raise ConfigError("deepcluster has no training images to cluster.")
        head = model
        k = min(head.classifier.out_features, self.clusters_for(n))
        features = self.compute_features(head, items, device)
        result = self.cluster(features, k, _seed(seed, epoch, 1))
        labels = result.labels.cpu()

        previous = getattr(head, "assignments", None)
        nmi_previous = None
        if previous is not None and previous.numel() == n and bool((previous >= 0).all()):
            nmi_previous = nmi(labels, previous.cpu())
        elif previous is None and self.labels is not None and len(self.labels) == n:
            nmi_previous = nmi(labels, torch.from_numpy(self.labels))
        if previous is not None and previous.numel() == n:
            previous.copy_(labels.to(previous.device))
        self.labels = labels.numpy().astype(np.int64)

        self.reset_classifier(head.classifier, optimizer, _seed(seed, epoch, 2))
        order = uniform_cluster_order(labels, n, _seed(seed, epoch, 3)).numpy()
        return EpochPlan(order=order, info={"nmi_previous": nmi_previous, "clusters": int(k),
                                            "empty_clusters_fixed": int(result.empty_fixed)})

    def shared_state(self):
        """The cluster label of every training image (what the samples' targets are)."""
        return None if self.labels is None else np.asarray(self.labels, dtype=np.int64)

    def load_shared_state(self, state) -> None:
        self.labels = None if state is None else np.asarray(state, dtype=np.int64)

    @staticmethod
    def reset_classifier(classifier: nn.Linear, optimizer: torch.optim.Optimizer | None, seed: int) -> None:
        """Fresh weights N(0, 0.01) and zero bias (the paper's code), and no optimiser state left for
        them (none is kept with the default plain SGD; a ``classifier_momentum`` buffer is dropped)."""
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            w = torch.randn(classifier.weight.shape, generator=g) * 0.01
            classifier.weight.copy_(w.to(classifier.weight.device, classifier.weight.dtype))
            if classifier.bias is not None:
                classifier.bias.zero_()
        if optimizer is not None:
            for p in classifier.parameters():
                optimizer.state.pop(p, None)

    # -- drawing --------------------------------------------------------------------------------
    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        t = int(target.reshape(-1)[0]) if target.numel() else -1
        label = f"cluster {t}" if t >= 0 else "not clustered yet"
        colour = (255, 255, 255)
        if output is not None:
            pred = int(output.reshape(-1, output.shape[-1])[0].argmax())
            label += f" \u2192 {pred}"
            colour = (120, 230, 120) if pred == t else (255, 120, 120)
        return labelled_tile(to_image(inputs), label, colour=colour)

    def begin_preview(self, items: np.ndarray, seed: int) -> None:
        """Cluster the preview's images as training's first :meth:`begin_epoch` would: the head
        training builds for ``seed`` (``torch.manual_seed(seed)``, then the default ``resnet18``
        backbone; the preview does not know another architecture) and the epoch-0 clustering of its
        features, on the CPU. The preview's labels are then training's epoch-0 labels of these
        images (for a resnet18 run; on CUDA up to float rounding). The global random state is kept."""
        from sslstudio.models import build_backbone

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone("resnet18")
            model = self.build_head(backbone, backbone.feature_dim)
        self.begin_epoch(model, items, 0, torch.device("cpu"), None, seed)

    def render_preview(self, images: np.ndarray, items: np.ndarray, index, inputs: torch.Tensor,
                       target: torch.Tensor, seed: int) -> Image.Image:
        """The batch's inputs (what :meth:`make_batch` made for training) grouped by their cluster in
        ``target``, one row per cluster, largest first."""
        index = np.asarray(torch.as_tensor(index).cpu())
        labels = np.asarray(torch.as_tensor(target).cpu())
        tile = 96
        rows = []
        for c in sorted(set(labels.tolist()), key=lambda c: (-(labels == c).sum(), c)):
            members = np.flatnonzero(labels == c)
            name = f"cluster {c}" if c >= 0 else "not clustered"
            head_panel = Image.new("RGB", (150, tile + 22), (24, 24, 28))
            draw = ImageDraw.Draw(head_panel)
            draw.text((8, tile // 2 - 4), name, fill=(235, 235, 235), font=font(16))
            draw.text((8, tile // 2 + 18), f"({len(members)} image{'s' if len(members) != 1 else ''})",
                      fill=(190, 190, 190), font=font(TEXT_PX))
            tiles = [labelled_tile(to_image(inputs[i]), f"image {int(index[i])}", size=tile) for i in members]
            rows.append(hstack([head_panel] + tiles))
        title = (f"{self.name}: training inputs (random resized crops) grouped by the first clustering "
                 f"(k-means on a randomly initialised ResNet-18's features"
                 f"{' behind a Sobel filter' if self.config.sobel else ''}) (seed {seed})")
        return titled(vstack(rows, gap=8, bg=(40, 40, 46)), title)

    def caption(self, target: torch.Tensor) -> str:
        t = torch.as_tensor(target).reshape(-1)
        c = int(t[0]) if t.numel() else -1
        return f"cluster {c}" if c >= 0 else "not clustered yet"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        t = torch.as_tensor(target).reshape(-1)
        c = int(t[0]) if t.numel() else -1
        crop = "a random crop of the image" + (" (mirrored half the time)" if self.config.horizontal_flip else "")
        if c < 0:
            return (f"The network sees {crop}. This image has no cluster yet (it is clustered before the first "
                    "epoch), so it teaches nothing for now.")
        k = int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else None
        among = f"which of the {k} clusters" if k else "which cluster"
        return (f"The network sees {crop} and must say {among} it was put in (here cluster {c}). The clusters "
                "are k-means groups of the network's own features, remade every epoch.")
