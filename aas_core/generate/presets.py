"""Speed presets of the AnimateDiff backend: which motion model, scheduler, steps and guidance a shot runs.

`standard` is AnimateDiff v3 with DDIM, 25 steps and classifier-free guidance (two denoiser passes per
step). `fast` is AnimateDiff-Lightning (ByteDance, distilled from AnimateDiff v2 for 1/2/4/8 steps):
the Euler scheduler with trailing timesteps and linear betas it was distilled with, 4 steps, guidance
off (one pass per step): 4 denoiser passes per shot instead of 50. Import is cheap (no torch).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from aas_core.errors import InputError
from aas_core.registry import get_spec

if TYPE_CHECKING:
    from aas_core.generate.spec import ShotSpec

Preset = Literal["standard", "fast"]
PRESETS: tuple[str, ...] = get_args(Preset)
SPACE_ENV = "SPACE_ID"
"""Set by Hugging Face Spaces: there `fast` is the default (a ZeroGPU call has a minute or two)."""


@dataclass(frozen=True)
class MotionChoice:
    """The motion module a pipeline is built with: a registry model and, for bare checkpoints, the file in it."""

    model: str
    file: str = ""
    """A state-dict file inside the model folder ("" = a diffusers MotionAdapter folder with config.json)."""


@dataclass(frozen=True)
class PresetSpec:
    """Everything a preset fixes for an AnimateDiff shot."""

    name: str
    motion_model: str
    steps: int
    guidance: float
    """1.0 (or below): no classifier-free guidance, one denoiser pass per step."""
    scheduler: str = ""
    """diffusers scheduler class the model needs, built from the base model's scheduler config plus
    `scheduler_config`; "" = the shot's own choice (`ShotSpec.scheduler`, DDIM by default)."""
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    motion_file: str = ""
    """`{steps}` is replaced by the step count: Lightning has one checkpoint per distilled step count."""
    allowed_steps: tuple[int, ...] = ()
    """Step counts the motion model was made for (empty: any)."""
    description: str = ""

    def motion(self, steps: int) -> MotionChoice:
        """The motion module for a shot of `steps` steps."""
        return MotionChoice(self.motion_model, self.motion_file.format(steps=steps))


PRESET_TABLE: dict[str, PresetSpec] = {
    "standard": PresetSpec(
        name="standard",
        motion_model="animatediff-motion-adapter-v1-5-3",
        steps=25,
        guidance=7.5,
        description="AnimateDiff v3, DDIM 25 steps, guidance 7.5: best quality, 50 denoiser passes per shot",
    ),
    "fast": PresetSpec(
        name="fast",
        motion_model="animatediff-lightning",
        motion_file=get_spec("animatediff-lightning").options["file"],
        # ByteDance's model card: EulerDiscreteScheduler, timestep_spacing "trailing", beta_schedule "linear".
        scheduler="EulerDiscreteScheduler",
        scheduler_config={"timestep_spacing": "trailing", "beta_schedule": "linear"},
        steps=4,
        guidance=1.0,
        allowed_steps=tuple(get_spec("animatediff-lightning").options["steps"]),
        description="AnimateDiff-Lightning 4 steps, Euler trailing, no guidance: 4 denoiser passes per shot",
    ),
}
"""The preset table: the one place each preset's model, scheduler, steps and guidance are written."""


def default_preset() -> Preset:
    """`fast` on a Hugging Face Space (SPACE_ID set), else `standard`."""
    return "fast" if os.environ.get(SPACE_ENV) else "standard"


def preset_spec(name: str) -> PresetSpec:
    """A preset by name; an unknown one lists the known ones."""
    if name not in PRESET_TABLE:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESET_TABLE[name]


def motion_for(spec: "ShotSpec") -> "MotionChoice | None":
    """The motion module an AnimateDiff shot's preset loads (None for other backends)."""
    if spec.backend != "animatediff":
        return None
    return preset_spec(spec.preset or "standard").motion(int(spec.steps or 0))


def shot_models(spec: "ShotSpec") -> tuple[str, ...]:
    """Registry names a shot's pipeline loads: the backend's models with its preset's motion module."""
    from aas_core.generate.pipelines import pipeline_models

    return pipeline_models(spec.backend, motion_for(spec))


