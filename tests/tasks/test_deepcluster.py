import numpy as np
import pytest
import torch
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config, to_tensor
from sslstudio.tasks.deepcluster import DeepClusterConfig, DeepClusterHead, random_resized_crop


class TinyBackbone(nn.Module):
    """A few convolutions and global pooling: enough to give images different features."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.feature_dim = 16

    def forward(self, x):
        return self.net(x).mean(dim=(2, 3))


def coloured_images(n=48, size=16, seed=0):
    """Three groups of images (red, green, blue), with noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220)])
    group = np.arange(n) % 3
    imgs = colours[group][:, None, None, :] + rng.normal(0, 20, (n, size, size, 3))
    return np.clip(imgs, 0, 255).astype(np.uint8), group


def setup(seed=0, clusters=3, n=48):
    task = create_task("deepcluster", {"clusters": clusters, "kmeans_iters": 10}, image_size=16)
    images, group = coloured_images(n)
    items = task.prepare(images, seed)
    torch.manual_seed(0)
    model = task.build_head(TinyBackbone(), 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return task, items, group, model, optimizer


def train_one_step(task, model, optimizer, items):
    x = torch.stack([to_tensor(im) for im in items[:8]])
    target = torch.tensor(task.labels[:8])
    optimizer.zero_grad()
    task.loss(model(x), target).backward()
    optimizer.step()


def test_begin_epoch_labels_order_and_info():
    task, items, group, model, optimizer = setup()
    plan = task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    labels = task.labels
    assert labels.shape == (48,) and labels.min() >= 0 and labels.max() < 3
    assert len(np.unique(labels)) == 3
    assert plan.info["clusters"] == 3 and plan.info["nmi_previous"] is None
    assert plan.info["empty_clusters_fixed"] >= 0
    # the three colour groups are what a random network's features separate
    from sslstudio.tasks.clustering import nmi
    assert nmi(torch.from_numpy(labels), torch.from_numpy(group)) > 0.9
    order = np.asarray(plan.order)
    assert order.shape == (48,) and order.min() >= 0 and order.max() < 48
    counts = np.bincount(labels[order], minlength=3)
    assert counts.max() - counts.min() <= 3
    # the stored assignments make the next epoch's NMI
    assert torch.equal(model.assignments, torch.from_numpy(labels))
    plan2 = task.begin_epoch(model, items, 1, torch.device("cpu"), optimizer, seed=0)
    assert plan2.info["nmi_previous"] == pytest.approx(1.0)  # same weights: same partition


def test_order_is_uniform_over_unbalanced_clusters():
    task, items, _, model, optimizer = setup()
    images, group = coloured_images(60)
    images = images[(group == 0) | (np.arange(60) < 12)]  # mostly red: unbalanced groups
    task.prepare(images, 0)
    model = task.build_head(TinyBackbone(), 16)
    plan = task.begin_epoch(model, images, 0, torch.device("cpu"), optimizer, seed=0)
    sizes = np.bincount(task.labels, minlength=3)
    counts = np.bincount(task.labels[plan.order], minlength=3)
    assert sizes.max() >= 2 * sizes.min()
    assert counts.max() - counts.min() <= 3


def test_begin_epoch_resets_classifier_and_its_momentum():
    task, items, _, model, optimizer = setup()
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    train_one_step(task, model, optimizer, items)
    classifier, backbone_weight = model.classifier, model.backbone.net[0].weight
    assert "momentum_buffer" in optimizer.state[classifier.weight]
    with torch.no_grad():
        classifier.weight.fill_(5.0)
        classifier.bias.fill_(3.0)
    task.begin_epoch(model, items, 1, torch.device("cpu"), optimizer, seed=0)
    assert classifier.weight.abs().max() < 0.1 and 0.005 < classifier.weight.std() < 0.02
    assert torch.equal(classifier.bias, torch.zeros_like(classifier.bias))
    assert classifier.weight not in optimizer.state and classifier.bias not in optimizer.state
    assert "momentum_buffer" in optimizer.state[backbone_weight]  # the backbone keeps its momentum
    train_one_step(task, model, optimizer, items)  # the optimiser still works after the reset


def test_begin_epoch_is_deterministic_and_leaves_global_rng_alone():
    runs = []
    for _ in range(2):
        task, items, _, model, optimizer = setup()
        state = torch.get_rng_state()
        plan = task.begin_epoch(model, items, 2, torch.device("cpu"), optimizer, seed=5)
        assert torch.equal(torch.get_rng_state(), state)
        runs.append((task.labels.copy(), np.asarray(plan.order), model.classifier.weight.detach().clone()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert torch.equal(runs[0][2], runs[1][2])
    task, items, _, model, optimizer = setup()
    other = task.begin_epoch(model, items, 3, torch.device("cpu"), optimizer, seed=5)
    assert not np.array_equal(np.asarray(other.order), runs[0][1])  # another epoch, another order


def test_resumed_model_reports_nmi_with_the_clustering_it_resumed_from():
    task, items, _, model, optimizer = setup()
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    fresh_task, _, _, fresh_model, fresh_opt = setup()
    fresh_model.load_state_dict(model.state_dict())  # what resuming from a checkpoint does
    plan = fresh_task.begin_epoch(fresh_model, items, 1, torch.device("cpu"), fresh_opt, seed=0)
    assert plan.info["nmi_previous"] == pytest.approx(1.0)


def test_make_item_returns_the_stored_label():
    task, items, _, model, optimizer = setup()
    inputs, target = task.make_item(4, items[4], np.random.default_rng(0))
    assert inputs.shape == (3, 16, 16) and int(target) == -1  # not clustered yet
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    for index in (0, 4, 47):
        inputs, target = task.make_item(index, items[index], np.random.default_rng(index))
        assert inputs.shape == (3, 16, 16) and target.dtype == torch.long
        assert int(target) == int(task.labels[index])
    a, _ = task.make_item(3, items[3], np.random.default_rng(9))
    b, _ = task.make_item(3, items[3], np.random.default_rng(9))
    assert torch.equal(a, b)


def test_random_resized_crop_bounds():
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    for seed in range(10):
        out = random_resized_crop(img, np.random.default_rng(seed), 16, 0.08)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    full = random_resized_crop(img, np.random.default_rng(0), 32, 1.0)  # area 1: the whole image (up to aspect)
    assert full.shape == (32, 32, 3)


def test_loss_and_metric_ignore_unclustered_targets():
    task = create_task("deepcluster", image_size=16)
    output = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    target = torch.tensor([0, 0, -1])
    assert task.metric(output, target) == (1.0, 2)
    assert task.loss(output, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(output[:2], target[:2]).item())


def test_cluster_count_scales_with_the_data():
    task = create_task("deepcluster", image_size=16)
    assert task.clusters_for(1_281_167) == 10_000  # the paper's ImageNet setting
    assert task.clusters_for(3_900) == 30
    assert task.clusters_for(40) == 10
    assert task.clusters_for(12) == 6  # at most half the images
    assert create_task("deepcluster", {"clusters": 50}, image_size=16).clusters_for(40) == 20
    assert task.pca_dim_for(1_000_000, 512) == 256 and task.pca_dim_for(400, 512) == 50
    assert task.holdout_items(np.zeros((4, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 3), np.uint8)) is None


def test_sobel_head_feeds_gradients():
    backbone = TinyBackbone()
    head = DeepClusterHead(backbone, 16, 3, 0, sobel=True)
    flat = to_tensor(np.full((16, 16, 3), 128, np.uint8))[None]
    assert head.sobel(flat).abs().max() < 1e-5  # no gradient in a flat image
    ramp = np.repeat(np.linspace(0, 255, 16)[None, :, None], 16, 0).repeat(3, 2).astype(np.uint8)
    g = head.sobel(to_tensor(ramp)[None])
    assert g.shape == (1, 3, 16, 16)
    assert g[0, 0, 4:12, 4:12].min() > 0 and g[0, 1].abs().max() < 1e-5  # horizontal ramp: gx only
    assert not any(k.startswith("sobel") for k in head.state_dict())
    assert head(flat).shape == (1, 3)


def test_render_and_preview():
    task, items, _, model, optimizer = setup()
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    inputs, target = task.make_item(0, items[0], np.random.default_rng(0))
    img = task.render(inputs, target)
    assert img.width >= 100 and img.height > 100 and np.asarray(img)[-15:-5].max() > 200
    assert task.render(inputs, target, output=torch.randn(3)).width == img.width
    preview = task.render_preview(items[:8], 8, 0)
    assert preview.width > 400 and preview.height > 2 * 100  # a title and at least two cluster rows


def test_config_validation_and_paper_defaults():
    with pytest.raises(ConfigError, match="unknown option"):
        make_config(DeepClusterConfig, {"k": 3})
    with pytest.raises(ConfigError, match="pca_dim"):
        make_config(DeepClusterConfig, {"pca_dim": 1})
    cfg = DeepClusterConfig()
    assert (cfg.pca_dim, cfg.kmeans_iters) == (256, 20)
    optim = get_task("deepcluster").optim
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.batch_size) == (0.05, 0.9, 1e-5, 256)


@pytest.mark.slow
def test_resumed_run_reclusters_identically(tmp_path):
    from PIL import Image

    from sslstudio.engine import PretrainConfig, RunControl, pretrain
    from sslstudio.runs import RunDir

    images, _ = coloured_images(24, 16)
    data = tmp_path / "imgs"
    data.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(data / f"img_{i:02d}.png")

    def config(out, **kw):
        return PretrainConfig(task="deepcluster", data=str(data), out=str(tmp_path / out), arch="resnet18",
                              epochs=2, batch_size=8, image_size=16, device="cpu", seed=0, log_every=1,
                              task_options={"clusters": 4}, **kw)

    pretrain(config("straight", workers=1))  # a worker process must see this epoch's labels
    control = RunControl()

    def stop_after_first_epoch(event):
        if event.kind == "checkpoint" and event.epoch == 0:
            control.cancel()

    assert pretrain(config("resumed", workers=0), on_event=stop_after_first_epoch,
                    control=control)["status"] == "cancelled"
    assert pretrain(config("resumed", workers=0, resume=True))["status"] == "finished"

    def epochs(out):
        return [r for r in RunDir(tmp_path / out).read_metrics() if r["type"] == "epoch"]

    straight, resumed = epochs("straight"), epochs("resumed")
    assert straight[0]["nmi_previous"] is None and straight[1]["nmi_previous"] is not None
    for a, b in zip(straight, resumed):
        for key in ("nmi_previous", "clusters", "empty_clusters_fixed", "train_loss", "train_accuracy"):
            assert a[key] == b[key], key
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
