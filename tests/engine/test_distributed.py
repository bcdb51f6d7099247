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
from sslstudio.engine.loader import DeviceBatches, epoch_batches
from sslstudio.models import build_backbone
from sslstudio.runs import RunDir
from sslstudio.tasks import create_task
from sslstudio.tasks.base import PretextTask


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
    assert proc.stdout.count(": 2/2 epochs in") == 1  # only rank 0 reports (finished, learnt or not)

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


# -- each process's shard of every batch ------------------------------------------------------
@dataclass(frozen=True)
class NoOptions:
    pass


class IndexTask(PretextTask):
    """Samples that say which item they are and which generator made them."""

    config_cls = NoOptions

    def make_batch(self, images, generator, index=None):
        return index, torch.randint(0, 2**30, (1,), generator=generator).expand(len(index))


@pytest.mark.parametrize("world_size", [1, 2])
def test_each_process_makes_its_shard_with_its_own_generator(world_size):
    items = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    task = IndexTask(config=None, image_size=8)
    batches = epoch_batches(len(items), 4, 0, epoch=1)
    seen, draws = [[] for _ in batches], set()
    for rank in range(world_size):
        shards = DistContext(rank=rank, world_size=world_size).shard(batches)
        for step, (index, draw) in enumerate(DeviceBatches(items, task, 0, shards, torch.device("cpu"), stream=rank)):
            assert len(index) == 4 // world_size  # an equal share of the global batch
            seen[step] += index.tolist()
            draws.add(int(draw[0]))
    assert [sorted(s) for s in seen] == [sorted(i for _, i in keys) for keys in batches]  # together: every batch
    assert len(draws) == len(batches) * world_size  # a generator per (step, rank)
