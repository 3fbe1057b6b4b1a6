"""The conditioning clip: a span of a video retimed to the shot's frame count and fitted to its size."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, get_args

import numpy as np

from aas_core.errors import InputError
from aas_core.video_io import VideoInfo, probe, sample_frames

FitMode = Literal["crop", "pad"]
FIT_MODES: tuple[str, ...] = get_args(FitMode)
MIN_SIDE, MAX_SIDE = 32, 2048
"""Generation sizes we accept (each side, multiples of 8)."""
MAX_FRAMES = 512
MAX_SPEED = 16.0


@dataclass
class ConditioningClip:
    """RGB frames (T, H, W, 3) uint8 at the generation size, with where and when they came from."""

    rgb: np.ndarray
    fps: float
    span: tuple[float, float]
    times: list[float]
    """Source timestamp (s) of each output frame."""
    content_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of real picture inside the frame; the rest is padding when fit="pad"."""
    info: VideoInfo
    warnings: list[str] = field(default_factory=list)

    def content_mask(self) -> np.ndarray:
        """(H, W) bool, True where the frame shows the source (not padding)."""
        mask = np.zeros(self.rgb.shape[1:3], bool)
        x0, y0, x1, y1 = self.content_box
        mask[y0:y1, x0:x1] = True
        return mask


def parse_size(text: str) -> tuple[int, int]:
    """'512x320' -> (512, 320), validated by `check_size`."""
    try:
        width, height = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise InputError(f"size {text!r} is not WIDTHxHEIGHT; write it like 512x512") from None
    return check_size((width, height))


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return (w, h) if both sides are multiples of 8 within [MIN_SIDE, MAX_SIDE], else InputError."""
    width, height = (int(v) for v in size)
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE or side % 8:
            raise InputError(
                f"size {width}x{height} is not usable: each side must be a multiple of 8 between "
                f"{MIN_SIDE} and {MAX_SIDE} (e.g. 512x512, 768x432)"
            )
    return width, height


def fit_geometry(src: tuple[int, int], dst: tuple[int, int], fit: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Scaled source size (w, h) and its (x, y) offset in the destination, for "crop" or "pad"."""
    (sw, sh), (dw, dh) = src, dst
    scale = max(dw / sw, dh / sh) if fit == "crop" else min(dw / sw, dh / sh)
    if fit == "crop":
        # Round up so the scaled frame always covers the target before the centre crop.
        w, h = max(dw, int(np.ceil(sw * scale - 1e-6))), max(dh, int(np.ceil(sh * scale - 1e-6)))
    else:
        w, h = min(dw, max(1, int(round(sw * scale)))), min(dh, max(1, int(round(sh * scale))))
    return (w, h), ((dw - w) // 2, (dh - h) // 2)


def resolve_span(info: VideoInfo, start: Optional[float], end: Optional[float]) -> tuple[float, float]:
    """(start, end) in seconds inside the clip (None = clip start / end), or an InputError naming the fix."""
    name = Path(info.path).name
    one_frame = 1.0 / info.fps
    start = 0.0 if start is None else float(start)
    end = info.duration if end is None else float(end)
    if not (np.isfinite(start) and np.isfinite(end)):
        raise InputError(f"start and end must be numbers of seconds, got {start} and {end}")
    if start < 0 or start >= info.duration:
        raise InputError(f"start {start:.2f}s is outside {name} (0 to {info.duration:.2f}s); pick a start inside the clip")
    if end > info.duration + one_frame:
        raise InputError(
            f"end {end:.2f}s is past the end of {name} ({info.duration:.2f}s); use an end of at most {info.duration:.2f}"
        )
    end = min(end, info.duration)
    if end - start < min(one_frame, 0.01):
        raise InputError(f"span {start:.2f}-{end:.2f}s of {name} is empty; end must come after start")
    return round(start, 6), round(end, 6)


def load_conditioning_clip(
    path: str | os.PathLike[str],
    start: Optional[float] = None,
    end: Optional[float] = None,
    frames: int = 16,
    size: tuple[int, int] = (512, 512),
    speed: float = 1.0,
    fit: str = "crop",
) -> ConditioningClip:
    """Decode [start, end) of `path` as `frames` evenly timed frames at `size` (w, h).

    The frames cover `(end - start) * speed` seconds of footage from `start`, and play back in the span's
    own duration (fps = frames / (end - start)): speed 2 shows twice the motion, 0.5 half of it slowed.
    """
    width, height = check_size(size)
    if fit not in FIT_MODES:
        raise InputError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    if not 1 <= int(frames) <= MAX_FRAMES:
        raise InputError(f"frames must be between 1 and {MAX_FRAMES}, got {frames}")
    if not 0 < speed <= MAX_SPEED:
        raise InputError(f"speed must be above 0 and at most {MAX_SPEED:g} (1 = as filmed), got {speed}")
    frames = int(frames)
    info = probe(path)
    start, end = resolve_span(info, start, end)
    warnings: list[str] = []
    covered = (end - start) * speed
    if start + covered > info.duration + 1e-6:
        covered = info.duration - start
        warnings.append(
            f"speed {speed:g} needs {(end - start) * speed:.2f}s of footage but only {covered:.2f}s remain after "
            f"{start:.2f}s; the motion is slower than asked"
        )
    times = [start + i * covered / frames for i in range(frames)]

    (sw, sh), (ox, oy) = fit_geometry((info.width, info.height), (width, height), fit)
    decoded = sample_frames(path, times, size=(sw, sh))
    out = np.zeros((frames, height, width, 3), np.uint8)
    for i, frame in enumerate(decoded):
        rgb = frame.rgb
        if fit == "crop":
            y0, x0 = (rgb.shape[0] - height) // 2, (rgb.shape[1] - width) // 2
            out[i] = rgb[y0 : y0 + height, x0 : x0 + width]
        else:
            out[i, oy : oy + rgb.shape[0], ox : ox + rgb.shape[1]] = rgb
    distinct = len({round(f.time, 6) for f in decoded})
    if distinct < frames:
        warnings.append(
            f"the span holds {distinct} distinct frames for {frames} requested: frames repeat (held/slowed); "
            "choose a longer span, a higher speed or fewer frames"
        )
    box = (0, 0, width, height) if fit == "crop" else (ox, oy, ox + sw, oy + sh)
    return ConditioningClip(
        rgb=out,
        fps=frames / (end - start),
        span=(start, end),
        times=[f.time for f in decoded],
        content_box=box,
        info=info,
        warnings=warnings,
    )
