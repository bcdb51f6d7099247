"""Data-parallel pretraining: two CPU processes with gloo, started by torchrun as a user would."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from sslstudio.engine.distributed import DistContext, init_distributed, state_digest
from sslstudio.engine.loader import EpochLoaders, TaskDataset, epoch_batches
from sslstudio.models import build_backbone
from sslstudio.runs import RunDir
from sslstudio.tasks import create_task
from sslstudio.tasks.base import EpochPlan, PretextTask


def torchrun(*args, nproc=2, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "sslstudio", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_two_gloo_processes_end_with_the_same_weights_as_the_checkpoint(demo_root, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("pretrain", "--task", "rotation", "--data", str(demo_root / "unlabelled"), "--out", str(out),
                    "--arch", "resnet18", "--epochs", "2", "--batch-size", "8", "--image-size", "32",
                    "--device", "cpu", "--workers", "0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("finished: 2/2 epochs") == 1  # only rank 0 reports

    run = RunDir(out)
    summary = json.loads(run.summary_path.read_text())
    dist = summary["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert len(dist["weight_digests"]) == 2 and dist["ranks_agree"] is True
    assert dist["weight_digests"][0] == dist["weight_digests"][1]
    config = run.read_config()
    assert config["world_size"] == 2 and config["batch_size"] == 8
    # 40 images, 2 held out: 38 for training -> 4 global batches of 8 (4 images per process)
    assert config["steps_per_epoch"] == 4

    # the digest the processes agreed on is the one of the weights rank 0 saved
    task = create_task("rotation", image_size=32)
    backbone = build_backbone("resnet18")
    model = task.build_head(backbone, backbone.feature_dim)
    model.load_state_dict(run.load_checkpoint("last")["model"])
    assert state_digest(model) == dist["weight_digests"][0]

    epochs = [json.loads(line) for line in run.metrics_path.read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert len(epochs) == 2 and all(np.isfinite(e["train_loss"]) for e in epochs)
    assert 0.0 <= epochs[-1]["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_a_batch_that_does_not_split_evenly_is_refused_with_a_sentence(demo_root, tmp_path):
    proc = torchrun("pretrain", "--task", "rotation", "--data", str(demo_root / "unlabelled"),
                    "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "7", "--image-size", "32",
                    "--device", "cpu", "--workers", "0")
    assert proc.returncode != 0
    assert "must be a multiple of the number of processes (2)" in proc.stdout + proc.stderr


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = init_distributed("cpu")
    assert not ctx.enabled and ctx.is_main and device == "cpu"
    assert ctx.sum([1.0, 2.0]) == [1.0, 2.0]
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}


def test_shards_interleave_and_cover_every_global_batch():
    batches = epoch_batches(20, 8, seed=3, epoch=1)
    shards = [DistContext(rank=r, world_size=2).shard(batches) for r in range(2)]
    for b, keys in enumerate(batches):
        assert shards[0][b] == keys[0::2] and shards[1][b] == keys[1::2]
        assert sorted(shards[0][b] + shards[1][b]) == sorted(keys)
    assert DistContext().shard(batches) is batches


def test_state_digest_changes_with_any_weight():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = state_digest(net)
    assert before == state_digest(net)
    with torch.no_grad():
        net[1].running_mean[0] += 1e-6
    assert state_digest(net) != before


# -- persistent DataLoader workers ------------------------------------------------------------
@dataclass(frozen=True)
class NoOptions:
    pass


class PidTask(PretextTask):
    """Samples that say which process made them."""

    config_cls = NoOptions

    def make_item(self, index, item, rng):
        return torch.tensor([index]), torch.tensor(os.getpid())


class PidTaskWithEpochState(PidTask):
    def begin_epoch(self, model, items, epoch, device, optimizer, seed):
        return EpochPlan()


@pytest.mark.parametrize("task_cls, persistent", [(PidTask, True), (PidTaskWithEpochState, False)])
def test_workers_persist_across_epochs_unless_the_task_changes_state(task_cls, persistent):
    items = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    dataset = TaskDataset(items, task_cls(config=None, image_size=8), seed=0)
    loaders = EpochLoaders(dataset, workers=1, device=torch.device("cpu"))
    assert loaders.persistent is persistent
    pids = []
    try:
        for epoch in range(2):
            batches = epoch_batches(len(dataset), 4, 0, epoch)
            got = [(index.flatten().tolist(), pid) for index, pid in loaders(batches)]
            assert [g[0] for g in got] == [[i for _, i in keys] for keys in batches]  # this epoch's batches
            pids.append({int(p) for _, pid in got for p in pid})
    finally:
        loaders.close()
    assert os.getpid() not in pids[0]  # made in a worker process
    assert (pids[0] == pids[1]) is persistent
