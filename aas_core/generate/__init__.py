"""Structure-guided shot generation: a prompt plus a depth sequence -> a video shot (AnimateDiff+ControlNet or Wan-VACE).

Importing this package is cheap; torch and diffusers load on the first `generate` call.
"""

from aas_core.generate.presets import PRESETS, Preset, default_preset, estimate_gpu_seconds
from aas_core.generate.run import generate
from aas_core.generate.spec import (
    BACKENDS,
    MEMORY_MODES,
    SCHEDULERS,
    Backend,
    MemoryMode,
    OutOfMemory,
    SchedulerName,
    ShotResult,
    ShotSpec,
)

__all__ = [
    "BACKENDS",
    "MEMORY_MODES",
    "SCHEDULERS",
    "Backend",
    "MemoryMode",
    "OutOfMemory",
    "PRESETS",
    "Preset",
    "SchedulerName",
    "ShotResult",
    "ShotSpec",
    "default_preset",
    "estimate_gpu_seconds",
    "generate",
]
