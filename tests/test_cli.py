"""The CLI chain a user runs: demo-data -> preview -> pretrain -> compare -> export -> torchvision."""

import pytest
import json

import torch
import torchvision
from PIL import Image

from sslstudio import load_backbone
from sslstudio.cli import main


def test_tasks_json_lists_rotation(capsys):
    assert main(["tasks", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    rotation = next(i for i in infos if i["name"] == "rotation")
    assert rotation["metric"] == "accuracy" and "Gidaris" in rotation["paper"]


def test_bad_input_is_a_sentence_not_a_traceback(tmp_path, capsys):
    assert main(["pretrain", "--task", "rotation", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and "nowhere" in err
    assert main(["preview", "--task", "jigsaw-ish", "--data", str(tmp_path), "--out", str(tmp_path / "g.png")]) == 2
    assert "known tasks:" in (err := capsys.readouterr().err) and "rotation" in err


@pytest.mark.slow
def test_full_chain(tmp_path, monkeypatch, no_network, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    demo = tmp_path / "demo"
    assert main(["demo-data", str(demo), "--size", "32", "--n-unlabelled", "24", "--n-train-per-class", "4",
                 "--n-test-per-class", "2"]) == 0
    grid = tmp_path / "grid.png"
    assert main(["preview", "--task", "rotation", "--data", str(demo / "unlabelled"), "--out", str(grid),
                 "--n", "4", "--seed", "1"]) == 0
    assert Image.open(grid).size[0] > 256

    run = tmp_path / "run"
    assert main(["pretrain", "--task", "rotation", "--data", str(demo / "unlabelled"), "--out", str(run),
                 "--arch", "resnet18", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                 "--device", "cpu", "--workers", "0"]) == 0
    assert "ETA" in capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith("finished") and summary["epochs_completed"] == 1

    out = tmp_path / "cmp"
    assert main(["compare", "--labelled", str(demo / "labelled"), "--init", str(run), "--baselines",
                 "imagenet,random", "--modes", "head,knn", "--layers", "last", "--out", str(out),
                 "--device", "cpu", "--repeats", "2", "--per-class", "3", "--no-feature-cache"]) == 0
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert {r["init_label"] for r in rows} == {"rotation (run)", "imagenet", "random"}
    assert {r["mode"] for r in rows} == {"head", "knn"}
    assert all(r["repeats"] == 2 and r["std"] is not None for r in rows if r.get("test_accuracy") is not None)
    assert {p["verdict"] for p in result["paired"]} <= {"ahead", "behind", "within noise"}
    assert any("ImageNet weights were not available" in n for n in result["notes"])
    assert " ± " in (out / "results.md").read_text()
    assert all(r["test_accuracy"] is not None for r in rows if r["init"] != "imagenet")
    assert "not on this machine" in next(r for r in rows if r["init"] == "imagenet")["error"]

    exp = tmp_path / "export"
    assert main(["export", str(run), "--out", str(exp)]) == 0
    meta = json.loads((exp / "metadata.json").read_text())
    assert meta["task"] == "rotation" and meta["input_size"] == 32 and meta["arch"] == "resnet18"
    tv = torchvision.models.resnet18()
    result = tv.load_state_dict(torch.load(exp / "backbone.pt", weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys

    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(tv.state_dict()["layer4.1.bn2.running_var"], ckpt["backbone.layer4.1.bn2.running_var"])
    x = torch.randn(2, 3, 32, 32)
    tv.fc = torch.nn.Identity()
    tv.eval()
    with torch.no_grad():
        reference = tv(x)
        for name in ("backbone.pt", "backbone.safetensors", "backbone.torchscript.pt", "backbone.onnx"):
            assert torch.allclose(load_backbone(exp / name, trust_code=name.endswith(".torchscript.pt"))(x), reference, atol=1e-4), name


@pytest.mark.slow
def test_pretrain_uses_the_decode_cache_unless_told_not_to(demo_root, tmp_path, capsys):
    import json

    cache = tmp_path / "cache"
    common = ["pretrain", "--task", "rotation", "--data", str(demo_root / "unlabelled"), "--epochs", "1",
              "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--workers", "0"]
    assert main([*common, "--out", str(tmp_path / "a"), "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("decoded-*.npy"))) == 1
    assert main([*common, "--out", str(tmp_path / "b"), "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    assert "mapped from the decode cache" in captured.out + captured.err
    assert main([*common, "--out", str(tmp_path / "c"), "--no-cache"]) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["cache_dir"] is None
    assert json.loads((tmp_path / "b" / "config.json").read_text())["cache_dir"] == str(cache)


def test_the_progress_lines_give_a_two_view_epoch_its_spread():
    import io

    from sslstudio.cli import ProgressPrinter
    from sslstudio.engine.events import EpochEvent

    def epoch(extra):
        stream = io.StringIO()
        ProgressPrinter(stream)(EpochEvent(
            epoch=0, epochs=2, train_loss=4.0, train_metric=0.2, val_loss=None, val_metric=0.25,
            metric_name="accuracy", lr=0.1, images_per_s=10.0, samples_per_s=20.0, elapsed_s=1.0, eta_s=1.0,
            extra=extra))
        return stream.getvalue()

    assert "spread" not in epoch({})
    lines = epoch({"collapse_std": 0.0442, "collapse_healthy": 0.0884}).splitlines()
    assert lines[0].startswith("epoch 1/2:") and "held-out accuracy 25.0%" in lines[0]
    assert lines[1] == "  projection spread 0.0442 (50% of the 0.0884 of well spread outputs; collapsed below 0.0088)"
