"""The comparison: kNN vote, intervals, label draws, validation split, feature cache, results format."""

import json
import math

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.evaluation import compare, parse_budgets
from sslstudio.evaluation import stats
from sslstudio.evaluation.features import FeatureCache, cached_features, extract_stages, global_pool, weights_digest
from sslstudio.evaluation.knn import knn_predict
from sslstudio.evaluation.probes import linear_probe, row_space, standardise, validation_split
from sslstudio.models import build_backbone


# -- kNN ---------------------------------------------------------------------------------------
def test_knn_vote_matches_a_hand_computed_case():
    # training points on the unit circle; the query at angle 0
    angles = np.array([0.1, 0.2, 0.3, 1.4, 1.5])
    train = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1], [2], [3], [4], [5]])  # norms differ
    y = np.array([0, 0, 1, 1, 1])
    query = np.array([[2.0, 0.0]])
    # k = 3: neighbours 0.1 (class 0), 0.2 (class 0), 0.3 (class 1); T = 0.5
    w = {a: math.exp(math.cos(a) / 0.5) for a in (0.1, 0.2, 0.3)}
    assert w[0.1] + w[0.2] > w[0.3]
    assert knn_predict(train, y, query, k=3, t=0.5).tolist() == [0]
    # a vote that class 1 wins by weight although class 0 has more members among k = 5
    train2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y2 = np.array([1, 0, 0, 0, 0])
    # weights: class 1 exp(1/0.1) = 22026; class 0: 2 exp(0) + exp(-10) + exp(0) ~ 3
    assert knn_predict(train2, y2, np.array([[1.0, 0.0]]), k=5, t=0.1).tolist() == [1]
    # with a very high temperature every neighbour counts about the same: the majority wins
    assert knn_predict(train2, y2, np.array([[1.0, 0.0]]), k=5, t=1000.0).tolist() == [0]
    with pytest.raises(ValueError):
        knn_predict(train2, y2, train2, k=0)


def test_global_pool_is_the_channel_mean_of_the_grid():
    f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3 * 4)  # 3 channels, 2x2 grid, channel-major
    pooled = global_pool(f, 3)
    assert pooled.shape == (2, 3)
    assert np.allclose(pooled[0], [1.5, 5.5, 9.5])


# -- statistics --------------------------------------------------------------------------------
@pytest.mark.slow
def test_t_interval_matches_a_known_case():
    mean, std, lo, hi = stats.mean_interval([0.50, 0.52, 0.54])
    assert mean == pytest.approx(0.52)
    assert std == pytest.approx(0.02)
    # t(0.975, 2) = 4.302653; half-width 4.302653 * 0.02 / sqrt(3) = 0.049683
    assert hi - mean == pytest.approx(0.049683, abs=1e-6)
    assert mean - lo == pytest.approx(0.049683, abs=1e-6)


def test_bootstrap_interval_covers_the_normal_approximation():
    correct = np.array([1] * 60 + [0] * 40)
    lo, hi = stats.bootstrap_interval(correct, seed=0)
    se = math.sqrt(0.6 * 0.4 / 100)
    assert lo == pytest.approx(0.6 - 1.96 * se, abs=0.02)
    assert hi == pytest.approx(0.6 + 1.96 * se, abs=0.02)
    assert stats.bootstrap_interval(correct, seed=0) == (lo, hi)  # seeded


def test_paired_verdicts():
    assert stats.paired_difference([0.6, 0.62, 0.61], [0.5, 0.51, 0.52])["verdict"] == "ahead"
    assert stats.paired_difference([0.5, 0.51, 0.52], [0.6, 0.62, 0.61])["verdict"] == "behind"
    noisy = stats.paired_difference([0.55, 0.45, 0.52], [0.5, 0.5, 0.5])
    assert noisy["verdict"] == "within noise" and noisy["ci_low"] < 0 < noisy["ci_high"]
    # one repeat: a paired bootstrap over the same test images
    a = np.array([1] * 80 + [0] * 20)
    b = np.array([1] * 50 + [0] * 50)
    one = stats.paired_difference([0.8], [0.5], a, b)
    assert one["interval"] == "bootstrap" and one["delta"] == pytest.approx(0.3) and one["verdict"] == "ahead"


