"""Training engine: the pretraining loop, its events, device choice and schedules. No Qt here."""

from sslstudio.engine.events import (Cancelled, CheckpointEvent, EpochEvent, FailedEvent, FinishedEvent, LogEvent,
                                     ProgressEvent, RowEvent, RunControl, StepEvent)
from sslstudio.engine.pretrain import PretrainConfig, pretrain, resume_config

__all__ = ["Cancelled", "CheckpointEvent", "EpochEvent", "FailedEvent", "FinishedEvent", "LogEvent", "ProgressEvent", "RowEvent", "RunControl",
           "StepEvent", "PretrainConfig", "pretrain", "resume_config"]
