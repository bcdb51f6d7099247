import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.models.normalise import denormalise
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config, normalise_batch, to_tensor
from sslstudio.tasks.deepcluster import DeepClusterConfig, DeepClusterHead


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


def batch(task, items, seed=0, index=None):
    """``make_batch`` of uint8 items, labelled by their position (or ``index``; ``False``: no index)."""
    index = torch.arange(len(items)) if index is None else index
    return task.make_batch(torch.from_numpy(np.ascontiguousarray(items)), torch.Generator().manual_seed(seed),
                           None if index is False else torch.as_tensor(index))


def test_make_batch_returns_the_stored_labels():
    task, items, _, model, optimizer = setup()
    inputs, target = batch(task, items[:6])
    assert inputs.shape == (6, 3, 16, 16) and inputs.dtype == torch.float32
    assert target.dtype == torch.long and target.tolist() == [-1] * 6  # not clustered yet
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    index = [0, 4, 47, 4]
    inputs, target = batch(task, items[index], index=index)
    assert target.tolist() == [int(task.labels[i]) for i in index]
    assert batch(task, items[:3], index=False)[1].tolist() == [-1] * 3  # without indices: no cluster
    a, ta = batch(task, items[:8], seed=9)
    b, tb = batch(task, items[:8], seed=9)
    c, _ = batch(task, items[:8], seed=10)
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)
    task.load_shared_state(np.zeros(48, np.int64))  # another process's clustering replaces the labels
    assert batch(task, items[:4])[1].tolist() == [0] * 4


