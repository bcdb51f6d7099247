import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# commands that use the default decode cache write it here, not into the user's cache folder
os.environ["SSLSTUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="sslstudio-test-cache-")
atexit.register(shutil.rmtree, os.environ["SSLSTUDIO_CACHE_DIR"], ignore_errors=True)

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo image set at 32 px (unlabelled/, labelled/train/<class>/, labelled/test/<class>/)."""
    from sslstudio.data import write_demo_data

    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, seed=0, n_unlabelled=40, n_train_per_class=6, n_test_per_class=3, size=32)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Make any download attempt fail at once (ImageNet weights must come from the local cache)."""
    import torch.hub

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
