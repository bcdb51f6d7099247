"""Bad values: every numeric setting's range is declared once and refused at engine entry, before any
image is read or any file written, alike from Python and from the command line (exit 2, one sentence).

Nothing here trains: the data folders do not even exist, so a check that fired late would fail the
test with a different error (and, for compare and preview, a folder already made)."""

import dataclasses
import math

import pytest

from sslstudio.cli import main
from sslstudio.engine.pretrain import PretrainConfig, pretrain
from sslstudio.engine.preview import PreviewSettings, save_preview
from sslstudio.errors import ConfigError
from sslstudio.evaluation.compare import CompareSettings, compare
from sslstudio.evaluation.finetuning import FinetuneConfig, finetune
from sslstudio.settings import check_settings, param, range_text, spin_range
from sslstudio.tasks import create_task

PRETRAIN_BAD = [("image_size", 0, "--image-size"), ("image_size", 100_000, "--image-size"),
                ("image_size", 15, "--image-size"), ("lr", 0.0, "--lr"), ("lr", -0.1, "--lr"),
                ("lr", math.nan, "--lr"), ("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"),
                ("batch_size", -4, "--batch-size"), ("workers", -1, "--workers"), ("holdout", 0.5, "--holdout"),
                ("holdout", -0.1, "--holdout"), ("monitor_every", 0, "--monitor-every"),
                ("momentum", 1.0, "--momentum"), ("weight_decay", -1.0, "--weight-decay"),
                ("warmup_epochs", -1.0, "--warmup-epochs"), ("seed", -1, "--seed"), ("log_every", 0, "log_every"),
                ("monitor_k", 0, "monitor_k"), ("monitor_t", 0.0, "monitor_t")]


@pytest.mark.parametrize("name, value, flag", PRETRAIN_BAD)
def test_pretrain_refuses_a_bad_value_before_writing(tmp_path, name, value, flag):
    out = tmp_path / "run"
    events = []
    config = PretrainConfig(task="rotation", data=str(tmp_path / "nowhere"), out=str(out), device="cpu",
                            **{name: value})
    with pytest.raises(ConfigError, match=f"^{flag} must be "):
        pretrain(config, on_event=events.append)
    assert not out.exists()
    assert [e.kind for e in events] == ["failed"] and flag in events[0].message


FINETUNE_BAD = [("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("batch_size", -4, "--batch-size"),
                ("lr", 0.0, "--lr"), ("image_size", 0, "--image-size"), ("image_size", 100_000, "--image-size"),
                ("per_class", 0, "--per-class"), ("fraction", 0.0, "--fraction"), ("fraction", 1.5, "--fraction"),
                ("test_fraction", 0.0, "test_fraction"), ("test_fraction", 1.0, "test_fraction"),
                ("weight_decay", -1.0, "weight_decay"), ("seed", -1, "--seed")]


@pytest.mark.parametrize("name, value, flag", FINETUNE_BAD)
def test_finetune_refuses_a_bad_value_before_writing(tmp_path, name, value, flag):
    out = tmp_path / "ft"
    config = FinetuneConfig(init="random", labelled=str(tmp_path / "nowhere"), out=str(out), device="cpu",
                            **{name: value})
    with pytest.raises(ConfigError, match=f"^{flag} must be "):
        finetune(config)
    assert not out.exists()


COMPARE_BAD = [("knn_k", 0, "--knn-k"), ("knn_t", 0.0, "--knn-t"), ("repeats", 0, "--repeats"),
               ("repeats_all", 0, "--repeats-all"), ("per_class", 0, "--per-class"), ("fraction", 0.0, "--fraction"),
               ("fraction", 1.5, "--fraction"), ("epochs_all", 0, "--epochs-all"), ("test_fraction", 0.0,
               "--test-fraction"), ("test_fraction", 1.0, "--test-fraction"), ("image_size", 0, "--image-size"),
               ("image_size", 100_000, "--image-size"), ("seed", -1, "--seed")]


@pytest.mark.parametrize("name, value, flag", COMPARE_BAD)
def test_compare_refuses_a_bad_value_before_writing(tmp_path, name, value, flag):
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match=f"^{flag} must be "):
        compare(str(tmp_path / "nowhere"), str(out), [], baselines=["random"], modes=["head", "knn", "all"],
                device="cpu", **{name: value})
    assert not out.exists()