def coordinate_images(n=4, size=32):
    """Images whose red channel is the column and green the row (so a crop's pixels say where they are from)."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x * 7 % 256, y * 7 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)
    return np.repeat(img[None], n, 0)


def test_crop_boxes_follow_random_resized_crop():
    task = create_task("deepcluster", {"crop_scale_min": 0.08}, image_size=32)
    boxes, flips = task.crop_boxes(2000, 32, 32, torch.Generator().manual_seed(0))
    x0, y0, w, h = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 32).all() and (y0 + h <= 32).all()
    area = (w * h).double() / 32**2
    assert (area >= 0.08 - (w + h) / 2 / 32**2).all()  # at least crop_scale_min (up to rounding)
    assert area.min() < 0.12 and area.max() > 0.9  # the range is used
    aspect = (w / h.double())[(w > 8) & (h > 8) & (w < 32) & (h < 32)]
    assert aspect.min() > 0.75 * 0.8 and aspect.max() < 4 / 3 * 1.25
    assert 0.45 < flips.double().mean() < 0.55
    no_flip = create_task("deepcluster", {"horizontal_flip": False}, image_size=32)
    assert not no_flip.crop_boxes(200, 32, 32, torch.Generator().manual_seed(0))[1].any()
    whole = create_task("deepcluster", {"crop_scale_min": 1.0}, image_size=32)
    boxes, _ = whole.crop_boxes(200, 32, 32, torch.Generator().manual_seed(1))
    assert (boxes[:, 2] * boxes[:, 3] >= 31 * 32).all()  # area 1: the whole image (up to the aspect's rounding)


def test_batch_is_the_box_resized_and_flipped():
    task = create_task("deepcluster", {"crop_scale_min": 0.08}, image_size=32)
    images = coordinate_images(12)
    inputs, _ = batch(task, images, seed=3, index=False)
    boxes, flips = task.crop_boxes(12, 32, 32, torch.Generator().manual_seed(3))  # the same draws
    assert flips.any() and not flips.all()
    for k, ((x0, y0, w, h), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        crop = torch.from_numpy(images[k, y0:y0 + h, x0:x0 + w]).permute(2, 0, 1)[None].float()
        expected = F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=False)[0]
        expected = expected.flip(-1) if flip else expected
        assert torch.allclose(denormalise(inputs[k]) * 255, expected, atol=1e-3)


def test_flip_mirrors_the_image():
    task = create_task("deepcluster", {"crop_scale_min": 1.0}, image_size=32)
    images = coordinate_images(16)
    boxes, flips = task.crop_boxes(16, 32, 32, torch.Generator().manual_seed(2))
    inputs, _ = batch(task, images, seed=2, index=False)
    plain = normalise_batch(torch.from_numpy(images))
    for k in np.flatnonzero((boxes[:, 2] == 32) & (boxes[:, 3] == 32)):
        expected = plain[k].flip(-1) if flips[k] else plain[k]
        assert torch.allclose(inputs[k], expected, atol=1e-4)
    assert flips.any() and not flips.all()


def test_batch_on_a_device_equals_the_cpu_batch():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    task, items, _, model, optimizer = setup()
    task.begin_epoch(model, items, 0, torch.device("cpu"), optimizer, seed=0)
    images, index = torch.from_numpy(items[:16]), torch.arange(16)
    cpu = task.make_batch(images, torch.Generator().manual_seed(1), index)
    gpu = task.make_batch(images.cuda(), torch.Generator().manual_seed(1), index.cuda())
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-3) and torch.equal(cpu[1], gpu[1].cpu())


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
    inputs, target = batch(task, items[:8])
    img = task.render(inputs[0], target[0])
    assert img.width >= 100 and img.height > 100 and np.asarray(img)[-15:-5].max() > 200
    assert task.render(inputs[0], target[0], output=torch.randn(3)).width == img.width
    preview = task.render_preview(items[:8], items[:8], torch.arange(8), inputs, target, 0)
    rows = len(set(target.tolist()))
    assert rows >= 2 and preview.width > 400 and preview.height > rows * 100  # a title and one row per cluster
    unclustered = task.render_preview(items[:8], items[:8], torch.arange(8), inputs, torch.full((8,), -1), 0)
    assert unclustered.height < preview.height  # one row: "not clustered"


def test_preview_clusters_as_the_first_epoch_of_training():
    """begin_preview's labels are the first begin_epoch's labels of a seeded resnet18 head."""
    from sslstudio.models import build_backbone

    images, _ = coloured_images(24, 16)
    preview = create_task("deepcluster", {"kmeans_iters": 5}, image_size=16)
    items = preview.prepare(images, 3)
    state = torch.get_rng_state()
    preview.begin_preview(items, 3)
    assert torch.equal(torch.get_rng_state(), state)
    training = create_task("deepcluster", {"kmeans_iters": 5}, image_size=16)
    training.prepare(images, 3)
    torch.manual_seed(3)  # what pretraining does before building the model
    backbone = build_backbone("resnet18")
    model = training.build_head(backbone, backbone.feature_dim)
    training.begin_epoch(model, items, 0, torch.device("cpu"), torch.optim.SGD(model.parameters(), lr=0.1), 3)
    assert np.array_equal(preview.labels, training.labels) and len(np.unique(preview.labels)) > 1
    assert torch.equal(batch(preview, items, seed=1)[1], batch(training, items, seed=1)[1])


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
    assert pretrain(config("resumed", workers=0, resume=True))["status"].startswith("finished")

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


def test_classifier_group_is_plain_sgd_as_the_released_code():
    task, items, _, model, _ = setup()
    groups = task.param_groups(model)
    classifier = set(model.classifier.parameters())
    assert [len(g["params"]) for g in groups] == [len(list(model.parameters())) - 2, 2]
    assert set(groups[1]["params"]) == classifier and not classifier & set(groups[0]["params"])
    assert [p for g in groups for p in g["params"]] == list(model.parameters())  # the old flat order
    optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-5)
    for epoch in range(2):
        task.begin_epoch(model, items, epoch, torch.device("cpu"), optimizer, seed=0)
        train_one_step(task, model, optimizer, items)
        train_one_step(task, model, optimizer, items)
    assert [g["momentum"] for g in optimizer.param_groups] == [0.9, 0.0]
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.05]  # same rate and decay as the release
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-5, 1e-5]
    assert all("momentum_buffer" not in optimizer.state.get(p, {}) for p in classifier)
    assert "momentum_buffer" in optimizer.state[model.backbone.net[0].weight]
    # plain SGD: one step moves the classifier by exactly lr * (grad + wd * w)
    before = model.classifier.weight.detach().clone()
    x = torch.stack([to_tensor(im) for im in items[:8]])
    optimizer.zero_grad()
    task.loss(model(x), torch.tensor(task.labels[:8])).backward()
    grad = model.classifier.weight.grad.clone()
    optimizer.step()
    assert torch.allclose(model.classifier.weight, before - 0.05 * (grad + 1e-5 * before), atol=1e-7)
    with_momentum = create_task("deepcluster", {"clusters": 3, "classifier_momentum": 0.9}, image_size=16)
    head_group = with_momentum.param_groups(model)[1]
    assert head_group["momentum"] == 0.9 and "nesterov" not in head_group  # then the run's Nesterov setting
    assert get_task("deepcluster").config_cls().classifier_momentum == 0.0


@pytest.mark.slow
def test_training_and_resuming_keep_the_classifier_without_momentum(tmp_path):
    from PIL import Image

    from sslstudio.engine import PretrainConfig, RunControl, pretrain
    from sslstudio.errors import RunError

    images, _ = coloured_images(16, 16)
    data = tmp_path / "imgs"
    data.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(data / f"img_{i:02d}.png")
    config = dict(task="deepcluster", data=str(data), out=str(tmp_path / "run"), arch="resnet18_small", epochs=2,
                  batch_size=8, image_size=16, device="cpu", seed=0, workers=0, task_options={"clusters": 3})
    control = RunControl()

    def stop_after_first_epoch(event):
        if event.kind == "checkpoint" and event.epoch == 0:
            control.cancel()

    def check(checkpoint):
        optim, model = checkpoint["optimizer"], checkpoint["model"]
        assert [g["momentum"] for g in optim["param_groups"]] == [0.9, 0.0]
        assert len(optim["param_groups"][1]["params"]) == 2 and len(model) > 2
        for i in optim["param_groups"][1]["params"]:  # the classifier's weight and bias
            assert "momentum_buffer" not in optim["state"].get(i, {})
        assert all("momentum_buffer" in optim["state"][i] for i in optim["param_groups"][0]["params"][:3])

    assert pretrain(PretrainConfig(**config), on_event=stop_after_first_epoch, control=control)["status"] == "cancelled"
    last = tmp_path / "run/checkpoints/last.pt"
    saved = torch.load(last, weights_only=True)
    check(saved)
    # a checkpoint from before the two groups is refused with a sentence, not a traceback
    old = {**saved, "optimizer": dict(saved["optimizer"])}
    groups = saved["optimizer"]["param_groups"]
    old["optimizer"]["param_groups"] = [dict(groups[0], params=groups[0]["params"] + groups[1]["params"])]
    torch.save(old, last)
    with pytest.raises(RunError, match="parameter group"):
        pretrain(PretrainConfig(**config, resume=True))
    torch.save(saved, last)
    assert pretrain(PretrainConfig(**config, resume=True))["status"].startswith("finished")
    check(torch.load(last, weights_only=True))
