"""Depth estimators behind one interface: RGB frames in, raw relative nearness out (larger = nearer).

Each estimator returns its network's unnormalised output at the frames' own size; scaling to [0, 1]
happens once for the whole clip in `aas_core.depth.stabilize` (per-frame min/max flickers). The
controlnet_aux annotators' `__call__` normalises each image on its own and returns uint8, so we call
their networks directly, batched, and keep the float output.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

import numpy as np

from aas_core import models
from aas_core.errors import InputError
from aas_core.registry import get_spec, names_of_kind
from aas_core.weights import is_tiny, load_error, model_dir

if TYPE_CHECKING:
    from aas_core.device import Runtime

EstimatorName = Literal["depth-anything-v2-small", "midas-dpt-hybrid", "zoedepth", "leres"]
ESTIMATORS: tuple[str, ...] = names_of_kind("depth")  # from the registry; `EstimatorName` spells them for type checkers
"""Estimator names, default first (CLI choices and UI dropdowns)."""
DEFAULT_ESTIMATOR: str = ESTIMATORS[0]


def check_estimator(name: str) -> str:
    """Return `name` if it is a known estimator, else an InputError listing the choices."""
    if name not in ESTIMATORS:
        raise InputError(f"unknown depth estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    return name


@dataclass
class DepthEstimator:
    """A loaded estimator: `predict((B, H, W, 3) uint8) -> (B, H, W) float32` nearness at input size."""

    name: str
    folder: Path
    tiny: bool
    runtime: "Runtime"
    predict_batch: Callable[[np.ndarray], np.ndarray]
    default_batch: int
    network: Any
    """The torch module doing the work (for parameter counts, moving, inspection)."""

    def predict(self, frames: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Raw nearness for every frame, in batches (no normalisation)."""
        size = batch_size or self.default_batch
        return np.concatenate([self.predict_batch(frames[i : i + size]) for i in range(0, len(frames), size)])


