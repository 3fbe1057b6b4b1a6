"""Load the two backends' diffusers pipelines from the weights folder, keep one (in `aas_core.models`), place it in memory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from aas_core import models
from aas_core.device import Runtime
from aas_core.errors import InputError, WeightsMissingError
from aas_core.generate.presets import PRESET_TABLE, MotionChoice
from aas_core.models import ModelKey
from aas_core.registry import BACKEND_BASE_MODEL, BACKEND_MODELS, get_spec
from aas_core.weights import file_variant, is_tiny, load_error, model_dir, weights_dir

__all__ = ["BACKEND_BASE_MODEL", "BACKEND_MODELS", "LoadedPipeline", "current", "get_pipeline", "load_pipeline", "release"]

LEAN_ORDER: tuple[str, ...] = ("full", "vae_tiling", "model_offload", "sequential_offload")
OFFLOAD_MODES = frozenset({"model_offload", "sequential_offload"})
AUTO_VRAM_GB: dict[str, tuple[tuple[float, str], ...]] = {
    # Free VRAM needed for each mode at 16 frames 512x512, half precision (see the README's figures);
    # VACE's UMT5-XXL text encoder alone is ~11 GB in bf16, hence the higher bars.
    "animatediff": ((20.0, "full"), (14.0, "vae_tiling"), (8.0, "model_offload")),
    "vace": ((30.0, "full"), (24.0, "vae_tiling"), (14.0, "model_offload")),
}


@dataclass
class LoadedPipeline:
    """A ready pipeline and what it was built from."""

    pipe: Any
    backend: str
    memory_mode: str
    key: ModelKey
    models: dict[str, dict[str, Any]]
    """Registry name -> hub id, revision, tiny flag, local path (for params.json)."""
    scheduler_config: dict[str, Any]
    load_s: float
    tiny: bool = False


PIPELINE_VARIANT = "pipeline"
"""Variant prefix of pipeline keys in `aas_core.models` (one pipeline is kept at a time)."""


def resolve_memory_mode(requested: str, backend: str, runtime: Runtime) -> str:
    """A concrete memory mode: `auto` from free VRAM; offloading only where there is an accelerator to offload from."""
    if runtime.device != "cuda":
        # CPU/MPS: nothing to offload to; VAE slicing/tiling still lowers peak RAM.
        if requested in OFFLOAD_MODES:
            return "vae_tiling"
        return "full" if requested == "auto" else requested
    if requested != "auto":
        return requested
    import torch

    free_gb = torch.cuda.mem_get_info(runtime.torch_device)[0] / 2**30
    for needed, mode in AUTO_VRAM_GB[backend]:
        if free_gb >= needed:
            return mode
    return "sequential_offload"


def leaner_mode(mode: str, device: str) -> Optional[str]:
    """The next mode that uses less memory on `device`, or None when `mode` is already the leanest."""
    order = LEAN_ORDER if device == "cuda" else LEAN_ORDER[:2]
    index = order.index(mode) if mode in order else len(order)
    return order[index + 1] if index + 1 < len(order) else None


def current() -> Optional[LoadedPipeline]:
    """The pipeline held in memory now, if any."""
    for key in models.loaded():
        if _is_pipeline(key):
            return models.peek(key)
    return None


def release() -> int:
    """Drop the cached pipeline and give its memory back; returns how many were released."""
    return sum(models.release(key) for key in models.loaded() if _is_pipeline(key))


def _is_pipeline(key: ModelKey) -> bool:
    return key.variant.startswith(PIPELINE_VARIANT + ":")


def pipeline_models(backend: str, motion: Optional[MotionChoice] = None) -> tuple[str, ...]:
    """Registry names a pipeline loads: the backend's, with the motion module replaced by `motion`'s (a preset's)."""
    default_motion = PRESET_TABLE["standard"].motion_model
    return tuple(motion.model if motion is not None and name == default_motion else name for name in BACKEND_MODELS[backend])


def pipeline_key(backend: str, weights_root: Optional[str | os.PathLike[str]], runtime: Runtime, memory_mode: str,
                 motion: Optional[MotionChoice] = None) -> ModelKey:
    """Cache key of a pipeline: named by its base model, by resolved model folders (linked weights folders share one)."""
    if backend not in BACKEND_MODELS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_MODELS)}")
    base = BACKEND_BASE_MODEL[backend]
    others = [str(model_dir(name, weights_root)) for name in pipeline_models(backend, motion) if name != base]
    # Named and placed like the base model's own weights, so training's copy of SD1.5 and this one never coexist.
    variant = ":".join([PIPELINE_VARIANT, backend, memory_mode, *others, *([motion.file] if motion and motion.file else [])])
    return ModelKey(base, str(model_dir(base, weights_root)), runtime.device, runtime.dtype_name, variant)


