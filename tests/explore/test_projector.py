"""The explored features in TensorBoard's projector: the files read back as the same vectors and labels."""

import numpy as np
import pytest

from sslstudio.explore import ExploreConfig, explore
from sslstudio.explore.projector import sprite_images

pytest.importorskip("tensorboard")


def test_the_projector_holds_each_inits_features_labels_and_sprite(tmp_path, demo_root):
    result = explore(ExploreConfig(out=str(tmp_path / "out"), inits=("random",), labelled=str(demo_root / "labelled"),
                                   image_size=32, method="pca", device="cpu", extras=False, projector=True,
                                   feature_cache_dir=str(tmp_path / "fc")))
    folder = tmp_path / "out" / "projector"
    assert folder in result["files"]
    config = (folder / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "random' in config and "sprite" in config
    (entry,) = result["inits"]
    tensors = next(folder.rglob("tensors.tsv"))
    vectors = np.loadtxt(tensors, delimiter="\t", ndmin=2)
    assert vectors.shape == entry["features"].shape
    assert np.allclose(vectors, entry["features"], atol=1e-5)
    rows = next(folder.rglob("metadata.tsv")).read_text().strip().splitlines()
    assert rows[0].split("\t") == ["label", "file"] and len(rows) == len(result["paths"]) + 1
    names = [result["label_names"][i] for i in result["labels"]]
    assert [r.split("\t")[0] for r in rows[1:]] == names


def test_the_sprite_fits_tensorboards_limit():
    images = np.zeros((10_000, 8, 8, 3), np.uint8)
    sprite = sprite_images(images[:10])
    assert sprite.shape == (10, 3, 32, 32) and float(sprite.max()) <= 1.0
    side = sprite_images(images).shape[-1]
    assert side * int(np.ceil(np.sqrt(len(images)))) <= 8192
    assert sprite_images(np.zeros((300_000, 2, 2, 3), np.uint8)[:1]).shape[-1] == 32  # one image: full size