@pytest.mark.parametrize("init", ["", "missing-run"])
def test_compare_refuses_an_init_that_names_nothing(tmp_path, init):
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match="^--init .* is neither a run directory"):
        compare(str(tmp_path / "nowhere"), str(out), [str(tmp_path / init) if init else init],
                baselines=["random"], modes=["knn"], device="cpu")
    assert not out.exists()


PREVIEW_BAD = [({"n": 0}, "--n"), ({"n": 257}, "--n"), ({"n": 100_000}, "--n"), ({"image_size": 100_000},
               "--image-size"), ({"seed": -1}, "--seed"), ({"out": "grid.txt"}, "--out"), ({"out": "grid"}, "--out")]


@pytest.mark.parametrize("change, flag", PREVIEW_BAD)
def test_save_preview_refuses_a_bad_value_before_writing(tmp_path, change, flag):
    task = create_task("rotation", image_size=change.get("image_size", 64))
    out = tmp_path / "previews" / change.get("out", "grid.png")
    with pytest.raises(ConfigError, match=f"^{flag} must "):
        save_preview(task, str(tmp_path / "nowhere"), str(out), n=change.get("n", 4), seed=change.get("seed", 0))
    assert not out.parent.exists()


def test_messages_name_the_flag_and_the_declared_range():
    with pytest.raises(ConfigError) as info:
        check_settings(PretrainConfig(task="rotation", data="d", out="o", image_size=0))
    assert str(info.value) == "--image-size must be between 16 and 1024; got 0."
    with pytest.raises(ConfigError, match=r"^--holdout must be at least 0 and less than 0.5; got 0.5\.$"):
        check_settings({"holdout": 0.5}, PretrainConfig)
    with pytest.raises(ConfigError, match=r"^--lr must be a number greater than 0 and at most 10; got 'fast'\.$"):
        check_settings({"lr": "fast"}, PretrainConfig)
    assert range_text(dataclasses.fields(FinetuneConfig)[0].metadata) == ""  # init: no range
    # None is the paper's / the task's default: not checked
    check_settings(PretrainConfig(task="rotation", data="d", out="o", epochs=None, lr=None, batch_size=None))
    check_settings(FinetuneConfig(init="random", labelled="l", epochs=None, lr=None, per_class=None))
    check_settings({"repeats": None, "epochs_all": None, "image_size": None}, CompareSettings)
    # the edges themselves
    check_settings(PretrainConfig(task="rotation", data="d", out="o", image_size=16, holdout=0.0, workers=0))
    check_settings(PretrainConfig(task="rotation", data="d", out="o", image_size=1024, lr=1e-6, epochs=1))
    check_settings({"n": 256, "image_size": 1024}, PreviewSettings)


def test_spin_range_turns_an_exclusive_bound_into_one_step():
    @dataclasses.dataclass(frozen=True)
    class Declared:
        rate: float = param(0.5, "A rate.", min=0.0, min_exclusive=True, max=1.0, max_exclusive=True)
        count: int = param(3, "A count.", min=0, min_exclusive=True)

    assert spin_range(Declared, "rate", 2) == (0.01, 0.99)
    assert spin_range(Declared, "count") == (1, 2**31 - 1)
    assert spin_range(PretrainConfig, "image_size") == (16, 1024)