def get_pipeline(backend: str, weights_root: Optional[str | os.PathLike[str]], runtime: Runtime, memory_mode: str,
                 motion: Optional[MotionChoice] = None) -> LoadedPipeline:
    """The cached pipeline for these settings, loading it (and freeing any other pipeline first) when they change.

    `motion`: another motion module than the backend's (the fast preset's AnimateDiff-Lightning checkpoint).
    """
    key = pipeline_key(backend, weights_root, runtime, memory_mode, motion)
    if models.peek(key) is None:
        # One pipeline at a time: switching backend or memory mode frees the old one before the new one loads.
        for other in models.loaded():
            if _is_pipeline(other) and other != key:
                models.release(other)
    return models.get(
        key,
        lambda: load_pipeline(backend, weights_root, runtime, memory_mode, motion),
        size_bytes=_expected_bytes(backend, weights_root, runtime, memory_mode, motion),
        unload=_unload,
    )


def _expected_bytes(backend: str, weights_root: Optional[str | os.PathLike[str]], runtime: Runtime, memory_mode: str,
                    motion: Optional[MotionChoice] = None) -> int:
    """Device memory the pipeline's weights will take: none on the device when offloading, else the files' size."""
    if memory_mode in OFFLOAD_MODES:
        return 0
    total = 0
    for name in pipeline_models(backend, motion):
        folder = model_dir(name, weights_root)
        # A motion checkpoint is one file of a folder that holds several (one per distilled step count).
        total += (folder / motion.file).stat().st_size if motion and motion.file and name == motion.model else models.folder_bytes(folder)
    return total


def _unload(loaded: LoadedPipeline) -> None:
    """Remove accelerate's offload hooks, which otherwise keep references to every module."""
    remove = getattr(loaded.pipe, "remove_all_hooks", None)
    if callable(remove) and loaded.memory_mode in OFFLOAD_MODES:
        remove()


def load_pipeline(backend: str, weights_root: Optional[str | os.PathLike[str]], runtime: Runtime, memory_mode: str,
                  motion: Optional[MotionChoice] = None) -> LoadedPipeline:
    """Build a backend's pipeline from the weights folder and place it per `memory_mode` (no caching)."""
    if backend not in BACKEND_MODELS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_MODELS)}")
    folders = {name: model_dir(name, weights_root) for name in pipeline_models(backend, motion)}
    start = time.perf_counter()
    try:
        pipe = _build_animatediff(folders, runtime, motion) if backend == "animatediff" else _build_vace(folders, runtime)
    except (WeightsMissingError, InputError):
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError) as exc:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise load_error(folders, weights_dir(weights_root), exc) from exc
    for component in pipe.components.values():
        # Modules built from configs (and the motion UNet AnimateDiff assembles) start in train mode: dropout on.
        if hasattr(component, "eval"):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    _place(pipe, runtime, memory_mode)
    models = {
        name: {
            "hub_id": get_spec(name).hub_id,
            "revision": get_spec(name).revision,
            "tiny": is_tiny(name, weights_root),
            "path": str(folder / motion.file if motion and motion.file and name == motion.model else folder),
        }
        for name, folder in folders.items()
    }
    return LoadedPipeline(
        pipe=pipe,
        backend=backend,
        memory_mode=memory_mode,
        key=pipeline_key(backend, weights_root, runtime, memory_mode, motion),
        models=models,
        scheduler_config=dict(pipe.scheduler.config),
        load_s=time.perf_counter() - start,
        tiny=any(m["tiny"] for m in models.values()),
    )


