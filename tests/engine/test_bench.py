import json

import pytest

from sslstudio.cli import main


@pytest.mark.slow
def test_bench_reports_four_rates_and_ratios(demo_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--data", str(demo_root / "unlabelled"), "--task", "rotation", "--image-size", "32",
                 "--batch-size", "8", "--device", "cpu", "--workers", "0", "--steps", "2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("naive", "pipeline", "model", "train"):
        assert result[key] > 0, key
    assert abs(result["pipeline/naive"] - result["pipeline"] / result["naive"]) < 1e-9
    assert abs(result["train/model"] - result["train"] / result["model"]) < 1e-9
    assert result["precision"] == "fp32" and result["peak_host_rss_mb"] > 0
    assert result["peak_gpu_allocated_mb"] is None
    text = capsys.readouterr().out
    assert "pipeline/naive" in text and "train/model" in text


def test_naive_batches_are_the_tasks_transform_of_per_sample_decoded_images(demo_root):
    import torch
    from torch.utils.data import DataLoader

    from sslstudio.data import decode_images, scan_folder
    from sslstudio.engine.bench import NaiveBatches, NaiveFolderDataset
    from sslstudio.engine.loader import make_task_batch
    from sslstudio.tasks import create_task

    task = create_task("rotation", {"horizontal_flip": False}, image_size=32)
    files = scan_folder(demo_root / "unlabelled").files[:3]
    decoded = decode_images(files, 32)
    naive = NaiveFolderDataset(files, task)
    for k in range(3):
        image, index = naive[k]
        assert index == k and image.shape == (32, 32, 3)
        assert abs(image.astype(int) - decoded.arrays[k].astype(int)).mean() < 3  # same crop; PIL resize paths differ
    loader = DataLoader(naive, batch_size=3)
    (inputs, target), = list(NaiveBatches(loader, task, decoded.arrays, 0, torch.device("cpu")))
    expected, expected_target = make_task_batch(task, decoded.arrays, [0, 1, 2], 0, 0, 0, torch.device("cpu"))
    assert inputs.shape == expected.shape and torch.equal(target, expected_target)
    assert torch.allclose(inputs, expected, atol=0.2)


def test_bench_prints_the_fp32_eager_and_compiled_steps_when_measured():
    from sslstudio.engine.bench import format_bench

    result = {"task": "rotation", "arch": "resnet18", "image_size": 64, "batch_size": 64, "workers": 2,
              "images": 100, "device_name": "GPU", "precision": "bf16", "naive": 1000.0, "pipeline": 5000.0,
              "decode_s": 1.0, "model": 9000.0, "train": 8500.0, "train_images": 512, "pipeline/naive": 5.0,
              "train/model": 8500 / 9000, "peak_host_rss_mb": 900.0, "peak_gpu_allocated_mb": 2048.0}
    plain = format_bench(result)
    assert "fp32 eager" not in plain and "torch.compile" not in plain
    text = format_bench({**result, "model_fp32_eager": 3000.0, "model_compiled": 12000.0, "compile_s": 40.0})
    assert "the engine's step is 3.00x this" in text
    assert "after 40 s compiling: 1.33x eager" in text
    assert "peak GPU allocated 2,048 MB" in text
