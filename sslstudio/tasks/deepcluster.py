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
crops with horizontal flips. The stability of the clustering is tracked with the normalised mutual
information (NMI) between consecutive epochs' assignments. The paper's recipe: SGD with momentum
0.9, a constant learning rate of 0.05, weight decay 1e-5, batches of 256 images, 500 epochs
(an AlexNet with batch normalisation, on Sobel-filtered greyscale input).

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
from sslstudio.tasks.base import (ClassificationTask, EpochPlan, MEAN, STD, OptimConfig, param, to_image,
                                  to_tensor)
from sslstudio.tasks.clustering import kmeans, l2_normalize, nmi, pca_whiten, uniform_cluster_order
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import font, hstack, labelled_tile

#: Images per cluster in the paper (10,000 clusters for 1.28M ImageNet images).
IMAGES_PER_CLUSTER = 128
#: Whitening inverts a covariance estimated from the data: keep at least this many images per dimension.
IMAGES_PER_PCA_DIM = 8


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster settings (paper values as defaults)."""

    clusters: int = param(0, "Number of k-means clusters (pseudo-classes). 0 = automatic: one cluster per "
                             "128 training images, as the paper's 10,000 clusters for 1.28M ImageNet images, "
                             "at least 10 and at most 10,000. Always capped at half the number of training "
                             "images so that a cluster holds two images on average.", min=0, max=100_000)
    pca_dim: int = param(256, "PCA dimensions kept before whitening (paper: 256). Capped at the backbone's "
                              "feature size and at one dimension per 8 training images: whitening inverts the "
                              "covariance of the features, and with fewer images than that it maps them to the "
                              "corners of a regular simplex where k-means has nothing to find.", min=2, max=4096)
    kmeans_iters: int = param(20, "k-means iterations per clustering (the paper's implementation: 20).",
                              min=1, max=1000)
    sobel: bool = param(False, "Feed the backbone Sobel-filtered greyscale instead of colour (the paper does for "
                               "AlexNet/VGG so that colour does not become the easy clustering cue). The three "
                               "input channels are then (horizontal gradient, vertical gradient, magnitude). Off "
                               "by default: the exported backbone is meant for plain RGB input in torchvision, "
                               "and a backbone trained on gradients would need the same filter in front of it.")
    crop_scale_min: float = param(0.08, "Smallest area of the random resized crop, as a fraction of the image "
                                        "(torchvision's default, which the paper used). The crop is resized to the "
                                        "image size whatever that is.", min=0.01, max=1.0)
    horizontal_flip: bool = param(True, "Mirror the crop left-right with probability 0.5 (paper: yes).")
    feature_batch_size: int = param(256, "Images per batch when computing the features for clustering "
                                         "(memory only; the result does not depend on it).", min=1, max=65_536)


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


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int, scale_min: float,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop on a uint8 HxWx3 array, drawing from ``rng``."""
    h, w = image.shape[:2]
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            box = (x0, y0, cw, ch)
            break
    if box is None:  # fall back to the central square
        side = min(h, w)
        box = ((w - side) // 2, (h - side) // 2, side, side)
    x0, y0, cw, ch = box
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]))
    return np.array(crop.resize((size, size), Image.BILINEAR))


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
        self.labels: np.ndarray | None = None

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

    def augment(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random resized crop (to the image size) and horizontal flip, drawn from ``rng``."""
        out = random_resized_crop(image, rng, self.image_size, self.config.crop_scale_min)
        if self.config.horizontal_flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return out

    def make_sample(self, image: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """An augmented image with label -1 (no cluster: only :meth:`make_item` knows the index)."""
        return to_tensor(self.augment(image, rng)), torch.tensor(-1, dtype=torch.long)

    def make_item(self, index: int, item: np.ndarray, rng: np.random.Generator):
        """An augmented view of image ``index`` and its current cluster (-1 before the first clustering)."""
        inputs, _ = self.make_sample(item, rng)
        label = -1 if self.labels is None or index >= len(self.labels) else int(self.labels[index])
        return inputs, torch.tensor(label, dtype=torch.long)

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        n = self.items if self.items is not None else 0
        k = self.clusters_for(n) if n else (self.config.clusters or 10)
        return DeepClusterHead(backbone, feature_dim, k, n, self.config.sobel)

    # -- clustering -----------------------------------------------------------------------------
    @torch.no_grad()
    def compute_features(self, model: nn.Module, items: np.ndarray, device: torch.device) -> torch.Tensor:
        """Features of every item by ``model`` (its backbone, behind the Sobel filter if any) in eval mode."""
        was_training = model.training
        model.eval()
        mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        embed = model.embed if hasattr(model, "embed") else model.backbone
        feats = []
        bs = self.config.feature_batch_size
        try:
            for start in range(0, len(items), bs):
                batch = torch.from_numpy(np.ascontiguousarray(items[start:start + bs])).to(device)
                x = (batch.permute(0, 3, 1, 2).float().div_(255.0) - mean) / std
                feats.append(embed(x).float())
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
        """Fresh weights N(0, 0.01) and zero bias (the paper's code), and no momentum left for them."""
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

    def render_preview(self, images: np.ndarray, n: int, seed: int) -> Image.Image:
        """The preview images grouped by k-means on a randomly initialised ResNet-18's features.

        This is DeepCluster's first clustering (before any training): one row per cluster.
        """
        from sslstudio.models import build_backbone

        images = images[:max(2, n)]
        m = len(images)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone("resnet18")
        head = DeepClusterHead(backbone, backbone.feature_dim, 1, 0, self.config.sobel)
        features = self.compute_features(head, images, torch.device("cpu"))
        k = int(max(2, min(6, m // 4))) if m >= 4 else 1
        labels = self.cluster(features, k, _seed(seed, 0, 1)).labels.numpy()

        tile = 96
        rows = []
        for c in sorted(range(k), key=lambda c: (-(labels == c).sum(), c)):
            members = np.flatnonzero(labels == c)
            head_panel = Image.new("RGB", (150, tile + 22), (24, 24, 28))
            draw = ImageDraw.Draw(head_panel)
            draw.text((8, tile // 2 - 4), f"cluster {c}", fill=(235, 235, 235), font=font(16))
            draw.text((8, tile // 2 + 18), f"({len(members)} image{'s' if len(members) != 1 else ''})",
                      fill=(190, 190, 190), font=font(14))
            tiles = [labelled_tile(Image.fromarray(images[i]), f"cluster {c}", size=tile) for i in members]
            rows.append(hstack([head_panel] + tiles))
        title = (f"{self.name}: images grouped by k-means (k={k}) on the features of a randomly initialised "
                 f"ResNet-18{' behind a Sobel filter' if self.config.sobel else ''}, as DeepCluster's first "
                 f"clustering (seed {seed})")
        gap, top = 8, 30
        width = max(max(r.width for r in rows) + 2 * gap, 16 + int(font(15).getlength(title)))
        height = top + sum(r.height + gap for r in rows) + gap
        out = Image.new("RGB", (width, height), (40, 40, 46))
        ImageDraw.Draw(out).text((gap, 7), title, fill=(235, 235, 235), font=font(15))
        y = top + gap
        for r in rows:
            out.paste(r, (gap, y))
            y += r.height + gap
        return out
