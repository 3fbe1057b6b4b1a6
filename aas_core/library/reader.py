"""Reader stage: scan a folder, split each video into shots (PySceneDetect) and sample frames, in one decode pass."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from aas_core.errors import InputError
from aas_core.video_io import VIDEO_EXTENSIONS, VideoInfo, frame_to_rgb, iter_av_frames, probe

DETECT_WIDTH = 160
"""Frames are scaled to this width for cut detection: cuts survive it and it costs little."""


@dataclass(frozen=True)
class ReaderSettings:
    """How videos are cut into shots and sampled for embedding."""

    sample_fps: float = 2.0
    min_shot_seconds: float = 0.5
    max_shot_seconds: float = 8.0
    cut_threshold: float = 27.0
    crop_size: int = 224
    thumb_width: int = 256


@dataclass
class SampledShot:
    """One shot of a video: its span and the frames sampled from it."""

    start: float
    end: float
    crops: list[np.ndarray] = field(default_factory=list)
    """Centre crops at the embedder's input size, one per sampled time."""
    thumbnail: Optional[np.ndarray] = None
    """The middle sampled frame, whole, `thumb_width` wide."""
    frames_sampled: int = 0

    def __post_init__(self) -> None:
        self.frames_sampled = self.frames_sampled or len(self.crops)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


@dataclass(frozen=True)
class FoundFile:
    """A file met while scanning, with why it is skipped (empty reason = a video to index)."""

    path: Path
    size: int
    mtime_ns: int
    skip_reason: str = ""


def scan_folder(folder: str | os.PathLike[str]) -> list[FoundFile]:
    """Every non-hidden file under `folder`, recursively, sorted; non-video extensions carry a skip reason."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds your clips")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError as exc:
                found.append(FoundFile(path, 0, 0, f"unreadable: {exc.strerror}"))
                continue
            reason = "" if path.suffix.lower() in VIDEO_EXTENSIONS else f"not a video file ({path.suffix or 'no extension'})"
            found.append(FoundFile(path, stat.st_size, stat.st_mtime_ns, reason))
    return found


def _crop_size_for(frame_w: int, frame_h: int, side: int) -> tuple[int, int]:
    scale = side / min(frame_w, frame_h)
    return max(side, round(frame_w * scale)), max(side, round(frame_h * scale))


def _center(array: np.ndarray, side: int) -> np.ndarray:
    h, w = array.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(array[top : top + side, left : left + side])


def _plane(frame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def _detection_image(frame, width: int) -> np.ndarray:
    """A small BGR image for cut detection, straight from the YUV planes when possible.

    Strided sampling of the planes costs a tenth of a swscale conversion, and cut detection
    only compares frame-wide statistics, so aliasing does not matter.
    """
    import cv2

    if frame.format.name in ("yuv420p", "yuvj420p"):
        step = max(2, frame.width // width // 2 * 2)
        y = _plane(frame, 0)[::step, ::step]
        u = _plane(frame, 1)[:: step // 2, :: step // 2]
        v = _plane(frame, 2)[:: step // 2, :: step // 2]
        h, w = min(y.shape[0], u.shape[0]), min(y.shape[1], u.shape[1])
        return cv2.cvtColor(np.dstack([y[:h, :w], v[:h, :w], u[:h, :w]]), cv2.COLOR_YCrCb2BGR)
    height = max(2, round(width * frame.height / frame.width))
    return frame.to_ndarray(format="bgr24", width=width, height=height, interpolation="FAST_BILINEAR")


def _split_long(start: float, end: float, max_len: float) -> list[tuple[float, float]]:
    parts = max(1, math.ceil((end - start) / max_len - 1e-9))
    step = (end - start) / parts
    return [(start + i * step, start + (i + 1) * step) for i in range(parts)]


def iter_shots(
    path: str | os.PathLike[str], settings: ReaderSettings = ReaderSettings(), info: Optional[VideoInfo] = None
) -> Iterator[SampledShot]:
    """Yield the shots of one video with their sampled frames, each as soon as its end is known.

    Memory stays bounded by one shot's samples, whatever the video's length.
    """
    from scenedetect import ContentDetector
    from scenedetect.common import FrameTimecode

    info = info or probe(path)
    fps = info.fps
    detector = ContentDetector(threshold=settings.cut_threshold, min_scene_len=max(1, int(settings.min_shot_seconds * fps)))
    crop_wh = _crop_size_for(info.width, info.height, settings.crop_size)
    thumb_wh = (settings.thumb_width, max(2, round(settings.thumb_width * info.height / info.width)))
    step = 1.0 / settings.sample_fps

    frame_times: list[float] = []
    # (time, crop, decoded frame): only the shot's middle frame is ever converted to a thumbnail.
    samples: list[tuple[float, np.ndarray, "av.VideoFrame"]] = []
    shot_start = 0.0
    next_sample = 0.0
    last_time = 0.0

    def close_shot(end: float, whole_video: bool = False) -> Iterator[SampledShot]:
        nonlocal samples, shot_start
        mine = [s for s in samples if s[0] < end]
        samples = [s for s in samples if s[0] >= end]
        for part_start, part_end in _split_long(shot_start, end, settings.max_shot_seconds):
            part = [s for s in mine if part_start <= s[0] < part_end]
            # Slivers between cuts are useless as motion; a video that is one short shot is still kept.
            if part and (part_end - part_start >= settings.min_shot_seconds or whole_video):
                thumbnail = frame_to_rgb(part[len(part) // 2][2], thumb_wh)
                yield SampledShot(part_start, part_end, [s[1] for s in part], thumbnail)
        shot_start = end

    # One decoder thread: the reader runs beside the embedder, and frame threading costs extra CPU.
    for index, (t, frame) in enumerate(iter_av_frames(path, threaded=False)):
        frame_times.append(t)
        last_time = t
        cuts = detector.process_frame(FrameTimecode(index, fps=fps), _detection_image(frame, DETECT_WIDTH))
        for cut in cuts:
            cut_index = min(cut.frame_num, len(frame_times) - 1)
            yield from close_shot(frame_times[cut_index])
        if t + 1e-6 >= next_sample:
            crop = _center(frame_to_rgb(frame, crop_wh), settings.crop_size)
            samples.append((t, crop, frame))
            next_sample = t + step
    if not frame_times:
        raise InputError(f"{Path(path).name} has no decodable video frames")
    frame_period = 1.0 / fps
    yield from close_shot(last_time + frame_period, whole_video=shot_start == 0.0)
