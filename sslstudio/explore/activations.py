"""Where a backbone looks: channel-mean activation maps per stage, and Grad-CAM of a pretext head.

* :func:`stage_maps`: for one image, the mean over the channels of each stage's feature map,
  upsampled (bilinear) to the image and scaled to [0, 1] (what the stage responds to, whatever the task).
* :func:`grad_cam`: standard Grad-CAM (Selvaraju et al., ICCV 2017): the target layer's activations
  weighted by the global-average-pooled gradients of one class score, summed over the channels,
  ReLU, upsampled (bilinear) and scaled to [0, 1].
* :func:`load_pretext_model`: a pretraining run's whole model (backbone and pretext head) as it was
  trained, from its ``config.json`` and checkpoint (read with ``weights_only=True``).
* :func:`write_activation_maps`: the figures ``activations_<init>.png`` (per initialisation) and
  ``gradcam.png`` (the run's pretext head: rotation at each of the four angles, or the whole image
  for DeepCluster and Exemplar-CNN). Grad-CAM needs a head that classifies one whole image; tasks
  whose network sees tiles, patch pairs or a lightness channel get a note (``gradcam.txt``) instead.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslstudio.errors import DataError, RunError

log = logging.getLogger(__name__)

#: Tasks whose pretext head classifies one whole image (Grad-CAM of its predicted class makes sense).
GRADCAM_TASKS = ("rotation", "deepcluster", "exemplar")
ANGLES = (0, 90, 180, 270)
#: Grad-CAM is taken at the deepest stage whose map is at least this many cells on a side.
GRADCAM_MIN_SIDE = 4


# -- the pieces (also for the window) --------------------------------------------------------
def load_image(image_path: str, image_size: int) -> np.ndarray:
    """The image file as a uint8 ``[S, S, 3]`` square (shorter side resized, centre crop), as training decodes it."""
    from sslstudio.data.images import BadImageError, load_rgb, to_square_array

    if not Path(image_path).is_file():
        raise DataError(f"the image {image_path} does not exist or is not a file; check the path.")
    try:
        return np.array(to_square_array(load_rgb(image_path), int(image_size)))  # writable
    except BadImageError as exc:
        raise DataError(f"the image {image_path} cannot be used ({exc.reason}); choose another image.") from None


def _scale01(a: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (all zeros for a constant map)."""
    a = np.asarray(a, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-5 * max(abs(lo), abs(hi), 1e-12):
        return np.zeros_like(a)  # constant up to rounding (a 1 x 1 map upsampled): no spatial detail
    return (a - lo) / (hi - lo)


def _upsample(fmap: Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``[h, w]`` map bilinearly resized to ``size``, as a float32 numpy array."""
    up = F.interpolate(fmap[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return up[0, 0].detach().cpu().numpy()


@torch.no_grad()
def stage_maps(backbone, image: np.ndarray, stages: list[str], device) -> dict[str, np.ndarray]:
    """The channel-mean activation map of each stage for one uint8 ``[H, W, 3]`` image.

    Returns ``{stage: float32 [H, W] in [0, 1]}`` (bilinearly upsampled, min-max scaled), in the
    order of ``stages`` (all the backbone's stages when empty).
    """
    from sslstudio.models.normalise import normalise

    device = torch.device(device) if not isinstance(device, torch.device) else device
    backbone.eval().to(device)
    x = normalise(np.ascontiguousarray(image))[None].to(device)
    size = tuple(image.shape[:2])
    out = {}
    for stage in stages or backbone.stage_names():
        fmap = backbone.forward_stage(x, stage)[0]  # [C, h, w]
        out[stage] = _scale01(_upsample(fmap.float().mean(0), size))
    return out


def grad_cam(model: nn.Module, target_layer: nn.Module, x: Tensor,
             class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of ``model``'s class score at ``target_layer`` for one input ``x`` ``[1, 3, H, W]``.

    The model's output must be class logits ``[1, classes]``. The class is ``class_index``, or
    the predicted one when ``None``. The map is the ReLU of the sum over channels of the layer's
    activations weighted by the spatial mean of the score's gradient with respect to them,
    bilinearly upsampled to ``H x W`` and divided by its maximum, so 0 keeps its meaning: no evidence
    for the class there (all zeros where no location speaks for it). Returns ``(map float32 [H, W],
    predicted class)``; the model's parameters get no gradient.
    """
    captured: list[Tensor] = []
    handle = target_layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = x.to(param.device if param is not None else x.device)
        with torch.enable_grad():
            logits = model(x)
            if logits.dim() != 2 or logits.shape[0] != 1:
                raise ValueError(f"Grad-CAM needs class logits [1, classes]; the model gave {tuple(logits.shape)}")
            predicted = int(logits[0].argmax())
            target = predicted if class_index is None else int(class_index)
            if not captured:
                raise ValueError("the target layer was not used by the model's forward pass")
            acts = captured[-1]
            (grads,) = torch.autograd.grad(logits[0, target], acts)
        weights = grads.float().mean(dim=(2, 3), keepdim=True)  # [1, C, 1, 1]
        cam = torch.relu((weights * acts.detach().float()).sum(1))[0]  # [h, w]
        cam_map = _upsample(cam, tuple(x.shape[-2:]))
        cam_map = np.clip(cam_map, 0.0, None)
        peak = float(cam_map.max())
        return (cam_map / peak if peak > 0 else np.zeros_like(cam_map)).astype(np.float32), predicted
    finally:
        handle.remove()
        model.train(was_training)


@torch.no_grad()
def stage_sizes(backbone, image_size: int, stages: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{stage: (h, w)}``: the side of each stage's feature map for ``image_size`` inputs."""
    param = next(backbone.parameters())
    x = torch.zeros(1, 3, int(image_size), int(image_size), device=param.device, dtype=param.dtype)
    was_training = backbone.training
    backbone.eval()
    try:
        return {s: tuple(backbone.forward_stage(x, s).shape[-2:]) for s in (stages or backbone.stage_names())}
    finally:
        backbone.train(was_training)


def gradcam_stage(backbone, image_size: int, min_side: int = GRADCAM_MIN_SIDE) -> str:
    """The Grad-CAM target stage: the deepest whose map is at least ``min_side`` px on each side for
    ``image_size`` inputs (the last stage's map of a ResNet is 1 x 1 at 32 px: no detail), else the first."""
    sizes = stage_sizes(backbone, image_size)
    fine = [s for s, hw in sizes.items() if min(hw) >= min_side]
    return fine[-1] if fine else backbone.stage_names()[0]


def stage_module(backbone, stage: str) -> nn.Module:
    """The module whose output is ``stage``'s feature map (a Grad-CAM target layer)."""
    from sslstudio.models.backbones import ALEXNET_STAGE_END, VGG16_STAGE_END

    if stage not in backbone.stage_names():
        backbone.stage_channels(stage)  # raises the backbone's sentence naming its stages
    if backbone.torchvision_arch.startswith("resnet"):
        return getattr(backbone, stage)
    ends = ALEXNET_STAGE_END if backbone.torchvision_arch == "alexnet" else VGG16_STAGE_END
    return backbone.features[ends[stage]]


def load_pretext_model(run_dir, device, which: str = "last") -> tuple:
    """A pretraining run's task and whole model (backbone + pretext head), in eval mode on ``device``.

    The task is made from ``config.json`` (task, its settings, image size) and the model by the
    task's own ``build_head`` on the run's architecture, as pretraining builds it. Layers whose size
    the training data decided (DeepCluster's clusters, Exemplar-CNN's surrogate classes) take the
    checkpoint's shapes. The checkpoint is read with ``weights_only=True``.

    Raises:
        RunError: Not a run folder, no checkpoint, or a checkpoint that does not fit the task's model.
    """
    from sslstudio.models import build_backbone
    from sslstudio.runs import RunDir
    from sslstudio.tasks import create_task

    run = RunDir(run_dir)
    config = run.read_config()
    task = create_task(config["task"], config.get("task_options") or {}, int(config.get("image_size") or 64))
    state = run.load_checkpoint(which)["model"]
    backbone = build_backbone(config["arch"])
    model = task.build_head(backbone, backbone.feature_dim)
    _fit_shapes(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(f"the checkpoint of {run.path} does not fit a {config['arch']} {config['task']} model "
                       f"({str(exc).splitlines()[0]}); it comes from another version or run.") from None
    device = torch.device(device) if not isinstance(device, torch.device) else device
    return task, model.to(device).eval()


def _fit_shapes(model: nn.Module, state: dict) -> None:
    """Give parameters and buffers the checkpoint's shapes where the data decided them (values come next)."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or tuple(own[key].shape) == tuple(value.shape):
            continue
        module_name, _, name = key.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        blank = torch.empty_like(value, dtype=own[key].dtype)
        setattr(module, name, nn.Parameter(blank) if isinstance(getattr(module, name), nn.Parameter) else blank)


# -- the figures ------------------------------------------------------------------------------
def init_label(init: str) -> str:
    """A file-name-safe label of an initialisation (``random``, ``imagenet``, the run folder's or file's name)."""
    from sslstudio.runs import is_run_dir

    if init in ("random", "imagenet"):
        label = init
    else:
        path = Path(init)
        label = path.resolve().name if is_run_dir(path) else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "init"


def _figure(cols: int, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.4 * cols, 2.6 * rows + 0.4), dpi=110)
    return fig, [[fig.add_subplot(rows, cols, r * cols + c + 1) for c in range(cols)] for r in range(rows)]


def _overlay(ax, image: np.ndarray, heat: np.ndarray | None, title: str, colour: str = "black") -> None:
    ax.imshow(image, interpolation="nearest")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_title(title, fontsize=8, color=colour)
    ax.axis("off")


def write_stage_figure(path: Path, image: np.ndarray, maps: dict[str, np.ndarray], title: str,
                       sizes: dict | None = None) -> Path:
    """One row: the image, then one overlay per stage, titled by stage (and its map's size, when given)."""
    fig, axes = _figure(1 + len(maps))
    _overlay(axes[0][0], image, None, "image")
    for ax, (stage, heat) in zip(axes[0][1:], maps.items()):
        hw = (sizes or {}).get(stage)
        label = stage if hw is None else f"{stage} ({hw[0]}x{hw[1]}{': uniform' if max(hw) == 1 else ''})"
        _overlay(ax, image, heat, label)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    return path


def _rotation_cams(task, model, image: np.ndarray, layer: nn.Module, device) -> list[dict]:
    """The four rotated inputs the rotation task feeds its network, each with its predicted angle and Grad-CAM."""
    from sslstudio.models.normalise import normalise

    out = []
    for k in range(4):
        turned = np.ascontiguousarray(np.rot90(image, k, axes=(0, 1)))
        x = normalise(turned)[None].to(device)
        cam, pred = grad_cam(model, layer, x)
        with torch.no_grad():
            prob = float(torch.softmax(model(x).float(), 1)[0, pred])
        out.append({"input": turned, "cam": cam, "title": f"turned {ANGLES[k]}\u00b0",
                    "result": f"predicted {ANGLES[pred]}\u00b0 ({prob:.0%})", "correct": pred == k})
    return out


def _input_side(task, image: np.ndarray) -> int:
    """The side of the whole-image input the task feeds its network (Exemplar-CNN: its patch)."""
    return int(getattr(task, "patch", image.shape[0])) if task.name == "exemplar" else int(image.shape[0])


def _whole_image_cam(task, model, image: np.ndarray, layer: nn.Module, device) -> list[dict]:
    """DeepCluster (the whole image) or Exemplar-CNN (the image resized to its patch side): the predicted class."""
    from PIL import Image

    from sslstudio.models.normalise import normalise

    side = _input_side(task, image)
    shown = image if side == image.shape[0] else np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    x = normalise(np.ascontiguousarray(shown))[None].to(device)
    cam, pred = grad_cam(model, layer, x)
    what = "cluster" if task.name == "deepcluster" else "seed patch"
    return [{"input": shown, "cam": cam, "title": f"input ({side} px)", "result": f"predicted {what} {pred}",
             "correct": None}]


def _why_no_gradcam(task) -> str:
    """Why the task's head has no class score of a whole image to explain (half a sentence)."""
    from sslstudio.tasks.contrastive import TwoViewTask

    if isinstance(task, TwoViewTask):
        return ("its head does not classify: it maps each augmented view to a vector that is compared with "
                "other views, so there is no class score to explain")
    if task.name in ("jigsaw", "context"):
        return f"the {task.name} network sees tiles or patch pairs of an image, not the image itself"
    return f"the {task.name} head predicts pixels (colours or missing content), not a class of the image"


def write_gradcam(out_dir: Path, run: str, image: np.ndarray, device) -> Path:
    """``gradcam.png`` of the run's pretext head, or ``gradcam.txt`` saying why there is none."""
    task, model = load_pretext_model(run, device)
    if task.name not in GRADCAM_TASKS:
        note = out_dir / "gradcam.txt"
        note.write_text(f"No Grad-CAM for the {task.name} task: Grad-CAM here is for heads that classify one whole "
                        f"image ({', '.join(GRADCAM_TASKS)}); {_why_no_gradcam(task)}. The activation maps "
                        "per stage are written for every task.\n", encoding="utf-8")
        log.info("no Grad-CAM for %s: it is for whole-image classification heads (%s)", task.name,
                 ", ".join(GRADCAM_TASKS))
        return note
    maker = _rotation_cams if task.name == "rotation" else _whole_image_cam
    side = _input_side(task, image)
    stage = gradcam_stage(model.backbone, side)
    panels = maker(task, model, image, stage_module(model.backbone, stage), device)
    fig, axes = _figure(len(panels), 2)
    for c, p in enumerate(panels):
        _overlay(axes[0][c], p["input"], None, p["title"])
        colour = "black" if p["correct"] is None else ("green" if p["correct"] else "red")
        what = "Grad-CAM" if p["cam"].max() > 0 else "Grad-CAM all 0"  # no location speaks for the class
        _overlay(axes[1][c], p["input"], p["cam"], f"{p['result']}: {what}", colour)
    fig.suptitle(f"{task.name} run {Path(run).resolve().name}: where the pretext head looks "
                 f"(Grad-CAM of the predicted class at {stage}, "
                 f"{'x'.join(map(str, stage_sizes(model.backbone, side, [stage])[stage]))})", fontsize=9)
    path = out_dir / "gradcam.png"
    fig.savefig(path)
    return path


def write_activation_maps(out_dir: Path, run: str | None, inits: list[str], image_path: str, stages: list[str],
                          image_size: int, device, seed: int) -> list[Path]:
    """Activation maps of one image for each initialisation, and Grad-CAM of the run's pretext head.

    Writes ``activations_<init-label>.png`` per init (run folder, ``random``, ``imagenet`` or a
    weights file: the image, then the channel-mean map of each stage overlaid on it) and, when
    ``run`` is a pretraining run folder, ``gradcam.png`` (or ``gradcam.txt`` for tasks without a
    whole-image head). ``stages`` empty: every stage. Random and ImageNet backbones take the run's
    architecture (resnet18 without a run). Returns the written paths.
    """
    from sslstudio.engine.device import resolve_device
    from sslstudio.evaluation.finetuning import resolve_init, run_defaults
    from sslstudio.runs import is_run_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    image = load_image(image_path, image_size)
    arch = run_defaults(run).get("arch") if run else None
    written = []
    for init in inits:
        backbone, info = resolve_init(init, None if is_run_dir(init) else arch, seed)
        maps = stage_maps(backbone, image, list(stages or []), device)
        path = out_dir / f"activations_{init_label(init)}.png"
        written.append(write_stage_figure(path, image, maps, f"{init_label(init)} ({info['arch']}): channel-mean "
                                          "activation per stage", stage_sizes(backbone, image.shape[0], list(maps))))
    if run and is_run_dir(run):
        written.append(write_gradcam(out_dir, run, image, device))
    return written
