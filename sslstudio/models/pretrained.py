"""The pretrained backbone of a run: a run directory's checkpoint as a :class:`Backbone`.

It lives in :mod:`sslstudio.models` (not in :mod:`sslstudio.runs`) so that the run directory layer
stays below the models: ``models.pretrained -> runs``, never ``runs -> models``.
"""

from __future__ import annotations

import os

from sslstudio.errors import RunError
from sslstudio.models.backbones import build_backbone
from sslstudio.runs import RunDir

__all__ = ["load_run_backbone"]


def load_run_backbone(run_dir: os.PathLike | str, which: str = "last"):
    """The pretrained backbone of a run, as a :class:`~sslstudio.models.Backbone` on the CPU."""
    run = RunDir(run_dir)
    config = run.read_config()
    checkpoint = run.best_checkpoint if which == "best" else run.last_checkpoint
    state = run.load_checkpoint(which)["model"]
    prefix = "backbone."
    backbone_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    backbone = build_backbone(config["arch"])
    own = backbone.state_dict()
    missing = [k for k in own if k not in backbone_state]
    wrong = [k for k in own if k in backbone_state and tuple(backbone_state[k].shape) != tuple(own[k].shape)]
    extra = [k for k in backbone_state if k not in own]
    if missing or wrong or extra:
        raise RunError(f"the checkpoint {checkpoint} does not hold a {config['arch']} backbone, the architecture "
                       f"named in {run.config_path} ({len(missing)} tensors missing, {len(wrong)} of another "
                       f"shape, {len(extra)} unknown): the checkpoint comes from another run or architecture; "
                       "put back the run's own checkpoint or start the run again.")
    backbone.load_state_dict(backbone_state, strict=True)
    return backbone, config
