"""Evaluation: linear probes per backbone stage, full fine-tuning, and the comparison grid."""

from sslstudio.evaluation.compare import compare, parse_layers, results_table, write_results
from sslstudio.evaluation.finetuning import (FinetuneConfig, LabelledData, finetune, load_labelled_data, probe_grid,
                                           resolve_init, stage_features)

__all__ = ["compare", "parse_layers", "results_table", "write_results", "FinetuneConfig", "LabelledData",
           "finetune", "load_labelled_data", "probe_grid", "resolve_init", "stage_features"]
