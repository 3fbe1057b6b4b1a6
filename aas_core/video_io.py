"""Video decoding and encoding with PyAV: probing, timed frame sampling, rotation, H.264 output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path

if TYPE_CHECKING:
    import av

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"}
)
MAX_SIDE = 8192
"""Largest frame side we accept: beyond it a frame alone would not fit in memory sensibly."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as displayed (rotation applied to width/height)."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int
    codec: str
    pix_fmt: str
    has_audio: bool


def _open(path: str | os.PathLike[str]):
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path.name} is not a readable video ({exc}); convert it to mp4 (H.264) and retry") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path.name} has no video stream (audio-only or not a video); choose a video file")
    return container


def _quarter_turns(frame) -> int:
    return int(round(getattr(frame, "rotation", 0) / 90.0)) % 4


def frame_to_rgb(frame, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """PyAV frame -> HxWx3 uint8 RGB as displayed (rotation applied); `size` (w, h) is the displayed size."""
    quarter_turns = _quarter_turns(frame)
    if size is not None and quarter_turns % 2 == 1:
        size = (size[1], size[0])
    if size is not None:
        array = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    else:
        array = frame.to_ndarray(format="rgb24")
    if quarter_turns:
        array = np.ascontiguousarray(np.rot90(array, k=quarter_turns))
    return array


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's header and first frame; InputError if it is not a usable video."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError) as exc:
            raise InputError(f"{Path(path).name} has no decodable video frames; the file may be truncated or corrupt") from exc
        turns = _quarter_turns(first)
        width, height = (first.height, first.width) if turns % 2 else (first.width, first.height)
        if width <= 0 or height <= 0:
            raise InputError(f"{Path(path).name} reports an empty frame size")
        if max(width, height) > MAX_SIDE:
            raise InputError(f"{Path(path).name} is {width}x{height}; frames larger than {MAX_SIDE}px are not supported, downscale it first")
        if fps <= 0:
            fps = 25.0
        frame_count = stream.frames or int(round(duration * fps))
        if duration <= 0 and frame_count:
            duration = frame_count / fps
        return VideoInfo(
            path=str(path),
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            duration=duration,
            rotation=turns * 90,
            codec=stream.codec_context.name,
            pix_fmt=str(stream.codec_context.pix_fmt),
            has_audio=bool(container.streams.audio),
        )
    finally:
        container.close()


def iter_av_frames(
    path: str | os.PathLike[str], start: float = 0.0, threaded: bool = True, skim: bool = False
) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Decode frames from `start` on as (time in seconds, PyAV frame); stops quietly at a truncated tail.

    `threaded=False` decodes on one thread: less total CPU, for callers that run beside other busy threads.
    `skim=True` decodes only reference frames and skips the deblocking filter: on H.264 with B-frames about
    half the frames and half the CPU. For frames only seen small and in passing (cut detection, CLIP crops,
    thumbnails); frame times then have gaps of a frame or two.
    """
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        if threaded:
            stream.thread_type = "AUTO"
        if skim:
            stream.codec_context.skip_frame = "NONREF"
            stream.codec_context.options = {"skip_loop_filter": "all"}
        if start > 0:
            # Seek lands on the keyframe before `start`; earlier frames are skipped below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t >= start - 1e-6:
                    yield t, frame
        except av.error.InvalidDataError:
            # A truncated tail: keep what decoded; callers check they got enough frames.
            return
    finally:
        container.close()


@dataclass
class DecodedFrame:
    """One decoded frame: its presentation time in seconds and RGB pixels as displayed."""

    time: float
    rgb: np.ndarray


def iter_frames(
    path: str | os.PathLike[str],
    start: float = 0.0,
    end: Optional[float] = None,
    size: Optional[tuple[int, int]] = None,
) -> Iterator[DecodedFrame]:
    """Decode every frame whose time lies in [start, end), optionally resized to `size` (w, h)."""
    for t, frame in iter_av_frames(path, start):
        if end is not None and t >= end - 1e-6:
            break
        yield DecodedFrame(time=t, rgb=frame_to_rgb(frame, size))


def sample_frames(
    path: str | os.PathLike[str],
    times: Sequence[float],
    size: Optional[tuple[int, int]] = None,
) -> list[DecodedFrame]:
    """The frame shown at each requested time (nearest earlier frame), in one sequential pass.

    Only picked frames are converted to RGB, so sampling a few frames of a long 4K span stays cheap.
    """
    if not times:
        return []
    order = sorted(range(len(times)), key=lambda i: times[i])
    wanted = [times[i] for i in order]
    picked: list[Optional[DecodedFrame]] = [None] * len(times)
    converted: dict[int, DecodedFrame] = {}

    def convert(index: int, t: float, frame) -> DecodedFrame:
        if index not in converted:
            converted[index] = DecodedFrame(time=t, rgb=frame_to_rgb(frame, size))
        return converted[index]

    cursor = 0
    previous = None
    for index, (t, frame) in enumerate(iter_av_frames(path, start=max(0.0, wanted[0] - 1.0))):
        while cursor < len(wanted) and t > wanted[cursor] + 1e-6:
            picked[order[cursor]] = convert(*(previous or (index, t, frame)))
            cursor += 1
        if cursor >= len(wanted):
            break
        previous = (index, t, frame)
    while cursor < len(wanted) and previous is not None:
        picked[order[cursor]] = convert(*previous)
        cursor += 1
    if any(p is None for p in picked):
        raise InputError(f"{Path(path).name}: no frames could be decoded at the requested times")
    return [p for p in picked if p is not None]


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float,
    crf: int = 18,
) -> Path:
    """Encode RGB uint8 frames as H.264 yuv420p mp4 with faststart (plays in browsers); atomic."""
    import av

    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise InputError("cannot write a video with no frames")
    height, width = frames[0].shape[:2]
    # yuv420p needs even sides; crop one pixel rather than rescale.
    even_h, even_w = height - height % 2, width - width % 2
    if even_h == 0 or even_w == 0:
        raise InputError(f"frames of {width}x{height} are too small to encode")
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = even_w, even_h
            stream.pix_fmt = "yuv420p"
            # One encoder thread: x264's thread count follows the CPUs it sees, and frame threads change the
            # bitstream, so the same frames (same seed) give a bit-identical file on any machine and under load.
            stream.codec_context.thread_count = 1
            stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
            for array in frames:
                if array.dtype != np.uint8:
                    array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
                if array.ndim == 2:
                    array = np.repeat(array[:, :, None], 3, axis=2)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array[:even_h, :even_w, :3]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return path
