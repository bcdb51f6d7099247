"""Files sslstudio writes follow the user's umask (0o644 under 0o022), not tempfile's 0o600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from sslstudio import fileutil
from sslstudio.data.cache import DecodeCache, MemmapWriter, cache_key
from sslstudio.evaluation.features import FeatureCache
from sslstudio.evaluation.report import write_results
from sslstudio.runs import RunDir, atomic_write_json

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_dir_files_follow_the_umask(tmp_path: Path, umask_022) -> None:
    run = RunDir(tmp_path / "run").create()
    run.write_config({"task": "rotation"})
    run.append_metrics([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}])
    run.truncate_metrics(1)  # rewrites metrics.jsonl atomically
    run.save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 1}, best=True)
    run.write_summary({"epochs": 1})
    for path in (run.config_path, run.metrics_path, run.last_checkpoint, run.best_checkpoint, run.summary_path):
        assert mode(path) == 0o644, path.name
    assert mode(run.path) == 0o755 and mode(run.checkpoint_dir) == 0o755


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_the_umask_is_applied_when_the_file_is_written(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        folder = fileutil.mkdtemp(tmp_path, prefix=".t-")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.json") == expected
    assert mode(folder) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".a.json")) == []


def test_compare_results_follow_the_umask(tmp_path: Path, umask_022) -> None:
    write_results(tmp_path, {"meta": {}, "rows": []})
    for name in ("results.json", "results.csv", "results.md"):
        assert mode(tmp_path / name) == 0o644, name


def test_decode_cache_entries_follow_the_umask(tmp_path: Path, umask_022) -> None:
    key = cache_key(tmp_path, 16, {}, [("a.png", 1, 1)])
    folder = tmp_path / "cache"
    writer = MemmapWriter.in_cache(folder, key, rows=2, size=16)
    writer.array[:] = 7
    writer.finish(2)
    npy = DecodeCache(folder).commit(key, writer, 2, {"kept": ["a.png"], "skipped": []})
    _, side = DecodeCache(folder).paths(key)
    assert mode(npy) == 0o644 and mode(side) == 0o644


def test_feature_cache_files_follow_the_umask(tmp_path: Path, umask_022) -> None:
    cache = FeatureCache(root=tmp_path / "features")
    cache.store("k", np.zeros((2, 3), dtype=np.float32), {})
    assert cache.enabled
    assert mode(tmp_path / "features" / "k.npy") == 0o644 and mode(tmp_path / "features" / "k.json") == 0o644


def test_mkstemp_gives_fresh_names_and_an_open_descriptor(tmp_path: Path, umask_022) -> None:
    made = []
    for _ in range(20):
        fd, name = fileutil.mkstemp(tmp_path, prefix=".x-", suffix=".tmp")
        os.write(fd, b"ok")
        os.close(fd)
        made.append(name)
    assert len(set(made)) == 20
    assert all(Path(n).read_bytes() == b"ok" and mode(Path(n)) == 0o644 for n in made)