def weights_fingerprint(name: str, weights_root: Optional[str | os.PathLike[str]] = None) -> dict:
    """What identifies an estimator's local weights for caching: file names, sizes, mtimes (no hashing GBs)."""
    folder = model_dir(check_estimator(name), weights_root)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {
        "name": name,
        "hub_id": get_spec(name).hub_id,
        "tiny": is_tiny(name, weights_root),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def load_estimator(
    name: str, weights_root: Optional[str | os.PathLike[str]] = None, runtime: Optional["Runtime"] = None
) -> DepthEstimator:
    """The estimator `name`, loaded once per (name, model folder, device, dtype) and kept in `aas_core.models`."""
    from aas_core.device import pick_runtime

    check_estimator(name)
    runtime = runtime or pick_runtime()
    folder = model_dir(name, weights_root)
    # Keyed by the resolved model folder: weights folders that link the same model share one copy.
    key = models.ModelKey(name, str(folder), runtime.device, runtime.dtype_name)

    def load() -> DepthEstimator:
        try:
            predict, batch, network = _BUILDERS[name](folder, runtime)
        except Exception as exc:  # noqa: BLE001 - safetensors, torch.load (weights_only) and the loaders raise many types
            raise load_error(name, folder, exc) from exc
        return DepthEstimator(name, folder, is_tiny(name, weights_root), runtime, predict, batch, network)

    return models.get(key, load)


def release_estimators() -> int:
    """Free every loaded depth estimator (e.g. before generation needs the GPU); returns how many."""
    return sum(models.release(name) for name in ESTIMATORS)


@contextlib.contextmanager
def quiet_imports():
    """controlnet_aux imports all its annotators (mediapipe, timm registry, deprecated names): hide that noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _autocast(runtime: "Runtime"):
    import torch

    if runtime.device == "cpu" or runtime.dtype_name == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device, dtype=runtime.dtype)


def _to_size(pred, height: int, width: int) -> np.ndarray:
    """(B, h, w) tensor -> (B, height, width) float32 numpy, bicubic like the reference pipelines."""
    import torch.nn.functional as F

    pred = F.interpolate(pred[:, None].float(), size=(height, width), mode="bicubic", align_corners=False)
    return pred[:, 0].cpu().numpy().astype(np.float32)


def _net_size(height: int, width: int, short: int, multiple: int) -> tuple[int, int]:
    """Network input (h, w): short side `short`, aspect kept, both sides multiples of `multiple`."""
    scale = short / min(height, width)
    return (
        max(multiple, int(round(height * scale / multiple)) * multiple),
        max(multiple, int(round(width * scale / multiple)) * multiple),
    )


def _resized(frames: np.ndarray, size_hw: tuple[int, int]):
    """(B, H, W, 3) uint8 -> (B, 3, h, w) float tensor in [0, 1], bicubic (as MiDaS' own transform)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=size_hw, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def _build_depth_anything(folder: Path, runtime: "Runtime"):
    import torch
    from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

    processor = AutoImageProcessor.from_pretrained(str(folder))
    model = DepthAnythingForDepthEstimation.from_pretrained(str(folder), dtype=runtime.dtype).to(runtime.device).eval()

    def predict(frames: np.ndarray) -> np.ndarray:
        # The torchvision-backed processor resizes on the model's device (fast on a GPU).
        inputs = processor(images=list(frames), return_tensors="pt", device=runtime.device)
        pixels = inputs["pixel_values"].to(runtime.device, runtime.dtype)
        with torch.inference_mode():
            pred = model(pixel_values=pixels).predicted_depth  # relative disparity: larger = nearer
        return _to_size(pred, frames.shape[1], frames.shape[2])

    return predict, 8 if runtime.device != "cpu" else 4, model


def _build_midas(folder: Path, runtime: "Runtime"):
    import torch

    with quiet_imports():
        from controlnet_aux.midas import MidasDetector

        net = MidasDetector.from_pretrained(str(folder), model_type="dpt_hybrid").model.to(runtime.device).eval()

    def predict(frames: np.ndarray) -> np.ndarray:
        # DPT-Hybrid's own transform: short side 384, multiple of 32, inputs in [-1, 1].
        x = _resized(frames, _net_size(frames.shape[1], frames.shape[2], 384, 32)) * 2.0 - 1.0
        with torch.inference_mode(), _autocast(runtime):
            pred = net(x.to(runtime.device))  # inverse relative depth: larger = nearer
        return _to_size(pred, frames.shape[1], frames.shape[2])

    return predict, 8 if runtime.device != "cpu" else 2, net


def _build_zoe(folder: Path, runtime: "Runtime"):
    import torch

    with quiet_imports():
        from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config

        net = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))
    state = _checkpoint(folder / get_spec("zoedepth").options["filename"], "model")
    # The checkpoint stores BEiT's relative_position_index buffers, which timm >= 1.0 computes itself (not in the
    # state dict). ZoeDetector then loads with strict=False and would accept a truncated file: we load strictly.
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    torch.nn.Module.load_state_dict(net, state, strict=True)
    net = net.to(runtime.device).eval()

    def predict(frames: np.ndarray) -> np.ndarray:
        x = _resized(frames, _net_size(frames.shape[1], frames.shape[2], 384, 32))
        with torch.inference_mode(), _autocast(runtime):
            metric = net.infer(x.to(runtime.device))[:, 0]  # metres: larger = farther
        return -_to_size(metric, frames.shape[1], frames.shape[2])

    return predict, 4 if runtime.device != "cpu" else 1, net


def _checkpoint(path: Path, key: str) -> dict:
    """The state dict under `key` of a controlnet_aux checkpoint, read with weights_only (never unpickles code)."""
    import torch

    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or key not in checkpoint:
        raise KeyError(f"{path.name} has no {key!r} state dict (missing keys): not the expected checkpoint")
    return checkpoint[key]


def _build_leres(folder: Path, runtime: "Runtime"):
    import torch

    with quiet_imports():
        from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    # The depth network alone, built here as LeresDetector does: its pix2pix merge net (boost mode, unused)
    # would be loaded onto GPU 0 whatever device was chosen.
    net = RelDepthModel(backbone="resnext101")
    state = _checkpoint(folder / get_spec("leres").options["filename"], "depth_model")
    # A DataParallel-saved file prefixes every key with `module.` (LeresDetector strips it too).
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    net = net.to(runtime.device).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def predict(frames: np.ndarray) -> np.ndarray:
        # LeReS' own transform (controlnet_aux estimateleres), batched: ImageNet-normalised RGB.
        x = (_resized(frames, _net_size(frames.shape[1], frames.shape[2], 448, 32)) - mean) / std
        with torch.inference_mode(), _autocast(runtime):
            depth = net.depth_model(x.to(runtime.device))[:, 0]  # affine-invariant depth: larger = farther
        return -_to_size(depth, frames.shape[1], frames.shape[2])

    return predict, 4 if runtime.device != "cpu" else 2, net


_BUILDERS: dict[str, Callable[[Path, "Runtime"], tuple[Callable[[np.ndarray], np.ndarray], int, Any]]] = {
    "depth-anything-v2-small": _build_depth_anything,
    "midas-dpt-hybrid": _build_midas,
    "zoedepth": _build_zoe,
    "leres": _build_leres,
}