def test_label_draws_are_seeded_nested_and_differ_between_repeats():
    y = np.repeat(np.arange(3), 10)
    d5 = stats.label_draw(y, 5, repeat=0, seed=1)
    assert np.bincount(y[d5]).tolist() == [5, 5, 5]
    assert set(stats.label_draw(y, 2, 0, 1)) <= set(d5)  # nested across budgets
    assert np.array_equal(d5, stats.label_draw(y, 5, 0, 1))
    assert not np.array_equal(d5, stats.label_draw(y, 5, 1, 1))
    assert len(stats.label_draw(y, "all", 3, 1)) == 30
    assert stats.draw_leaves_choice(y, 5) and not stats.draw_leaves_choice(y, 10) and not stats.draw_leaves_choice(y, "all")


def test_budgets_parse():
    assert parse_budgets("50,1,all,5") == [1, 5, 50, "all"]
    with pytest.raises(ConfigError):
        parse_budgets("0,5")
    with pytest.raises(ConfigError):
        parse_budgets("five")


# -- probes ------------------------------------------------------------------------------------
def test_validation_split_is_stratified_and_inside_the_training_draw():
    y = np.repeat(np.arange(4), 5)
    fit, val = validation_split(y, seed=0)
    assert set(fit).isdisjoint(val) and sorted(set(fit) | set(val)) == list(range(20))
    assert np.bincount(y[val]).tolist() == [1, 1, 1, 1]
    assert validation_split(np.array([0, 1, 1]), seed=0) is None  # a class with one image: nothing to validate


def test_linear_probe_never_sees_the_test_images(monkeypatch):
    """The L2 sweep fits and scores only on training rows: test features never reach a fit or a score."""
    import sslstudio.evaluation.probes as probes

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    train = rng.normal(size=(36, 20)).astype(np.float32) + y[:, None]
    test = rng.normal(size=(15, 20)).astype(np.float32) + 100.0  # far away: any use would show
    seen = []
    original = probes._fit

    def spy(model, x, yy):
        seen.append(x.copy())
        return original(model, x, yy)

    monkeypatch.setattr(probes, "_fit", spy)
    result = linear_probe(train, y, test, seed=0)
    assert len(seen) == len(probes.C_GRID) + 1  # the sweep, then the refit
    assert all(len(x) < 36 for x in seen[:-1]) and len(seen[-1]) == 36
    assert all(np.abs(x).max() < 50 for x in seen)  # standardised on training rows only; no test row inside
    assert result.chosen["C"] in probes.C_GRID and result.chosen["C_source"] == "validation"
    assert result.pred.shape == (15,)


def test_row_space_gives_the_same_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    x, xt = standardise(rng.normal(size=(40, 200)).astype(np.float32), rng.normal(size=(25, 200)).astype(np.float32))
    full = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(x, y)
    z, zt = row_space(x, xt)
    assert z.shape == (40, 40) or z.shape[1] < 40
    small = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(z, y)
    assert np.allclose(full.decision_function(xt), small.decision_function(zt), atol=1e-3)