# -- the command line: exit 2 and one sentence, no traceback, nothing written ------------------------
def _cli_cases(tmp):
    data, out = str(tmp / "nowhere"), tmp / "out"
    pre = ["pretrain", "--task", "rotation", "--data", data, "--out", str(out), "--device", "cpu"]
    fine = ["finetune", "--init", "random", "--labelled", data, "--out", str(out), "--device", "cpu"]
    cmp = ["compare", "--labelled", data, "--out", str(out), "--baselines", "random", "--device", "cpu"]
    prev = ["preview", "--task", "rotation", "--data", data]
    png = ["--out", str(out / "grid.png")]
    return {
        "pretrain --image-size 0": (pre + ["--image-size", "0"], "--image-size"),
        "pretrain --image-size 100000": (pre + ["--image-size", "100000"], "--image-size"),
        "pretrain --lr 0": (pre + ["--lr", "0"], "--lr"),
        "pretrain --epochs 0": (pre + ["--epochs", "0"], "--epochs"),
        "pretrain --batch-size 0": (pre + ["--batch-size", "0"], "--batch-size"),
        "pretrain --batch-size -4": (pre + ["--batch-size", "-4"], "--batch-size"),
        "pretrain --workers -1": (pre + ["--workers", "-1"], "--workers"),
        "pretrain --holdout 0.5": (pre + ["--holdout", "0.5"], "--holdout"),
        "pretrain --monitor-every 0": (pre + ["--monitor-every", "0"], "--monitor-every"),
        "finetune --epochs 0": (fine + ["--epochs", "0"], "--epochs"),
        "finetune --batch-size 0": (fine + ["--batch-size", "0"], "--batch-size"),
        "finetune --lr 0": (fine + ["--lr", "0"], "--lr"),
        "finetune --per-class 0": (fine + ["--per-class", "0"], "--per-class"),
        "finetune --fraction 0": (fine + ["--fraction", "0"], "--fraction"),
        "finetune --image-size 100000": (fine + ["--image-size", "100000"], "--image-size"),
        "compare --epochs 0": (cmp + ["--epochs", "0"], "--epochs-all"),
        "compare --epochs-all 0": (cmp + ["--epochs-all", "0"], "--epochs-all"),
        "compare --repeats 0": (cmp + ["--repeats", "0"], "--repeats"),
        "compare --repeats-all 0": (cmp + ["--repeats-all", "0"], "--repeats-all"),
        "compare --knn-k 0": (cmp + ["--knn-k", "0"], "--knn-k"),
        "compare --knn-t 0": (cmp + ["--knn-t", "0"], "--knn-t"),
        "compare --per-class 0": (cmp + ["--per-class", "0"], "--per-class"),
        "compare --fraction 1.5": (cmp + ["--fraction", "1.5"], "--fraction"),
        "compare --test-fraction 1": (cmp + ["--test-fraction", "1"], "--test-fraction"),
        "compare --image-size 0": (cmp + ["--image-size", "0"], "--image-size"),
        "compare --init ,": (cmp + ["--init", ","], "--init"),
        "compare --init missing": (cmp + ["--init", str(tmp / "no-such-run")], "--init"),
        "preview --n 0": (prev + png + ["--n", "0"], "--n"),
        "preview --n 100000": (prev + png + ["--n", "100000"], "--n"),
        "preview --image-size 0": (prev + png + ["--image-size", "0"], "--image-size"),
        "preview --image-size 100000": (prev + png + ["--image-size", "100000"], "--image-size"),
        "preview --out grid.txt": (prev + ["--out", str(out / "grid.txt")], "--out"),
    }


CLI_CASES = sorted(_cli_cases(__import__("pathlib").Path("x")))


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_a_bad_value_with_one_sentence(tmp_path, capsys, case):
    argv, flag = _cli_cases(tmp_path)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"error: {flag} ") and lines[0].endswith("."), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, names, declaration", [
    ("finetune", "_FINETUNE_NUMBERS", "sslstudio.evaluation:FinetuneConfig"),
    ("compare", "_COMPARE_NUMBERS", "sslstudio.evaluation.compare:CompareSettings"),
])
def test_the_finetune_and_compare_numbers_are_generated_from_their_declarations(command, names, declaration):
    import argparse
    import dataclasses
    import importlib

    import sslstudio.cli as cli

    module, cls = declaration.split(":")
    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a for a in sub.choices[command]._actions}
    for name in getattr(cli, names):
        assert options[name].default is None and options[name].help.startswith(fields[name].metadata["help"].rstrip("."))


def test_the_pretrain_command_line_is_generated_from_the_declaration():
    import argparse
    import dataclasses

    from sslstudio.cli import _PRETRAIN_ARGS, build_parser
    from sslstudio.engine import PretrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a for a in sub.choices["pretrain"]._actions}
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    for name in _PRETRAIN_ARGS:
        action = options[name]
        assert action.default is None  # nothing typed: the run's own (on resume) or the declared default
        if name in ("task", "data"):
            continue
        meta = fields[name].metadata
        assert action.help.startswith(meta["help"].rstrip(".")), name
        if meta.get("choices"):
            assert list(action.choices) == list(meta["choices"]), name
    assert options["seed"].type is int and options["holdout"].type is float and options["compile"].nargs == 0
