"""Motion structure: from a clip span to a clean, temporally stable depth sequence, with previews."""

from aas_core.depth.clip import FIT_MODES, ConditioningClip, FitMode, load_conditioning_clip, parse_size
from aas_core.depth.estimators import DEFAULT_ESTIMATOR, ESTIMATORS, EstimatorName, load_estimator, release_estimators
from aas_core.depth.pipeline import DEFAULT_SMOOTHING, default_cache_dir, depth_from_clip
from aas_core.depth.preview import (
    colorize,
    contact_sheet,
    write_contact_sheet,
    write_depth_preview,
    write_previews,
    write_side_by_side,
)
from aas_core.depth.stabilize import NORMALIZE_MODES, flicker, normalize, relative_flicker
from aas_core.depth.video import DepthVideo

__all__ = [
    "ConditioningClip",
    "DEFAULT_ESTIMATOR",
    "DEFAULT_SMOOTHING",
    "DepthVideo",
    "ESTIMATORS",
    "EstimatorName",
    "FIT_MODES",
    "FitMode",
    "NORMALIZE_MODES",
    "colorize",
    "contact_sheet",
    "default_cache_dir",
    "depth_from_clip",
    "flicker",
    "load_conditioning_clip",
    "load_estimator",
    "normalize",
    "parse_size",
    "relative_flicker",
    "release_estimators",
    "write_contact_sheet",
    "write_depth_preview",
    "write_previews",
    "write_side_by_side",
]
