"""What a shot asks for (`ShotSpec`, validated) and what it produced (`ShotResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import numpy as np

from aas_core.errors import InputError
from aas_core.generate.presets import PRESET_TABLE, PRESETS, Preset, check_preset, default_preset
from aas_core.limits import MAX_NEGATIVE_PROMPT_CHARS, MAX_PROMPT_CHARS, check_text, is_finite_number
from aas_core.registry import BACKEND_MODELS

Backend = Literal["animatediff", "vace"]
SchedulerName = Literal["default", "ddim", "dpm++", "euler", "euler_a", "unipc"]
MemoryMode = Literal["auto", "full", "vae_tiling", "model_offload", "sequential_offload"]

BACKENDS: tuple[str, ...] = tuple(BACKEND_MODELS)  # from the registry; `Backend` spells them for type checkers
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)
"""`auto` then the concrete modes from fastest to leanest; an OOM retries in the next one."""

DEFAULT_BACKEND: Backend = "animatediff"
VACE_SCHEDULERS: tuple[str, ...] = ("default", "unipc", "dpm++", "euler")
"""Flow-matching schedulers only: DDIM and ancestral Euler have no flow-prediction form."""

BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "animatediff": {"frames": 16},  # steps and guidance: the preset's (aas_core.generate.presets)
    "vace": {"frames": 17, "guidance": 5.0, "steps": 30},
}
MAX_FRAMES = {"animatediff": 128, "vace": 81}
"""AnimateDiff past its 16-frame window uses FreeNoise context windows; VACE was trained up to 81 frames."""
SIZE_MULTIPLE = {"animatediff": 8, "vace": 16}
"""VAE factor 8; VACE also patches latents 2x2."""
MIN_SIDE, MAX_SIDE = 32, 2048
VACE_TEMPORAL = 4


class OutOfMemory(InputError):
    """The accelerator ran out of memory even in the leanest allowed mode: the message says what to lower."""


def _nearest_vace_frames(frames: int) -> str:
    low = max(1, (frames - 1) // VACE_TEMPORAL * VACE_TEMPORAL + 1)
    high = low + VACE_TEMPORAL
    return f"{low} or {high}" if low != frames else str(frames)


@dataclass
class ShotSpec:
    """Every setting of one generated shot; invalid values raise InputError at construction."""

    prompt: str
    negative_prompt: str = ""
    backend: Backend = DEFAULT_BACKEND
    frames: Optional[int] = None
    """None: the backend's default (16 AnimateDiff, 17 VACE, whose counts are 4k+1)."""
    fps: float = 8.0
    width: int = 512
    height: int = 512
    preset: Optional[Preset] = None
    """standard or fast (AnimateDiff-Lightning, no CFG); None: fast on a Hugging Face Space, else standard."""
    steps: Optional[int] = None
    """None: the preset's (25 standard, 4 fast) on AnimateDiff, 30 on VACE."""
    guidance: Optional[float] = None
    """Classifier-free guidance scale; None: the preset's (7.5 standard, 1 fast = off) or 5.0 VACE; 1 or below disables it."""
    seed: int = 0
    scheduler: SchedulerName = "default"
    strength: float = 0.8
    """Structure strength: how hard depth steers (ControlNet / VACE conditioning scale), 0..2."""
    structure_start: float = 0.0
    structure_end: float = 1.0
    """Fractions of the denoising during which depth guides (later steps only refine detail)."""
    memory_mode: MemoryMode = "auto"
    context_length: int = 16
    context_stride: int = 4
    """FreeNoise windows for AnimateDiff shots longer than `context_length` frames."""
    reference_images: tuple[str, ...] = ()
    """Image files of a character or object (VACE only; concepts add their own)."""
    ip_scale: Optional[float] = None
    """IP-Adapter weight of instant characters' photos in this shot, 0..2; None: each concept's own (0.6 by default)."""

    def __post_init__(self) -> None:
        if self.backend in BACKEND_DEFAULTS:
            if self.preset is None:
                self.preset = default_preset() if self.backend == "animatediff" else "standard"
            defaults = BACKEND_DEFAULTS[self.backend]
            if self.backend == "animatediff" and self.preset in PRESET_TABLE:
                preset = PRESET_TABLE[self.preset]
                defaults = {**defaults, "steps": preset.steps, "guidance": preset.guidance}
            self.frames = defaults["frames"] if self.frames is None else self.frames
            self.steps = defaults.get("steps") if self.steps is None else self.steps
            self.guidance = defaults.get("guidance") if self.guidance is None else self.guidance
        self.reference_images = tuple(str(p) for p in self.reference_images)
        self.check()

    def check(self) -> None:
        """Raise InputError naming the first bad setting and what to use instead."""
        _choice("backend", self.backend, BACKENDS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("memory_mode", self.memory_mode, MEMORY_MODES)
        _choice("preset", self.preset, PRESETS)
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError("the prompt is empty: describe what the shot shows, e.g. 'a knight walking through snow'")
        check_text(self.prompt, "prompt", MAX_PROMPT_CHARS)
        if not isinstance(self.negative_prompt, str):
            raise InputError("negative_prompt must be text")
        check_text(self.negative_prompt, "negative_prompt", MAX_NEGATIVE_PROMPT_CHARS)
        frames = _int("frames", self.frames)
        if frames < 1:
            raise InputError(f"frames must be at least 1, got {frames}")
        if frames > MAX_FRAMES[self.backend]:
            raise InputError(f"{self.backend} makes at most {MAX_FRAMES[self.backend]} frames per shot, got {frames}: split the shot")
        if self.backend == "vace" and frames % VACE_TEMPORAL != 1:
            raise InputError(f"VACE makes 4k+1 frames (1, 5, 9, ... 81); {frames} is not one: use {_nearest_vace_frames(frames)}")
        multiple = SIZE_MULTIPLE[self.backend]
        for name in ("width", "height"):
            side = _int(name, getattr(self, name))
            if side < MIN_SIDE or side > MAX_SIDE:
                raise InputError(f"{name} must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {side}")
            if side % multiple:
                fixed = max(multiple, round(side / multiple) * multiple)
                raise InputError(f"{name} {side} is not a multiple of {multiple} (needed by {self.backend}): use {fixed}")
        steps = _int("steps", self.steps)
        if not 1 <= steps <= 200:
            raise InputError(f"steps must be between 1 and 200, got {steps}")
        _number("guidance", self.guidance, 0.0, 30.0)
        _number("fps", self.fps, 1.0, 120.0)
        _number("strength", self.strength, 0.0, 2.0)
        _number("structure_start", self.structure_start, 0.0, 1.0)
        _number("structure_end", self.structure_end, 0.0, 1.0)
        if self.structure_start >= self.structure_end:
            raise InputError(
                f"structure_start ({self.structure_start}) must be below structure_end ({self.structure_end}); "
                "e.g. 0.0 and 0.6 lets depth guide the first 60% of the denoising"
            )
        seed = _int("seed", self.seed)
        if not 0 <= seed < 2**63:
            raise InputError(f"seed must be between 0 and 2**63-1, got {seed}")
        if self.backend == "vace" and self.scheduler not in VACE_SCHEDULERS:
            raise InputError(f"scheduler {self.scheduler!r} does not work with VACE (flow matching): use one of {', '.join(VACE_SCHEDULERS)}")
        length, stride = _int("context_length", self.context_length), _int("context_stride", self.context_stride)
        if not 8 <= length <= 32:
            raise InputError(f"context_length must be between 8 and 32 frames (the motion module's range), got {length}")
        if not 1 <= stride <= length:
            raise InputError(f"context_stride must be between 1 and context_length ({length}), got {stride}")
        check_preset(self)
        if self.ip_scale is not None:
            _number("ip_scale", self.ip_scale, 0.0, 2.0)
        if self.reference_images and self.backend != "vace":
            raise InputError("reference images need the vace backend; for AnimateDiff, train a concept from the images instead")
        for path in self.reference_images:
            if not Path(path).is_file():
                raise InputError(f"reference image {path} does not exist; check the path")

    @property
    def uses_free_noise(self) -> bool:
        """Whether this shot needs FreeNoise context windows (AnimateDiff past one window)."""
        return self.backend == "animatediff" and int(self.frames or 0) > self.context_length

    def to_dict(self) -> dict[str, Any]:
        """All settings as JSON-ready values."""
        out = asdict(self)
        out["reference_images"] = list(self.reference_images)
        return out


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _number(name: str, value: Any, low: float, high: float) -> float:
    if not is_finite_number(value):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not low <= float(value) <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value}")
    return float(value)


@dataclass
class ShotResult:
    """A generated shot: frames, its mp4, its output folder and every setting that made it."""

    frames: np.ndarray
    """(T, H, W, 3) uint8."""
    fps: float
    video_path: Path
    folder: Path
    params: dict[str, Any]
    seed: int
    backend: str
    tiny: bool
    """Made with tiny random weights: a workflow preview, not a real result."""
    memory_mode: str
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: load, prepare (before the first step), denoise (the step loop), VAE encode and decode, overhead, write, total."""

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])
