"""Reader stage: scan a folder, split each video into shots (PySceneDetect) and sample frames, in one decode pass."""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from aas_core.errors import InputError
from aas_core.limits import is_finite_number
from aas_core.video_io import VIDEO_EXTENSIONS, VideoInfo, frame_to_rgb, iter_av_frames, probe

DETECT_WIDTH = 160
"""Frames are scaled to this width for cut detection and motion: cuts survive it and it costs little."""
MAX_SAMPLE_FPS = 30.0
"""More samples per second than this only repeats near-identical frames."""
MAX_SAMPLES_PER_SHOT = 1000
"""sample_fps x max_shot_seconds cap: a shot's samples wait in memory until the shot ends."""
MOTION_CLASSES = ("still", "slow", "fast")
STILL_BELOW = 0.01
"""Mean flow (frame widths per second) under which a shot counts as still: sensor noise, compression."""
FAST_FROM = 0.2
"""Mean flow from which a shot counts as fast: the whole frame panning a fifth of its width per second."""


@dataclass(frozen=True)
class ReaderSettings:
    """How videos are cut into shots and sampled for embedding."""

    sample_fps: float = 2.0
    min_shot_seconds: float = 0.5
    max_shot_seconds: float = 8.0
    cut_threshold: float = 27.0
    crop_size: int = 224
    thumb_width: int = 256

    def validate(self) -> "ReaderSettings":
        """Return self, or raise InputError naming the bad setting and its allowed range."""
        if not is_finite_number(self.sample_fps) or not 0 < self.sample_fps <= MAX_SAMPLE_FPS:
            raise InputError(f"--sample-fps must be above 0 and at most {MAX_SAMPLE_FPS:g} frames per second, got {self.sample_fps}")
        if not is_finite_number(self.max_shot_seconds) or self.max_shot_seconds <= 0:
            raise InputError(f"--max-shot must be a positive number of seconds, got {self.max_shot_seconds}")
        if not is_finite_number(self.min_shot_seconds) or not 0 <= self.min_shot_seconds <= self.max_shot_seconds:
            raise InputError(f"the minimum shot length must be between 0 and --max-shot ({self.max_shot_seconds}) seconds, got {self.min_shot_seconds}")
        if self.sample_fps * self.max_shot_seconds > MAX_SAMPLES_PER_SHOT:
            raise InputError(
                f"--sample-fps {self.sample_fps:g} x --max-shot {self.max_shot_seconds:g} samples {self.sample_fps * self.max_shot_seconds:g} "
                f"frames per shot; keep it at most {MAX_SAMPLES_PER_SHOT} (lower one of them)"
            )
        if not is_finite_number(self.cut_threshold) or self.cut_threshold <= 0:
            raise InputError(f"the cut threshold must be a positive number, got {self.cut_threshold}")
        if self.crop_size < 8 or self.thumb_width < 8:
            raise InputError(f"crop size and thumbnail width must be at least 8 pixels, got {self.crop_size} and {self.thumb_width}")
        return self


@dataclass(frozen=True)
class MotionStats:
    """Cheap motion statistics of a shot, from optical flow on small grayscale frames."""

    motion: float = 0.0
    """Mean flow magnitude over the frame, in frame widths per second."""
    camera: float = 0.0
    """Magnitude of the median flow vector (the whole frame moving: a pan or a shake), frame widths per second."""
    subject: float = 0.0
    """Mean flow left after removing the median (things moving in the frame), frame widths per second."""

    @property
    def camera_ratio(self) -> float:
        """Share of the motion that is the camera's (0 = subject only, 1 = camera only)."""
        return self.camera / (self.camera + self.subject) if self.camera + self.subject > 1e-9 else 0.0

    @property
    def label(self) -> str:
        """still, slow or fast."""
        return motion_class(self.motion)


def motion_class(motion: float) -> str:
    """The still/slow/fast class of a mean flow magnitude (frame widths per second)."""
    return "still" if motion < STILL_BELOW else "slow" if motion < FAST_FROM else "fast"


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
    motion: MotionStats = MotionStats()

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


def _flow_stats(previous: np.ndarray, current: np.ndarray, seconds: float) -> tuple[float, float, float]:
    """(mean, camera, subject) flow between two small gray frames `seconds` apart, in frame widths per second."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 2, 9, 2, 5, 1.1, 0)
    scale = 1.0 / (seconds * previous.shape[1])
    median = np.median(flow.reshape(-1, 2), axis=0)
    mean = float(np.linalg.norm(flow, axis=2).mean()) * scale
    subject = float(np.linalg.norm(flow - median, axis=2).mean()) * scale
    return mean, float(np.linalg.norm(median)) * scale, subject


@dataclass
class _Sample:
    time: float
    scaled: np.ndarray
    """The whole frame scaled so its short side is the crop size (the crop and the thumbnail come from it)."""
    flow: Optional[tuple[float, float, float]] = None
    """(mean, camera, subject) flow from the frame before, when there is one."""
    flow_from: float = 0.0
    """Time of that frame before: a flow from before the shot's start measures a cut, not motion."""