def check_preset(spec: "ShotSpec") -> None:
    """Refuse settings a preset's model cannot run (the wrong backend, step count or scheduler)."""
    preset = preset_spec(spec.preset or "standard")
    if preset.name == "standard":
        return
    if spec.backend != "animatediff":
        raise InputError(f"the {preset.name} preset is for the animatediff backend; use preset standard with {spec.backend}")
    if preset.allowed_steps and spec.steps not in preset.allowed_steps:
        counts = ", ".join(str(n) for n in preset.allowed_steps)
        raise InputError(f"the {preset.name} preset's model was distilled for {counts} steps, not {spec.steps}: use one of those")
    if preset.scheduler and spec.scheduler != "default":
        raise InputError(
            f"the {preset.name} preset runs the scheduler its model was distilled with ({preset.scheduler}, "
            f"{preset.scheduler_config['timestep_spacing']} spacing); leave scheduler at default"
        )


def make_scheduler(preset: PresetSpec, base_config: dict[str, Any]) -> Any:
    """The scheduler the preset's model needs, from the base model's scheduler config with its settings on top."""
    import diffusers

    if not preset.scheduler:
        raise ValueError(f"preset {preset.name} uses the shot's own scheduler")
    return getattr(diffusers, preset.scheduler).from_config(base_config, **preset.scheduler_config)


def denoiser_passes(spec: "ShotSpec") -> int:
    """Denoiser passes over the shot's latents: steps x 2 with classifier-free guidance (batched in one call), else x 1.

    diffusers' FreeNoise windows only the motion modules' temporal attention inside each pass, so long
    shots cost more per pass (frames), not more passes.
    """
    return int(spec.steps or 0) * (2 if float(spec.guidance or 0.0) > 1.0 else 1)


# --- ZeroGPU call budgets ----------------------------------------------------------------------------------

GPU_PASS_SECONDS = {"animatediff": 0.55, "vace": 1.6}
"""Seconds of one denoiser pass over 16 (AnimateDiff) or 17 (VACE) frames at 512x512 in half precision
on an A100/H100-class GPU: an estimate from published AnimateDiff/Wan timings, not measured here (no GPU)."""
GPU_DECODE_SECONDS_PER_FRAME = 0.08
"""VAE decode per 512x512 frame."""
GPU_FIXED_SECONDS = 25.0
"""Moving the pipeline onto the GPU, encoding the prompt and control frames, writing the shot."""
GPU_MARGIN = 1.5
"""Headroom over the estimate: a call killed at its limit loses the whole shot."""
GPU_MIN_SECONDS, GPU_MAX_SECONDS = 30, 600


def estimate_gpu_seconds(spec: "ShotSpec") -> int:
    """A `spaces.GPU(duration=...)` budget for one shot: short jobs queue sooner, long ones are not killed."""
    window_frames = 16 if spec.backend == "animatediff" else 17
    frames = int(spec.frames or window_frames)
    # A pass costs about linearly in pixels x frames (spatial layers dominate; temporal attention is short or windowed).
    scale = (spec.width * spec.height) / (512 * 512) * frames / window_frames
    denoise = denoiser_passes(spec) * GPU_PASS_SECONDS.get(spec.backend, GPU_PASS_SECONDS["animatediff"]) * scale
    decode = frames * GPU_DECODE_SECONDS_PER_FRAME * (spec.width * spec.height) / (512 * 512)
    seconds = (GPU_FIXED_SECONDS + denoise + decode) * GPU_MARGIN
    return int(min(GPU_MAX_SECONDS, max(GPU_MIN_SECONDS, math.ceil(seconds))))


def record(preset: PresetSpec, spec: "ShotSpec", scheduler: Any) -> dict[str, Any]:
    """What params.json keeps about the preset: model, scheduler and its config, steps, guidance, passes."""
    motion = preset.motion(int(spec.steps or preset.steps))
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {
        "name": preset.name,
        "motion_model": motion.model,
        "motion_file": motion.file or None,
        "scheduler": type(scheduler).__name__,
        "scheduler_config": {k: config.get(k) for k in ("beta_schedule", "timestep_spacing", "steps_offset", "prediction_type") if k in config},
        "steps": int(spec.steps or 0),
        "guidance": float(spec.guidance or 0.0),
        "cfg": float(spec.guidance or 0.0) > 1.0,
        "denoiser_passes": denoiser_passes(spec),
    }


def load_motion_checkpoint(folder: Any, file: str, dtype: Any) -> Any:
    """A MotionAdapter from a bare state-dict checkpoint (Lightning ships no config.json), strictly matched."""
    from diffusers import MotionAdapter
    from safetensors.torch import load_file

    from aas_core.tiny.adapters import lightning_config
    from aas_core.weights import TINY_MARKER

    adapter = MotionAdapter.from_config(lightning_config(tiny=(folder / TINY_MARKER).is_file()))
    adapter.load_state_dict(load_file(str(folder / file)), strict=True)
    return adapter.to(dtype)
