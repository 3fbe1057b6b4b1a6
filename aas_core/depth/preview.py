"""Previews of a depth sequence: colour-mapped mp4, side-by-side "source | depth" mp4, contact sheet PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aas_core.depth.video import DepthVideo
from aas_core.errors import InputError
from aas_core.fsutil import atomic_path
from aas_core.sampling import spread_indices
from aas_core.video_io import write_video

PREVIEW_FILES = {"depth": "depth_preview.mp4", "side_by_side": "side_by_side.mp4", "contact_sheet": "contact_sheet.png"}


def colorize(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) depth in [0, 1] -> (T, H, W, 3) uint8 RGB with the inferno map (near = bright)."""
    import cv2

    grey = np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)
    return np.stack([cv2.applyColorMap(f, cv2.COLORMAP_INFERNO)[:, :, ::-1] for f in grey])


def _rgb_of(depth: DepthVideo) -> np.ndarray:
    if depth.rgb is None:
        raise InputError("this depth sequence has no source frames (rgb); recreate it with depth_from_clip")
    return depth.rgb


def write_depth_preview(depth: DepthVideo, path: str | os.PathLike[str]) -> Path:
    """Colour-mapped depth as an H.264 mp4 at the sequence's fps."""
    return write_video(path, colorize(depth.frames), depth.fps)


def write_side_by_side(depth: DepthVideo, path: str | os.PathLike[str]) -> Path:
    """"source | depth" mp4: the conditioning RGB beside its colour-mapped depth."""
    return write_video(path, np.concatenate([_rgb_of(depth), colorize(depth.frames)], axis=2), depth.fps)


def contact_sheet(depth: DepthVideo, columns: int = 8, thumb_width: int = 192) -> np.ndarray:
    """(H, W, 3) uint8 grid: up to `columns` evenly spaced frames, source above, depth below."""
    import cv2

    picks = spread_indices(depth.num_frames, columns)
    width, height = depth.size
    tw = min(thumb_width, width)
    th = max(1, round(height * tw / width))
    rows = [colorize(depth.frames[picks])]
    if depth.rgb is not None:
        rows.insert(0, depth.rgb[picks])
    gap = 4
    sheet = np.full((len(rows) * (th + gap) + gap, len(picks) * (tw + gap) + gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = gap + r * (th + gap), gap + c * (tw + gap)
            sheet[y : y + th, x : x + tw] = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
    return sheet


def write_contact_sheet(depth: DepthVideo, path: str | os.PathLike[str], columns: int = 8) -> Path:
    """Write `contact_sheet` as a PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(contact_sheet(depth, columns)).save(tmp, format="PNG")
    return path


def write_previews(depth: DepthVideo, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """All three previews into `folder` (side-by-side only when source frames are kept); name -> path."""
    folder = Path(folder)
    written = {"depth": write_depth_preview(depth, folder / PREVIEW_FILES["depth"])}
    if depth.rgb is not None:
        written["side_by_side"] = write_side_by_side(depth, folder / PREVIEW_FILES["side_by_side"])
    written["contact_sheet"] = write_contact_sheet(depth, folder / PREVIEW_FILES["contact_sheet"])
    return written