def iter_shots(
    path: str | os.PathLike[str],
    settings: ReaderSettings = ReaderSettings(),
    info: Optional[VideoInfo] = None,
    stop: Optional[Callable[[], bool]] = None,
) -> Iterator[SampledShot]:
    """Yield the shots of one video with their sampled frames and motion, each as soon as its end is known.

    Memory is bounded by the shot limit, whatever the video's length: a span without cuts is split and
    flushed once it reaches twice `max_shot_seconds`; no decoded frame is kept past its own step.
    `stop()` is asked at every frame: when it says so, the generator ends quietly mid-file.
    """
    import cv2
    from scenedetect import ContentDetector
    from scenedetect.common import FrameTimecode

    settings.validate()
    info = info or probe(path)
    fps = info.fps
    detector = ContentDetector(threshold=settings.cut_threshold, min_scene_len=max(1, int(settings.min_shot_seconds * fps)))
    crop_wh = _crop_size_for(info.width, info.height, settings.crop_size)
    step = 1.0 / settings.sample_fps
    max_len = settings.max_shot_seconds

    frame_times: list[float] = []
    samples: list[_Sample] = []
    shot_start = 0.0
    next_sample = 0.0
    emitted = False
    previous_gray: Optional[np.ndarray] = None

    def make_shot(part_start: float, part_end: float, part: list[_Sample]) -> SampledShot:
        middle = part[len(part) // 2].scaled
        thumb_h = max(2, round(settings.thumb_width * middle.shape[0] / middle.shape[1]))
        thumbnail = cv2.resize(middle, (settings.thumb_width, thumb_h), interpolation=cv2.INTER_AREA)
        flows = [s.flow for s in part if s.flow is not None and s.flow_from >= part_start - 1e-6]
        motion = MotionStats(*(float(np.mean(v)) for v in zip(*flows))) if flows else MotionStats()
        return SampledShot(part_start, part_end, [_center(s.scaled, settings.crop_size) for s in part], thumbnail, motion=motion)

    def take(end: float) -> list[_Sample]:
        nonlocal samples
        mine = [s for s in samples if s.time < end]
        samples = [s for s in samples if s.time >= end]
        return mine

    def close_shot(end: float, last: bool = False) -> Iterator[SampledShot]:
        nonlocal shot_start, emitted
        if end <= shot_start:
            return
        mine = take(end)
        for part_start, part_end in _split_long(shot_start, end, max_len):
            part = [s for s in mine if part_start <= s.time < part_end]
            # Slivers between cuts are useless as motion; a video that is one short shot is still kept.
            if part and (part_end - part_start >= settings.min_shot_seconds or (last and not emitted)):
                emitted = True
                yield make_shot(part_start, part_end, part)
        shot_start = end

    def _cut_at(number: int) -> Iterator[SampledShot]:
        """End the shot at a cut first seen on decoded frame `number`.

        Skimming skips non-reference frames, so the cut lies somewhere after the decoded frame before it:
        the old shot ends one frame after that one, the new shot starts at `number`, and the skipped frame
        or two between them belong to neither (no shot holds a flash of its neighbour).
        """
        nonlocal shot_start
        at = min(bisect.bisect_left(frame_numbers, number), len(frame_numbers) - 1)
        before = frame_times[at - 1] + 1.0 / fps if at > 0 else frame_times[at]
        yield from close_shot(max(min(before, frame_times[at]), shot_start))
        shot_start = max(frame_times[at], shot_start)

    def flush_long(now: float) -> Iterator[SampledShot]:
        """Emit full-length parts of a cut-free span as soon as it holds two of them (bounded memory)."""
        nonlocal shot_start, emitted
        while now - shot_start >= 2 * max_len:
            part_end = shot_start + max_len
            part = take(part_end)
            if part:
                emitted = True
                yield make_shot(shot_start, part_end, part)
            shot_start = part_end

    first_size = None
    frame_numbers: list[int] = []
    # One decoder thread: the reader runs beside the embedder, and frame threading costs extra CPU.
    # Decoding is most of the reader's CPU, and frames are only seen small here: skim (reference frames only).
    for t, frame in iter_av_frames(path, threaded=False, skim=True):
        if stop is not None and stop():
            return
        size = (frame.width, frame.height)
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise InputError(
                f"{Path(path).name} changes resolution mid-stream ({first_size[0]}x{first_size[1]} -> {size[0]}x{size[1]}); "
                "re-encode it to one frame size to index it"
            )
        number = max(round(t * fps), frame_numbers[-1] + 1 if frame_numbers else 0)
        frame_times.append(t)
        frame_numbers.append(number)
        small = _detection_image(frame, DETECT_WIDTH)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        for cut in detector.process_frame(FrameTimecode(number, fps=fps), small):
            yield from _cut_at(cut.frame_num)
        yield from flush_long(t)
        if t + 1e-6 >= next_sample:
            # Flow from the decoded frame before: the sample's own motion, known at once.
            flow = (_flow_stats(previous_gray, gray, t - frame_times[-2])
                    if previous_gray is not None and previous_gray.shape == gray.shape and t > frame_times[-2] else None)
            samples.append(_Sample(t, frame_to_rgb(frame, crop_wh), flow, frame_times[-2] if flow else 0.0))
            next_sample = t + step
        previous_gray = gray
    if not frame_times:
        raise InputError(f"{Path(path).name} has no decodable video frames")
    yield from close_shot(frame_times[-1] + 1.0 / fps, last=True)
