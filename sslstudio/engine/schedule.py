"""Learning-rate schedules, as per-step multipliers of the peak rate.

``step`` is the papers' schedule (multiply by ``lr_decay`` at each milestone fraction of the run,
e.g. RotNet's x0.2 at 30/60/80%). ``cosine`` is a cosine decay to zero. Both can start with a
linear warm-up. ``auto`` keeps the paper's step schedule for long runs (30 epochs or more) and
uses warm-up + cosine for short ones: a step schedule spends its first 30% at the full rate and
drops the rate in a few abrupt steps, which in a 5-10 epoch run leaves the network a single epoch
or two at each rate; warm-up avoids the unstable first steps of a large rate on a freshly
initialised network, and the cosine decay spends the second half of a short run at low rates
where the loss settles. A paper that trains at a constant rate (DeepCluster: no milestones) keeps it
under ``auto`` (with the warm-up in a short run): DeepCluster re-initialises its classifier every epoch,
and a rate decayed to zero would leave the last epochs' fresh classifier untrained.
"""

from __future__ import annotations

import math
from typing import Callable

from sslstudio.errors import ConfigError

SCHEDULES = ("auto", "step", "cosine", "constant")
SHORT_RUN_EPOCHS = 30
SHORT_RUN_WARMUP = 0.1  # fraction of a short run spent warming up


def resolve_schedule(schedule: str, epochs: int, warmup_epochs: float | None,
                     paper_decays: bool = True) -> tuple[str, float]:
    """Return the concrete schedule name and warm-up length (in epochs). ``paper_decays``: whether the
    paper's schedule lowers the rate (False for a constant-rate paper, which ``auto`` keeps)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}.")
    if schedule == "auto":
        short = epochs < SHORT_RUN_EPOCHS
        schedule = ("cosine" if short else "step") if paper_decays else "constant"
        if warmup_epochs is None:
            warmup_epochs = SHORT_RUN_WARMUP * epochs if short else 0.0
    return schedule, float(warmup_epochs or 0.0)


def lr_multiplier(schedule: str, total_steps: int, warmup_steps: int, lr_decay: float,
                  milestones: tuple[float, ...]) -> Callable[[int], float]:
    """A function ``step -> factor`` for :class:`torch.optim.lr_scheduler.LambdaLR`."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    bounds = [m * total_steps for m in milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "step":
            return lr_decay ** sum(step >= b for b in bounds)
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor
