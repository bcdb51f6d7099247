"""``explore`` end to end on the demo images: maps, colours, gallery, cache, files, and the command line."""

import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.cli import main
from sslstudio.errors import ConfigError
from sslstudio.evaluation.features import forward_stages
from sslstudio.evaluation.finetuning import resolve_init
from sslstudio.explore import ExploreConfig, explore, gallery_size
from sslstudio.explore.data import load_query_image
from sslstudio.tasks.base import normalise_batch


def config(tmp_path, demo_root, name="out", **kw):
    base = dict(out=str(tmp_path / name), inits=("random",), image_size=32, method="pca", device="cpu",
                extras=False, feature_cache_dir=str(tmp_path / "fcache"))
    base.update(kw)
    return ExploreConfig(**base)


def pooled(images: np.ndarray, stage="layer3", seed=0) -> np.ndarray:
    """Globally averaged, L2-normalised stage features by hand (no feature cache, no pooling grid)."""
    backbone, _ = resolve_init("random", "resnet18", seed)
    backbone.eval()
    with torch.no_grad():
        fmap = forward_stages(backbone, normalise_batch(torch.from_numpy(np.ascontiguousarray(images))), [stage])[stage]
    x = fmap.mean(dim=(2, 3)).numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_unlabelled_folder_is_coloured_by_kmeans_and_the_files_match_the_result(tmp_path, demo_root):
    result = explore(config(tmp_path, demo_root, data=str(demo_root / "unlabelled"), clusters=4))
    n = len(result["paths"])
    assert n == 40 and result["colour_by"] == "cluster"
    assert result["label_names"] == ["cluster 0", "cluster 1", "cluster 2", "cluster 3"]
    assert set(result["labels"].tolist()) == {0, 1, 2, 3}
    entry = result["inits"][0]
    assert entry["coords"].shape == (n, 2)
    with open(tmp_path / "out" / "embedding.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == result["paths"]
    assert np.allclose([[float(r["x"]), float(r["y"])] for r in rows], entry["coords"])
    assert [r["label"] for r in rows] == [f"cluster {k}" for k in result["labels"]]
    with Image.open(tmp_path / "out" / "embedding.png") as im:
        assert im.format == "PNG" and im.size[0] > 400
    with Image.open(tmp_path / "out" / "neighbours.png") as im:
        assert im.size == gallery_size(1, 8)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == n and summary["inits"][0]["neighbours"] == entry["neighbours"].as_json()
    assert set(summary["files"]) == {"embedding.png", "embedding.csv", "neighbours.png", "summary.json"}


def test_a_labelled_folder_is_coloured_by_class_and_the_gallery_is_the_brute_force_nearest(tmp_path, demo_root):
    query = sorted((demo_root / "unlabelled").glob("*.png"))[3]  # outside the labelled set
    result = explore(config(tmp_path, demo_root, labelled=str(demo_root / "labelled"), query=str(query)))
    assert result["colour_by"] == "class" and result["label_names"] == ["boat", "car", "house", "tree"]
    assert result["query"]["index"] is None and len(result["paths"]) == 36
    with open(tmp_path / "out" / "embedding.csv", newline="") as fh:
        labels = [r["label"] for r in csv.DictReader(fh)]
    assert labels == [p.split("/")[-2] for p in result["paths"]]  # DIR/<split>/<class>/file
    # brute force: features by hand, cosine, top 8 (the query is not in the set)
    x = pooled(result["images"])
    q = pooled(load_query_image(query, 32))[0]
    sims = x @ q
    got = result["inits"][0]["neighbours"]
    assert np.allclose(got.similarities, sims[got.indices], atol=1e-4)
    others = np.setdiff1d(np.arange(len(x)), got.indices)
    assert got.similarities[-1] >= sims[others].max() - 1e-5
    assert np.all(np.diff(got.similarities) <= 1e-6)


def test_a_query_row_is_excluded_and_two_inits_map_the_same_rows(tmp_path, demo_root):
    from sslstudio.models import build_backbone

    torch.manual_seed(7)
    weights = tmp_path / "other.pt"
    torch.save(build_backbone("resnet18").state_dict(), weights)
    result = explore(config(tmp_path, demo_root, labelled=str(demo_root / "labelled"), query=5,
                            inits=("random", str(weights))))
    out = tmp_path / "out"
    assert [e["name"] for e in result["inits"]] == ["random", "other"]
    for e in result["inits"]:
        assert 5 not in e["neighbours"].indices.tolist() and e["coords"].shape == (36, 2)
        sims = e["features"] @ e["features"][5]
        sims[5] = -2
        assert e["neighbours"].indices.tolist() == np.argsort(-sims, kind="stable")[:8].tolist()
    assert not np.allclose(result["inits"][0]["coords"], result["inits"][1]["coords"])
    for name in ("embedding", "embedding_random", "embedding_other"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.csv").is_file()
    assert (out / "embedding.csv").read_bytes() == (out / "embedding_random.csv").read_bytes()
    with Image.open(out / "neighbours.png") as im:
        assert im.size == gallery_size(2, 8)


def test_the_feature_cache_is_reused_and_gives_the_same_map(tmp_path, demo_root):
    first = explore(config(tmp_path, demo_root, name="a", data=str(demo_root / "unlabelled")))
    second = explore(config(tmp_path, demo_root, name="b", data=str(demo_root / "unlabelled")))
    assert first["feature_cache"]["misses"] == 1 and first["feature_cache"]["hits"] == 0
    assert second["feature_cache"]["hits"] > 0 and second["inits"][0]["feature_source"] == "feature cache"
    assert np.array_equal(first["inits"][0]["coords"], second["inits"][0]["coords"])
    assert np.array_equal(first["inits"][0]["features"], second["inits"][0]["features"])


def test_a_limit_keeps_a_seeded_subset_and_bad_settings_are_refused(tmp_path, demo_root):
    a = explore(config(tmp_path, demo_root, name="a", data=str(demo_root / "unlabelled"), limit=10, seed=1))
    b = explore(config(tmp_path, demo_root, name="b", data=str(demo_root / "unlabelled"), limit=10, seed=1))
    c = explore(config(tmp_path, demo_root, name="c", data=str(demo_root / "unlabelled"), limit=10, seed=2))
    assert len(a["paths"]) == 10 and a["paths"] == b["paths"] != c["paths"] and a["images_found"] == 40
    for bad, match in ((dict(stage="layer9"), "unknown stage 'layer9'"), (dict(method="isomap"), "--method"),
                       (dict(inits=()), "nothing to explore"), (dict(limit=0), "--limit")):
        with pytest.raises(ConfigError, match=match):
            explore(config(tmp_path, demo_root, name="bad", data=str(demo_root / "unlabelled"), **bad))
    assert not (tmp_path / "bad").exists()


def test_the_command_line_end_to_end_and_one_sentence_for_bad_input(tmp_path, demo_root, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert main(["explore", "--init", "random", "--labelled", str(demo_root / "labelled"), "--method", "pca",
                 "--image-size", "32", "--device", "cpu", "--out", str(out), "--stage", "layer2",
                 "--feature-cache-dir", str(tmp_path / "fc")]) == 0
    captured = capsys.readouterr()
    assert "embedding.png" in captured.out and "neighbours.png" in captured.out and "36 images" in captured.out
    assert "explore finished" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "layer2" and summary["colour_by"] == "class" and summary["method"] == "pca"
    for args, words in ((["--stage", "layer9"], "layer9"), (["--method", "isomap"], "--method"),
                        (["--data", str(tmp_path / "nowhere")], "nowhere")):
        code = main(["explore", "--init", "random", "--data", str(demo_root / "unlabelled"), "--out",
                     str(tmp_path / "bad"), "--device", "cpu", *args])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and words in err
        assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "umap", None)
    assert main(["explore", "--init", "random", "--data", str(demo_root / "unlabelled"), "--out",
                 str(tmp_path / "bad"), "--method", "umap"]) == 2
    assert 'pip install "sslstudio[umap]"' in capsys.readouterr().err


def test_progress_reaches_the_end_and_a_cancel_stops_the_work(tmp_path, demo_root):
    from sslstudio.engine.events import Cancelled, ProgressEvent, RunControl

    events = []
    explore(config(tmp_path, demo_root, name="a", data=str(demo_root / "unlabelled"), limit=8), emit=events.append)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress[-1].done == progress[-1].total and [e.done for e in progress] == sorted(e.done for e in progress)
    control = RunControl()

    def cancel_at_features(event):
        if isinstance(event, ProgressEvent) and "features" in event.message:
            control.cancel()

    with pytest.raises(Cancelled):
        explore(config(tmp_path, demo_root, name="b", data=str(demo_root / "unlabelled"), limit=8,
                       feature_cache=False), emit=cancel_at_features, control=control)
    assert not (tmp_path / "b" / "embedding.png").exists()


def test_activation_maps_and_shortcut_checks_are_called_through_their_contract_or_skipped(tmp_path, demo_root,
                                                                                          monkeypatch):
    import types

    from sslstudio.engine.events import LogEvent

    monkeypatch.setitem(sys.modules, "sslstudio.explore.activations", None)  # not there: a log line
    monkeypatch.setitem(sys.modules, "sslstudio.explore.shortcuts", None)
    logs = []
    result = explore(config(tmp_path, demo_root, name="a", data=str(demo_root / "unlabelled"), limit=6, extras=True),
                     emit=lambda e: logs.append(e.message) if isinstance(e, LogEvent) else None)
    assert (tmp_path / "a" / "embedding.png").is_file() and "skipped" in result["extras"]["activations"]
    assert any(m.startswith("activation maps skipped") for m in logs)

    calls = {}

    def write_activation_maps(out_dir, run, inits, image_path, stages, image_size, device, seed):
        calls["activations"] = (run, inits, image_path, stages, image_size, device, seed)
        path = out_dir / "activations_x.png"
        path.write_bytes(b"png")
        return [path]

    monkeypatch.setitem(sys.modules, "sslstudio.explore.activations",
                        types.SimpleNamespace(write_activation_maps=write_activation_maps))
    result = explore(config(tmp_path, demo_root, name="b", data=str(demo_root / "unlabelled"), limit=6, extras=True,
                            query=2, seed=3))
    assert calls["activations"] == (None, ["random"], result["paths"][2], [], 32, "cpu", 3)
    assert tmp_path / "b" / "activations_x.png" in result["files"]
    assert result["extras"]["shortcuts"] == {"skipped": "no run"}
