"""The rules that say whether a run learnt (sslstudio.engine.verdict)."""

import math

import pytest
import torch
from torch import nn

from sslstudio.engine import verdict


class _Head(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.classifier = nn.Linear(3, classes)


class _Task:
    metric_name = "accuracy"


class _Recon:
    metric_name = "psnr"


class _OwnChance(_Task):
    def chance_level(self):
        return 0.4


def test_chance_is_one_over_the_classifier_outputs_or_the_tasks_own_or_none_for_psnr():
    assert verdict.chance_level(_Task(), _Head(100)) == 0.01
    assert verdict.chance_level(_Task(), _Head(4)) == 0.25
    assert verdict.chance_level(_OwnChance(), _Head(4)) == 0.4
    assert verdict.chance_level(_Recon(), _Head(4)) is None
    assert verdict.chance_level(_Task(), nn.Linear(2, 2)) is None  # no classifier: nothing to say


def test_chance_from_a_saved_state_reads_the_last_classifier():
    state = {"backbone.fc.weight": torch.zeros(7, 3), "head.classifier.weight": torch.zeros(8, 5),
             "head.classifier.bias": torch.zeros(8)}
    assert verdict.chance_from_state(state) == (1 / 8, 8)
    assert verdict.chance_from_state({"w": torch.zeros(2, 2)}) == (None, None)


def test_jigsaw_at_exactly_chance_is_not_learnt_and_a_clear_margin_is():
    assert verdict.status_of(False, None, 0.0103, 0.01) == verdict.NOT_LEARNT
    assert verdict.status_of(False, None, 0.25 + verdict.CHANCE_MARGIN - 0.001, 0.25) == verdict.NOT_LEARNT
    assert verdict.status_of(False, None, 0.25 + verdict.CHANCE_MARGIN + 0.001, 0.25) == verdict.FINISHED
    assert verdict.status_of(False, None, None, 0.25) == verdict.FINISHED  # no figure: no verdict
    assert verdict.status_of(False, None, 0.3, None) == verdict.FINISHED  # PSNR: only divergence is judged


def test_many_classes_count_as_learnt_at_five_times_chance():
    # jigsaw's 100 permutations: 9.2% held-out (measured with lr 0.01, 8 epochs) is far from 1% chance
    assert verdict.status_of(False, None, 0.092, 0.01) == verdict.FINISHED
    assert verdict.status_of(False, None, 0.049, 0.01) == verdict.NOT_LEARNT
    assert verdict.margin(0.01) == pytest.approx(0.04)
    assert verdict.margin(0.25) == verdict.CHANCE_MARGIN  # few classes: 10 points
    assert verdict.margin(1 / 29) == verdict.CHANCE_MARGIN  # DeepCluster's 29 clusters: still 10 points


def test_divergence_wins_over_cancel_and_cancel_over_the_metric():
    assert verdict.status_of(True, 2, 0.9, 0.25) == verdict.DIVERGED
    assert verdict.status_of(True, None, 0.0, 0.25) == verdict.CANCELLED


def test_divergence_rule_nan_inf_and_several_times_the_start():
    assert verdict.diverged(float("nan"), 1.5)
    assert verdict.diverged(math.inf, None)
    assert verdict.diverged(11.0, 1.57)  # the loss that rose from 1.57 to 11
    assert not verdict.diverged(1.57 * verdict.DIVERGE_FACTOR, 1.57)
    assert not verdict.diverged(0.5, 1.57)
    assert not verdict.diverged(100.0, None)  # no starting loss yet: only NaN/inf count


def test_advice_names_cli_flags_or_window_fields():
    cli = verdict.advice(verdict.DIVERGED, lr=0.1)
    assert "--lr" in cli and "0.01" in cli
    window = verdict.advice(verdict.DIVERGED, lr=0.1, cli=False)
    assert "--" not in window and "learning rate" in window
    text = verdict.advice(verdict.NOT_LEARNT, metric=0.0103, chance=0.01, epochs=3, paper_epochs=350)
    assert "1.0%" in text and "350" in text and "--epochs" in text
    assert verdict.advice(verdict.FINISHED) == ""


def test_the_outcome_line_gives_the_figure_against_chance_and_what_to_try():
    summary = {"status": verdict.NOT_LEARNT, "metric": "accuracy", "epochs": 3, "epochs_completed": 3,
               "time_s": 75, "final_val_accuracy": 0.0103, "chance": 0.01, "lr": 0.01, "paper_epochs": 350}
    line = verdict.outcome(summary, cli=False)
    assert line.startswith("Finished \u2014 not learnt: 3 of 3 epoch(s) in 1:15, held-out accuracy 1.0% (chance 1.0%)")
    assert "the paper trains 350" in line and "--" not in line.replace("\u2014", "")
    diverged = dict(summary, status=verdict.DIVERGED, diverged={"epoch": 2, "step": 7, "loss": float("nan")})
    assert "diverged at epoch 2, step 7" in verdict.outcome(diverged) and "Lower --lr (e.g. 0.001)" in verdict.outcome(diverged)
    finished = dict(summary, status=verdict.FINISHED, final_val_accuracy=0.8)
    assert verdict.outcome(finished).endswith("held-out accuracy 80.0% (chance 1.0%).")
    psnr = {"status": verdict.FINISHED, "metric": "psnr", "final_val_psnr": 21.456, "epochs": 1, "epochs_completed": 1}
    assert "held-out psnr 21.5 dB." in verdict.outcome(psnr)


def test_a_bf16_divergence_also_suggests_fp32():
    assert "--precision fp32" in verdict.to_try(verdict.DIVERGED, lr=0.1, bf16=True)
    assert "fp32" not in verdict.to_try(verdict.DIVERGED, lr=0.1)
    assert "choose fp32 precision" in verdict.to_try(verdict.DIVERGED, lr=0.1, bf16=True, cli=False)
    summary = {"status": verdict.DIVERGED, "epochs_completed": 1, "epochs": 3, "time_s": 5.0, "lr": 0.1,
               "precision": "bf16", "diverged": {"epoch": 2, "step": 3, "cause": "gradient"}}
    line = verdict.outcome(summary)
    assert "a gradient was not finite at epoch 2, step 3" in line and "--precision fp32" in line
    assert verdict.advice(verdict.DIVERGED, diverged_at=summary["diverged"]).startswith("a gradient was not finite")
    assert verdict.advice(verdict.DIVERGED, diverged_at={"epoch": 1, "step": 1}).startswith("the loss diverged")