def _build_animatediff(folders: dict, runtime: Runtime, motion: Optional[MotionChoice] = None) -> Any:
    from diffusers import AnimateDiffControlNetPipeline, AutoencoderKL, ControlNetModel, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from aas_core.generate.presets import load_motion_checkpoint

    sd, dtype = folders["sd15"], runtime.dtype
    # Half-size fp16 files where they were downloaded (`weights download --variant fp16`) and the run is half precision.
    sd_variant = file_variant("sd15", sd, runtime.dtype_name)
    if motion is not None and motion.file:
        motion_adapter = load_motion_checkpoint(folders[motion.model], motion.file, dtype)
    else:
        name = motion.model if motion else PRESET_TABLE["standard"].motion_model
        motion_adapter = MotionAdapter.from_pretrained(
            folders[name], dtype=dtype, variant=file_variant(name, folders[name], runtime.dtype_name)
        )
    controlnet = folders["controlnet-depth-sd15"]
    pipe = AnimateDiffControlNetPipeline(
        vae=AutoencoderKL.from_pretrained(sd / "vae", dtype=dtype, variant=sd_variant),
        text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder", dtype=dtype, variant=sd_variant),
        tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(sd / "unet", dtype=dtype, variant=sd_variant),
        motion_adapter=motion_adapter,
        controlnet=ControlNetModel.from_pretrained(
            controlnet, dtype=dtype, variant=file_variant("controlnet-depth-sd15", controlnet, runtime.dtype_name)
        ),
        scheduler=DDIMScheduler.from_pretrained(sd / "scheduler"),
        feature_extractor=None,
        image_encoder=None,
    )
    return pipe


def _build_vace(folders: dict, runtime: Runtime) -> Any:
    import torch
    from diffusers import AutoencoderKLWan, WanVACEPipeline

    folder = folders["wan2.1-vace-1.3b"]
    # Wan's VAE is kept in float32 (its own recommendation); the transformer and text encoder use the runtime dtype.
    vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32)
    return WanVACEPipeline.from_pretrained(folder, vae=vae, dtype=runtime.dtype)


def _place(pipe: Any, runtime: Runtime, memory_mode: str) -> None:
    if memory_mode == "model_offload":
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif memory_mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=runtime.device)
    else:
        pipe.to(runtime.device)
    if memory_mode != "full":
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()


def make_scheduler(loaded: LoadedPipeline, name: str) -> Any:
    """A fresh scheduler of kind `name` configured for the backend (linear betas for AnimateDiff, flow for Wan)."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    config = loaded.scheduler_config
    if loaded.backend == "vace":
        if name in ("default", "unipc"):
            return UniPCMultistepScheduler.from_config(config)
        if name == "dpm++":
            return DPMSolverMultistepScheduler.from_config(config)
        if name == "euler":
            return FlowMatchEulerDiscreteScheduler(shift=config.get("flow_shift", 3.0))
        raise InputError(f"scheduler {name!r} does not work with VACE")
    # AnimateDiff's motion modules were trained on SD1.5 with a linear beta schedule (its authors' setting).
    common = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace", "steps_offset": 1}
    if name in ("default", "ddim"):
        return DDIMScheduler.from_config(config, **common)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, **common, algorithm_type="dpmsolver++", use_karras_sigmas=True)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, **common)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config, **common)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, **common)
    raise InputError(f"unknown scheduler {name!r}")
