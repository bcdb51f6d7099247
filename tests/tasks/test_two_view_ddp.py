"""Negatives gathered across processes: two gloo processes started by torchrun, as a user would."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sslstudio.tasks.contrastive import nt_xent


def pairs(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def run_two(tmp_path, body: str, batch=None, timeout=180):
    """Run ``body`` in two torchrun processes (gloo, CPU); each saves its results to ``rank<R>.pt``. ``batch``:
    ``(z1, z2)`` given to both processes as ``z1``, ``z2`` (and ``nt_xent`` imported)."""
    if batch is not None:
        torch.save({"z1": batch[0], "z2": batch[1]}, tmp_path / "batch.pt")
        body = textwrap.dedent("""
            from sslstudio.tasks.contrastive import nt_xent
            b = torch.load(os.path.join(out, "batch.pt"), weights_only=True)
            z1, z2 = b["z1"], b["z2"]
        """) + textwrap.dedent(body)
    # the ending: both processes leave the last collective, then leave without the interpreter's own teardown,
    # where torch 2.14 with gloo sometimes aborts a bare script like this one ("terminate called without an
    # active exception", after the results are saved; seen about one run in ten on 2 busy cores)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import os, sys, torch
        import torch.distributed as dist
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        out = sys.argv[1]
    """) + textwrap.dedent(body) + "\ndist.barrier()\ndist.destroy_process_group()\nsys.stdout.flush()\nos._exit(0)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow  # two processes started by torchrun
def test_nt_xent_over_two_processes_is_the_global_batch_loss_and_gradient(tmp_path):
    # the global batch: 8 pairs; process r holds pairs 4r..4r+3
    z1, z2 = pairs(8, 5, seed=0)
    results = run_two(tmp_path, """
        z1 = z1[4 * rank:4 * rank + 4].clone().requires_grad_()
        z2 = z2[4 * rank:4 * rank + 4].clone().requires_grad_()
        loss = nt_xent(z1, z2, 0.5, gather=True)
        loss.backward()
        local = nt_xent(z1.detach(), z2.detach(), 0.5, gather=False)
        torch.save({"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "local": local},
                   os.path.join(out, f"rank{rank}.pt"))
    """, batch=(z1, z2))
    f1, f2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full = nt_xent(f1, f2, 0.5)
    full.backward()
    # the mean of the processes' losses is the global batch's loss ...
    assert torch.allclose((results[0]["loss"] + results[1]["loss"]) / 2, full, atol=1e-6)
    # ... and the gradient data-parallel training averages over the processes is the global batch's
    for r in range(2):
        assert torch.allclose(results[r]["g1"] / 2, f1.grad[4 * r:4 * r + 4], atol=1e-6)
        assert torch.allclose(results[r]["g2"] / 2, f2.grad[4 * r:4 * r + 4], atol=1e-6)
    # the gathered loss has more negatives than each process's own batch: it is not the local loss
    assert not torch.allclose(results[0]["loss"], results[0]["local"], atol=1e-3)
    assert torch.allclose(results[0]["local"], nt_xent(z1[:4], z2[:4], 0.5), atol=1e-6)


@pytest.mark.slow  # two processes started by torchrun
def test_nt_xent_gathers_batches_of_different_sizes(tmp_path):
    z1, z2 = pairs(7, 4, seed=1)
    results = run_two(tmp_path, """
        rows = slice(0, 3) if rank == 0 else slice(3, 7)
        torch.save({"loss": nt_xent(z1[rows], z2[rows], 0.2, gather=True)}, os.path.join(out, f"rank{rank}.pt"))
    """, batch=(z1, z2))
    # each loss is the mean over its own 2n anchors: weighted by anchors, they give the global loss
    weighted = (3 * results[0]["loss"] + 4 * results[1]["loss"]) / 7
    assert torch.allclose(weighted, nt_xent(z1, z2, 0.2), atol=1e-6)


@pytest.mark.slow  # two processes started by torchrun
def test_moco_processes_enqueue_every_process_keys_in_rank_order(tmp_path):
    results = run_two(tmp_path, """
        from torch import nn
        from sslstudio.tasks.moco import MoCoHead
        torch.manual_seed(0)  # the same weights in both processes, as data-parallel training starts
        head = MoCoHead(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16)), 16, 32, 8, queue_size=12,
                        momentum=0.99).train()
        torch.manual_seed(100 + rank)  # each process its own images
        out_ = head(torch.randn(4, 2, 3, 8, 8))
        keys = out_[:, 8:16].detach()
        torch.save({"queue": head.queue.clone(), "ptr": head.queue_ptr.clone(), "keys": keys},
                   os.path.join(out, f"rank{rank}.pt"))
    """)
    assert torch.equal(results[0]["queue"], results[1]["queue"])  # one queue in both processes
    assert torch.allclose(results[0]["queue"][:4], results[0]["keys"])  # rank 0's keys first
    assert torch.allclose(results[0]["queue"][4:8], results[1]["keys"])  # then rank 1's
    assert int(results[0]["ptr"]) == int(results[1]["ptr"]) == 8


@pytest.mark.slow
@pytest.mark.parametrize("task", ["moco", "simclr"])
def test_two_view_tasks_train_data_parallel_with_ranks_agreeing(task, demo_root, tmp_path):
    from tests.engine.test_distributed import torchrun

    out = tmp_path / "run"
    proc = torchrun("pretrain", "--task", task, "--data", str(demo_root / "unlabelled"), "--out", str(out),
                    "--arch", "resnet18", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                    "--device", "cpu", "--workers", "0", "--option", "queue_size=16" if task == "moco" else
                    "proj_dim=16")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    # the digests cover every buffer: MoCo's queue is the same in both processes
    assert summary["distributed"]["ranks_agree"] is True
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["train_loss"] == epochs[0]["train_loss"]  # finite, not NaN
