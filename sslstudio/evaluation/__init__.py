"""Evaluation of a backbone on labelled images, one step per module: ``features`` (frozen features
and their cache) -> ``probes`` (logistic, MLP, kNN) and ``finetune_all`` (every layer) -> ``stats``
(label draws, repeats, intervals, paired verdicts) -> ``table`` (the results table) and ``report`` (sentences, files, plots);
``compare`` walks a labelled folder through them once. ``finetuning`` holds single fine-tuning jobs.
"""

from sslstudio.evaluation.compare import compare, init_label, parse_budgets, parse_layers
from sslstudio.evaluation.finetuning import (FinetuneConfig, LabelledData, finetune, load_labelled_data, probe_grid,
                                           resolve_init, stage_features)
from sslstudio.evaluation.knn import knn_accuracy, knn_predict
from sslstudio.evaluation.report import results_markdown
from sslstudio.evaluation.table import results_table

__all__ = ["compare", "init_label", "parse_budgets", "parse_layers", "FinetuneConfig", "LabelledData", "finetune",
           "load_labelled_data", "probe_grid", "resolve_init", "stage_features", "knn_accuracy", "knn_predict",
           "results_markdown", "results_table"]