# -- features and their cache ------------------------------------------------------------------
def test_one_pass_features_equal_per_stage_features_and_cache_round_trip(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    together = extract_stages(backbone, images, ["layer1", "layer3"], torch.device("cpu"))
    alone = extract_stages(backbone, images, ["layer3"], torch.device("cpu"))
    assert np.array_equal(together["layer3"], alone["layer3"])
    assert together["layer1"].shape == (5, 64 * 8 * 8)  # 64 channels at 8x8: the whole map fits in 4096 values

    digest = weights_digest(backbone)
    cache = FeatureCache(tmp_path / "fc")
    first = cached_features(cache, backbone, digest, images, "imgs", ["layer1", "layer3"], 32, torch.device("cpu"), "fp32")
    assert cache.misses == 2 and len(list((tmp_path / "fc").glob("*.npy"))) == 2
    fresh = FeatureCache(tmp_path / "fc")
    second = cached_features(fresh, backbone, digest, images, "imgs", ["layer1", "layer3"], 32, torch.device("cpu"), "fp32")
    assert fresh.hits == 2 and fresh.misses == 0
    assert all(np.array_equal(first[s], second[s]) for s in first)
    # other weights: another key
    with torch.no_grad():
        backbone.conv1.weight.add_(0.01)
    assert weights_digest(backbone) != digest


# -- the comparison end to end -----------------------------------------------------------------
def _compare(demo_root, out, inits=(), **kw):
    base = dict(baselines=["random"], modes=["head", "knn"], layers="layer1,layer4", arch="resnet18", image_size=32,
                device="cpu", per_class=3, repeats=2)
    base.update(kw)
    return compare(str(demo_root / "labelled"), str(out), list(inits), **base)


def test_compare_rows_intervals_and_files(demo_root, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    events = []
    result = _compare(demo_root, tmp_path / "cmp", baselines=["imagenet", "random"], on_event=events.append,
                      cache_dir=str(tmp_path / "fc"))
    rows = result["rows"]
    assert [(r["init"], r["mode"], r["layer"]) for r in rows] == [
        ("imagenet", "knn", "layer1"), ("imagenet", "knn", "layer4"), ("imagenet", "head", "layer1"),
        ("imagenet", "head", "layer4"), ("random", "knn", "layer1"), ("random", "knn", "layer4"),
        ("random", "head", "layer1"), ("random", "head", "layer4")]
    for r in rows[:4]:
        assert r["test_accuracy"] is None and "resnet18-f37072fd.pth" in r["error"]
    for r in rows[4:]:
        assert r["repeats"] == 2 and len(r["accuracies"]) == 2 and r["per_class"] == 3
        assert r["test_accuracy"] == pytest.approx(np.mean(r["accuracies"]))
        assert r["ci_low"] <= r["test_accuracy"] <= r["ci_high"] and r["interval"] == "repeats"
        assert sum(map(sum, r["confusion"])) == 2 * result["meta"]["test_images"]
        assert set(r["per_class_accuracy"]) == set(result["meta"]["classes"])
    assert all(len(r["l2"]) == 2 for r in rows[6:])
    assert any("ImageNet weights were not available" in n for n in result["notes"])
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["format"] == 2
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "| initialisation | kNN layer1 | kNN layer4 | linear layer1 | linear layer4 |" in md
    assert "| imagenet | n/a | n/a | n/a | n/a |" in md and " ± " in md
    assert len((tmp_path / "cmp" / "results.csv").read_text().splitlines()) == 9
    row_events = [e for e in events if e.kind == "row"]
    assert [e.index for e in row_events] == list(range(1, 9)) and row_events[-1].total == 8
    progress = [e for e in events if e.kind == "progress"]
    assert progress and progress[-1].done == progress[-1].total


@pytest.mark.slow
def test_feature_cache_gives_identical_results(demo_root, tmp_path):
    a = _compare(demo_root, tmp_path / "a", cache_dir=str(tmp_path / "fc"))
    b = _compare(demo_root, tmp_path / "b", cache_dir=str(tmp_path / "fc"))
    c = _compare(demo_root, tmp_path / "c", feature_cache=False)
    assert a["meta"]["feature_cache"]["misses"] == 4 and b["meta"]["feature_cache"]["hits"] == 4
    assert b["meta"]["feature_cache"]["misses"] == 0
    strip = lambda res: [{k: v for k, v in r.items()} for r in res["rows"]]  # noqa: E731
    assert strip(a) == strip(b) == strip(c)


@pytest.mark.slow
def test_paired_comparison_with_a_run_and_notes(demo_root, tmp_path):
    from sslstudio.engine import PretrainConfig, pretrain

    run = tmp_path / "rot"
    pretrain(PretrainConfig(task="rotation", data=str(demo_root / "unlabelled"), out=str(run), arch="resnet18",
                            epochs=1, batch_size=8, image_size=32, device="cpu", workers=0))
    result = _compare(demo_root, tmp_path / "cmp", inits=[str(run)], layers="layer2", per_class=None,
                      label_curve=[1, 3, "all"], cache_dir=str(tmp_path / "fc"))
    paired = result["paired"]
    assert {(p["mode"], p["per_class"]) for p in paired} == {(m, b) for m in ("knn", "head") for b in (1, 3, "all")}
    assert all(p["init_label"] == "rotation (rot)" for p in paired)
    assert all(p["ci_low"] <= p["delta"] <= p["ci_high"] for p in paired)
    # with every label there is no draw to vary: one deterministic fit, a bootstrap interval
    full = [r for r in result["rows"] if r["per_class"] == "all"]
    assert all(r["repeats"] == 1 and r["interval"] == "bootstrap" for r in full)
    notes = " ".join(result["notes"])
    assert "ran 1 epoch; the paper's recipe is 100" in notes
    assert (tmp_path / "cmp" / "label_curve.png").stat().st_size > 1000


def test_bad_settings_are_sentences(demo_root, tmp_path):
    with pytest.raises(ConfigError, match="head, knn and/or all"):
        _compare(demo_root, tmp_path / "x", modes=["probe"])
    with pytest.raises(ConfigError, match="linear or mlp"):
        _compare(demo_root, tmp_path / "x", head="svm")
    with pytest.raises(ConfigError, match="--knn-k must be between 1 and"):
        _compare(demo_root, tmp_path / "x", knn_k=0)


@pytest.mark.slow
def test_all_layers_rows_have_draws_history_and_live_epochs(demo_root, tmp_path):
    events = []
    result = _compare(demo_root, tmp_path / "cmp", modes=["all"], epochs_all=1, repeats_all=2, on_event=events.append,
                      feature_cache=False)
    (row,) = result["rows"]
    assert row["mode"] == "all" and row["layer"] == "layer4" and row["repeats"] == 2
    assert len(row["accuracies"]) == 2 and row["std"] is not None and row["reported"] == "last epoch"
    assert row["history"] and row["test_accuracy"] == pytest.approx(np.mean(row["accuracies"]))
    assert row["settings"]["linear_probe_first"] is True
    epochs = [e for e in events if e.kind == "epoch"]
    assert {e.extra["repeat"] for e in epochs} == {0, 1} and all(e.extra["mode"] == "all" for e in epochs)
    assert any("last epoch, not its best" in n for n in result["notes"])


def test_a_stopped_comparison_keeps_its_finished_rows(demo_root, tmp_path):
    from sslstudio.engine.events import Cancelled, RunControl

    control = RunControl()

    def on_event(ev):
        if ev.kind == "row" and ev.index == 2:
            control.cancel()

    with pytest.raises(Cancelled):
        _compare(demo_root, tmp_path / "cmp", on_event=on_event, control=control, feature_cache=False)
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(saved["rows"]) == 2 and saved["meta"]["cancelled"] is True
    assert "Stopped before the end" in (tmp_path / "cmp" / "results.md").read_text()


def test_notes_say_ahead_of_and_behind_random_init_in_plain_words():
    from sslstudio.evaluation.report import interpretation_notes

    def pair(delta, verdict, layer):
        return {"init_label": "run (r)", "mode": "knn", "layer": layer, "per_class": 10, "delta": delta,
                "ci_low": delta - 0.02, "ci_high": delta + 0.02, "verdict": verdict}

    paired = [pair(0.05, "ahead", "layer1"), pair(-0.06, "behind", "layer2"), pair(0.0, "within noise", "layer3")]
    rows = [{"init": i, "mode": "knn", "layer": "layer1", "per_class": 10, "test_accuracy": 0.4}
            for i in ("r", "random")]
    notes = interpretation_notes({"meta": {"inits": [{"init": "r", "init_label": "run (r)"}]}, "rows": rows,
                                  "paired": paired}, {})
    text = " ".join(notes)
    assert "run (r) is ahead of random init beyond noise in 1 of 3 cells: kNN layer1 at 10 per class (+5.0" in text
    assert "run (r) is behind random init beyond noise in 1 of 3 cells: kNN layer2 at 10 per class (-6.0" in text
    assert "behind of" not in text
