"""Temporal stability: one robust depth scale for the whole clip, optional smoothing, a flicker figure."""

from __future__ import annotations

from typing import Literal, Optional, get_args

import numpy as np

NormalizeMode = Literal["global", "aligned", "per-frame"]
NORMALIZE_MODES: tuple[str, ...] = get_args(NormalizeMode)
PERCENTILES: tuple[float, float] = (2.0, 98.0)
"""Robust range: outliers (sky, specular spots) beyond these percentiles clip instead of rescaling the clip."""


def normalize_global(
    raw: np.ndarray, mask: Optional[np.ndarray] = None, percentiles: tuple[float, float] = PERCENTILES
) -> np.ndarray:
    """(T, H, W) raw nearness -> [0, 1] with one scale for all frames (percentiles over the clip)."""
    values = raw[:, mask] if mask is not None else raw
    lo, hi = np.percentile(values, percentiles)
    if not np.isfinite(hi - lo) or hi - lo <= 1e-12:
        return np.full(raw.shape, 0.5, np.float32)
    out = np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if mask is not None:
        out[:, ~mask] = 0.0  # padding is "far": it should not attract structure
    return out


def align_frames(raw: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Remove per-frame scale/shift drift: each frame minus its median, over its interquartile range.

    Relative-depth networks are only defined up to scale and shift per image, so their raw output can
    drift across frames; median and IQR follow that drift without reacting to a few extreme pixels
    the way min/max does.
    """
    values = raw[:, mask] if mask is not None else raw.reshape(len(raw), -1)
    q25, q50, q75 = np.percentile(values, [25, 50, 75], axis=1)
    spread = np.maximum(q75 - q25, 1e-12)
    return ((raw - q50[:, None, None]) / spread[:, None, None]).astype(np.float32)


def normalize_per_frame(raw: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """(T, H, W) -> [0, 1] with each frame's own min/max: the common (flickering) baseline."""
    out = np.zeros(raw.shape, np.float32)
    for t, frame in enumerate(raw):
        values = frame[mask] if mask is not None else frame
        lo, hi = float(values.min()), float(values.max())
        out[t] = 0.5 if hi - lo <= 1e-12 else np.clip((frame - lo) / (hi - lo), 0.0, 1.0)
    if mask is not None:
        out[:, ~mask] = 0.0
    return out


def smooth_temporal(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (sigma in frames, centred so nothing lags); 0 leaves frames as they are."""
    if sigma <= 0 or len(frames) < 2:
        return frames.astype(np.float32, copy=False)
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(frames.astype(np.float32), sigma=sigma, axis=0, mode="nearest", truncate=3.0)


def normalize(
    raw: np.ndarray, mode: str = "global", smoothing: float = 0.0, mask: Optional[np.ndarray] = None
) -> np.ndarray:
    """Raw nearness -> depth in [0, 1] (1 = near): normalise (`mode`), then smooth over time.

    "global": one percentile scale for the clip; "aligned": per-frame median/IQR drift removal first,
    then the global scale; "per-frame": each frame's own min/max (the flickering baseline).
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")
    if mode == "per-frame":
        frames = normalize_per_frame(raw, mask)
    else:
        frames = normalize_global(align_frames(raw, mask) if mode == "aligned" else raw, mask)
    return np.clip(smooth_temporal(frames, smoothing), 0.0, 1.0)


def flicker(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of normalised depth (lower is steadier); 0 for one frame."""
    frames = np.asarray(frames, dtype=np.float32)
    if len(frames) < 2:
        return 0.0
    return float(np.mean(np.abs(np.diff(frames, axis=0))))


def relative_flicker(frames: np.ndarray) -> float:
    """`flicker` divided by the frames' own contrast (mean absolute deviation from each frame's mean).

    The plain figure rewards low contrast: per-frame min/max squeezes a frame whenever one outlier
    pixel appears, which looks "steadier" while it is washing the structure out. This one does not.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if len(frames) < 2:
        return 0.0
    contrast = float(np.mean(np.abs(frames - frames.mean(axis=(1, 2), keepdims=True))))
    return flicker(frames) / contrast if contrast > 1e-12 else 0.0
