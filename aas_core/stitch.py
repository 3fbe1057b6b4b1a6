"""Story assembly with moviepy 2.x: shots at one fps and size, transitions, captions, title, music.

Also the storyboard contact sheet (PNG) and the per-shot "source | depth | generated" comparison video.
Text is drawn with Pillow (one code path for captions, title card, sheet and labels) in DejaVu Sans
when the system has it, else Pillow's built-in scalable font, so no font download is ever needed.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional, Sequence

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path
from aas_core.limits import MAX_CAPTION_CHARS, MAX_TITLE_CHARS, check_text, is_finite_number
from aas_core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:
    from PIL import ImageFont

Transition = Literal["cut", "crossfade", "fade_black"]
TRANSITIONS: tuple[str, ...] = ("cut", "crossfade", "fade_black")

FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",  # Debian/Ubuntu fonts-dejavu-core
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",  # Arch
    "/Library/Fonts/DejaVuSans-Bold.ttf",
)
"""Where DejaVu Sans Bold (Bitstream Vera licence, free to use and ship) usually lives; `$AAS_FONT` wins."""

X264_PARAMS: tuple[str, ...] = ("-pix_fmt", "yuv420p", "-movflags", "+faststart")
MUSIC_LOOP_CROSSFADE = 1.0
"""Seconds each pass of a looping music track crossfades into the next (at most a quarter of the track)."""
MAX_MUSIC_PASSES = 500


@dataclass
class StitchShot:
    """One shot to assemble: its video file, caption, and the transition into the next shot."""

    path: str
    caption: str = ""
    transition: Transition = "cut"
    transition_duration: float = 0.5


@dataclass
class StitchSettings:
    """Output settings of one assembly."""

    fps: float = 8.0
    size: Optional[tuple[int, int]] = None
    """(width, height); None = the first shot's size. Shots of another shape are letterboxed."""
    title: str = ""
    title_duration: float = 2.0
    captions: bool = True
    font_size: int = 0
    """Caption text height in pixels; 0 = 1/14 of the frame height."""
    music: Optional[str] = None
    music_start: float = 0.0
    music_volume: float = 1.0
    music_fade_out: float = 2.0
    crf: int = 18
    preset: str = "medium"


@dataclass
class StitchResult:
    """The assembled video and where each shot sits in it."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    segments: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) seconds of each shot in the output, title card excluded."""
    has_audio: bool = False


def font(size: int) -> "ImageFont.FreeTypeFont":
    """A scalable font: $AAS_FONT, else DejaVu Sans Bold, else Pillow's bundled font (offline always)."""
    from PIL import ImageFont

    for candidate in (os.environ.get("AAS_FONT"), *FONT_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def render_text(
    text: str,
    width: int,
    size: int,
    colour: tuple[int, int, int] = (255, 255, 255),
    stroke: int = -1,
    align: Literal["left", "center"] = "center",
    max_lines: int = 3,
) -> np.ndarray:
    """Text wrapped to `width` pixels as an (h, width, 4) uint8 RGBA image, outlined in black.

    At most `max_lines` lines are drawn (the last ends in an ellipsis when text is cut), so the image
    stays a caption's size whatever the text's length.
    """
    from PIL import Image, ImageDraw

    face = font(size)
    stroke = max(1, size // 12) if stroke < 0 else stroke
    avg = max(face.getlength("abcdefghijklmnopqrstuvwxyz") / 26, 1.0)
    chars = max(int((width - 2 * stroke - 4) / avg), 1)
    max_lines = max(1, max_lines)
    # Only what can be drawn is wrapped: the wrapping work stays bounded too.
    kept = text[: (chars + 1) * max_lines + 1]
    lines = [ln for para in kept.splitlines() for ln in (textwrap.wrap(para, chars) or [""])]
    if len(lines) > max_lines or len(kept) < len(text):
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(chars - 1, 0)].rstrip() + "\u2026"
    wrapped = "\n".join(lines)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    box = probe.multiline_textbbox((0, 0), wrapped, font=face, stroke_width=stroke, align=align)
    height = box[3] - min(box[1], 0) + 2 * stroke + 2
    image = Image.new("RGBA", (width, max(height, 1)), (0, 0, 0, 0))
    x = width / 2 if align == "center" else stroke + 2
    ImageDraw.Draw(image).multiline_text(
        (x, stroke + 1 - min(box[1], 0)),
        wrapped,
        font=face,
        fill=(*colour, 255),
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 255),
        anchor="ma" if align == "center" else "la",
        align=align,
    )
    return np.asarray(image)


def overlap(a: StitchShot, dur_a: float, dur_b: float) -> float:
    """Seconds shot `a` and the next one overlap: the crossfade length, bounded by half of either shot."""
    if a.transition != "crossfade":
        return 0.0
    return max(0.0, min(a.transition_duration, dur_a / 2, dur_b / 2))


def _fade(a: StitchShot, dur_a: float, dur_b: float) -> float:
    """Fade-through-black half length (out of `a`, then into the next), bounded by half of either shot."""
    if a.transition != "fade_black":
        return 0.0
    return max(0.0, min(a.transition_duration / 2, dur_a / 2, dur_b / 2))


def timeline(shots: Sequence[StitchShot], durations: Sequence[float], title_duration: float = 0.0) -> tuple[list[float], float]:
    """Start time of each shot and the total duration: sum of shots (+ title) minus crossfade overlaps."""
    starts, t = [], title_duration
    for i, dur in enumerate(durations):
        if i > 0:
            t -= overlap(shots[i - 1], durations[i - 1], dur)
        starts.append(t)
        t += dur
    return starts, t


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size rounded down to even sides (yuv420p needs them)."""
    if width < 2 or height < 2:
        raise InputError(f"a {width}x{height} frame is too small to encode")
    return width - width % 2, height - height % 2


def _logger(on_progress: Optional[ProgressFn], cancel: Optional[CancelToken], total_frames: int):
    """A proglog logger forwarding moviepy's frame bar to a ProgressFn and honouring a CancelToken."""
    from proglog import ProgressBarLogger

    class Logger(ProgressBarLogger):
        def bars_callback(self, bar, attr, value, old_value=None):  # noqa: ANN001 - proglog's signature
            if cancel is not None:
                cancel.check()
            if bar == "frame_index" and attr == "index":
                report(on_progress, 0.1 + 0.9 * value / max(total_frames, 1), f"encoding frame {value}/{total_frames}")

    return Logger()


class _ShotFrames:
    """Shot videos decoded in-process with PyAV on first use; at most two shots (a crossfade) stay in memory.

    moviepy's VideoFileClip runs one ffmpeg reader process per shot and pays a pipe round trip per
    frame; generated shots are short, so decoding a whole shot at once is faster and stays small.
    Letterboxing and the caption are applied here too, with one small alpha blend per frame,
    instead of a moviepy composite (which alpha-composites the whole frame through Pillow).
    """

    def __init__(self, paths: Sequence[str], size: Optional[tuple[int, int]] = None) -> None:
        from aas_core.video_io import probe

        self.paths = list(paths)
        self.infos = [probe(p) for p in self.paths]
        self.size = even_size(*(size or (self.infos[0].width, self.infos[0].height)))
        self.loaded: dict[int, list[np.ndarray]] = {}
        self.first: dict[int, np.ndarray] = {}

    def _decode(self, index: int, first_only: bool = False) -> list[np.ndarray]:
        from aas_core.video_io import iter_frames

        frames = []
        for decoded in iter_frames(self.paths[index]):
            frames.append(decoded.rgb)
            if first_only:
                break
        if not frames:
            raise InputError(f"shot video {self.paths[index]} has no decodable frames; run the story again to regenerate it")
        return frames

    def frame(self, index: int, t: float) -> np.ndarray:
        """The raw frame of shot `index` at `t` seconds into the shot."""
        k = max(0, int(t * self.infos[index].fps + 1e-6))
        if k == 0 and index not in self.loaded:
            # moviepy asks every clip for frame 0 while building effects: don't decode whole shots for that.
            if index not in self.first:
                self.first[index] = self._decode(index, first_only=True)[0]
            return self.first[index]
        if index not in self.loaded:
            for old in [i for i in self.loaded if abs(i - index) > 1]:
                del self.loaded[old]
            self.loaded[index] = self._decode(index)
        frames = self.loaded[index]
        return frames[min(len(frames) - 1, k)]

    def clip(self, index: int, caption: Optional[np.ndarray] = None, margin: int = 0):
        """A moviepy clip of shot `index` at the output size, with its caption (RGBA) near the bottom."""
        from moviepy import VideoClip

        info, (width, height) = self.infos[index], self.size
        scale = min(width / info.width, height / info.height)
        fit = (max(2, round(info.width * scale)), max(2, round(info.height * scale)))
        offset = ((width - fit[0]) // 2, (height - fit[1]) // 2)

        def frame_at(t: float) -> np.ndarray:
            frame = self.frame(index, t)
            if fit != (frame.shape[1], frame.shape[0]) or offset != (0, 0):
                canvas = np.zeros((height, width, 3), np.uint8)
                canvas[offset[1] : offset[1] + fit[1], offset[0] : offset[0] + fit[0]] = _resize(frame, fit)
                frame = canvas
            elif caption is not None:
                frame = frame.copy()
            if caption is not None:
                _paste(frame, caption, (width - caption.shape[1]) // 2, max(0, height - caption.shape[0] - margin))
            return frame

        # Built without frame_function so moviepy does not ask for frame 0 to learn the size.
        clip = VideoClip(duration=info.duration)
        clip.frame_function, clip.size, clip.fps = frame_at, (width, height), info.fps
        return clip


def check_inputs(shots: Sequence[StitchShot], settings: StitchSettings) -> None:
    """Refuse what `stitch` cannot assemble (no shots, a bad fps or transition, a missing file, text too long)."""
    if not shots:
        raise InputError("nothing to stitch: no finished shots; run the story first")
    if not is_finite_number(settings.fps) or settings.fps <= 0:
        raise InputError(f"fps must be a positive number, got {settings.fps!r}")
    for name in ("title_duration", "music_start", "music_volume", "music_fade_out"):
        if not is_finite_number(getattr(settings, name)) or getattr(settings, name) < 0:
            raise InputError(f"{name} must be a number of 0 or more, got {getattr(settings, name)!r}")
    for i, shot in enumerate(shots):
        if shot.transition not in TRANSITIONS:
            raise InputError(f"unknown transition {shot.transition!r}; choose one of {', '.join(TRANSITIONS)}")
        if not is_finite_number(shot.transition_duration) or shot.transition_duration < 0:
            raise InputError(f"transition duration of shot {i + 1} must be a number of seconds, 0 or more; got {shot.transition_duration!r}")
        if not Path(shot.path).is_file():
            raise InputError(f"shot video {shot.path} is missing; run the story again to regenerate it")
    for i, shot in enumerate(shots):
        check_text(shot.caption, f"caption of shot {i + 1}", MAX_CAPTION_CHARS)
    check_text(settings.title, "title", MAX_TITLE_CHARS)
    if settings.music and not Path(settings.music).is_file():
        raise InputError(f"music file {settings.music} does not exist; check the path")


def stitch(
    shots: Sequence[StitchShot],
    out_path: str | os.PathLike[str],
    settings: Optional[StitchSettings] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StitchResult:
    """Assemble shot videos into one H.264 yuv420p +faststart mp4 (atomic write)."""
    from moviepy import CompositeVideoClip

    settings = settings or StitchSettings()
    # 1. Check inputs before anything is opened.
    check_inputs(shots, settings)
    # 2. Open the shots and place them on the timeline.
    report(on_progress, 0.0, "opening shots")
    shot_frames = _ShotFrames([s.path for s in shots], settings.size)
    size = shot_frames.size
    durations = [info.duration for info in shot_frames.infos]
    title_duration = settings.title_duration if settings.title else 0.0
    starts, total = timeline(shots, durations, title_duration)
    opened: list = []
    try:
        # 3. The layers: title card, then each shot with its caption and transitions.
        layers = [_title_card(settings.title, size, title_duration)] if settings.title else []
        layers += _shot_layers(shots, shot_frames, durations, starts, settings)
        final = CompositeVideoClip(layers, size=size, bg_color=(0, 0, 0)).with_duration(total)
        final.mask = None
        # 4. Music under the whole video.
        if settings.music:
            final = final.with_audio(_music_track(settings, total, opened))
        # 5. Encode (atomic write).
        out_path = Path(out_path)
        _encode(final, out_path, settings, int(round(total * settings.fps)), on_progress, cancel)
    finally:
        for clip in opened:
            clip.close()
    report(on_progress, 1.0, "stitched")
    return StitchResult(
        path=str(out_path),
        duration=total,
        fps=settings.fps,
        width=size[0],
        height=size[1],
        segments=[(s, s + d) for s, d in zip(starts, durations)],
        has_audio=bool(settings.music),
    )


def _title_card(title: str, size: tuple[int, int], duration: float):  # noqa: ANN202 - a moviepy clip
    """The title on black, fading in and out."""
    from moviepy import CompositeVideoClip, ImageClip, vfx

    text = render_text(title, int(size[0] * 0.9), max(12, size[1] // 9))
    card = CompositeVideoClip(
        [ImageClip(text, duration=duration).with_position("center")], size=size, bg_color=(0, 0, 0)
    ).with_duration(duration)
    return card.with_effects([vfx.FadeIn(duration / 4), vfx.FadeOut(duration / 4)])


def _shot_layers(shots: Sequence[StitchShot], shot_frames: _ShotFrames, durations: Sequence[float], starts: Sequence[float],
                 settings: StitchSettings) -> list:
    """Each shot as moviepy layers at its start: caption, fades through black, crossfades into the previous shot."""
    from moviepy import vfx

    size = shot_frames.size
    font_size = settings.font_size or max(10, size[1] // 14)
    layers = []
    for i, shot in enumerate(shots):
        caption = None
        if settings.captions and shot.caption.strip():
            caption = render_text(shot.caption, int(size[0] * 0.92), font_size)
        layer = shot_frames.clip(i, caption, margin=size[1] // 24)
        if i + 1 < len(shots):
            fade_out = _fade(shot, durations[i], durations[i + 1])
            if fade_out > 0:
                layer = layer.with_effects([vfx.FadeOut(fade_out)])
        if i > 0:
            fade_in = _fade(shots[i - 1], durations[i - 1], durations[i])
            if fade_in > 0:
                layer = layer.with_effects([vfx.FadeIn(fade_in)])
            cross = overlap(shots[i - 1], durations[i - 1], durations[i])
            if cross > 0:
                # Only the overlapping head needs a mask; masked layers are composited far more slowly.
                layers.append(layer.subclipped(0, cross).with_effects([vfx.CrossFadeIn(cross)]).with_start(starts[i]))
                layers.append(layer.subclipped(cross).with_start(starts[i] + cross))
                continue
        layers.append(layer.with_start(starts[i]))
    return layers


def _music_track(settings: StitchSettings, total: float, opened: list):  # noqa: ANN202 - a moviepy AudioClip
    """The music, looped or trimmed to `total` seconds, at its volume, faded out; the opened file goes into `opened`."""
    from moviepy import AudioFileClip, afx

    try:
        music = AudioFileClip(str(settings.music))
    except (OSError, KeyError, IndexError) as exc:
        raise InputError(f"cannot read music {settings.music} ({exc}); use an mp3, wav, m4a or ogg file") from exc
    opened.append(music)
    music = _looped_music(music, settings.music_start, total)
    return music.with_effects(
        [afx.MultiplyVolume(settings.music_volume), afx.AudioFadeOut(min(settings.music_fade_out, music.duration))]
    )


def _encode(final, out_path: Path, settings: StitchSettings, frames: int, on_progress: Optional[ProgressFn],  # noqa: ANN001 - a moviepy clip
            cancel: Optional[CancelToken]) -> None:
    """Write the composite to `out_path` as H.264 (+ AAC music) through a temporary file."""
    # moviepy leaves its temporary audio file behind when writing fails (or is cancelled): give it a scratch folder.
    with atomic_path(out_path, suffix=".mp4") as tmp, tempfile.TemporaryDirectory(prefix=".stitch-", dir=out_path.parent) as scratch:
        final.write_videofile(
            str(tmp),
            fps=settings.fps,
            codec="libx264",
            preset=settings.preset,
            audio=bool(settings.music),
            audio_codec="aac",
            temp_audiofile=str(Path(scratch) / "audio.m4a"),
            ffmpeg_params=["-crf", str(settings.crf), *X264_PARAMS],
            logger=_logger(on_progress, cancel, frames),
        )


@dataclass(frozen=True)
class MusicPass:
    """One pass through the music file on the story's timeline."""

    source_start: float
    source_end: float
    at: float
    """Where the pass starts in the story (seconds)."""
    fade_in: float
    """Crossfade with the previous pass (0 for the first)."""


def music_passes(length: float, start: float, total: float, crossfade: float = MUSIC_LOOP_CROSSFADE) -> list[MusicPass]:
    """How music of `length` seconds, from `start`, covers `total` seconds: looped from its beginning, crossfaded."""
    start = min(max(start, 0.0), max(length - 0.1, 0.0))
    fade = min(crossfade, length / 4)
    passes = [MusicPass(start, min(length, start + total), 0.0, 0.0)]
    while passes[-1].at + passes[-1].source_end - passes[-1].source_start < total - 1e-6:
        if len(passes) >= MAX_MUSIC_PASSES:
            raise InputError(f"the music ({length:.2f} s) is too short to loop under a {total:.1f} s story; use a longer track")
        last = passes[-1]
        at = last.at + (last.source_end - last.source_start) - fade
        passes.append(MusicPass(0.0, min(length, total - at), at, fade))
    return passes


def _looped_music(music, start: float, total: float):  # noqa: ANN001, ANN202 - moviepy AudioClip in and out
    """The music trimmed to `total` seconds, looping with crossfades when it is shorter."""
    from moviepy import CompositeAudioClip, afx

    passes = music_passes(music.duration, start, total)
    if len(passes) == 1:
        return music.subclipped(passes[0].source_start, passes[0].source_end)
    parts = []
    for i, p in enumerate(passes):
        effects = [afx.AudioFadeIn(p.fade_in)] if p.fade_in > 0 else []
        if i + 1 < len(passes):
            effects.append(afx.AudioFadeOut(passes[i + 1].fade_in))
        parts.append(music.subclipped(p.source_start, p.source_end).with_effects(effects).with_start(p.at))
    return CompositeAudioClip(parts).with_duration(total)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _paste(canvas: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend an RGBA image onto an RGB canvas in place (clipped to the canvas)."""
    h = min(rgba.shape[0], canvas.shape[0] - y)
    w = min(rgba.shape[1], canvas.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    alpha = rgba[:h, :w, 3:4].astype(np.float32) / 255.0
    region = canvas[y : y + h, x : x + w].astype(np.float32)
    canvas[y : y + h, x : x + w] = (rgba[:h, :w, :3] * alpha + region * (1 - alpha)).astype(np.uint8)


@dataclass
class StoryboardRow:
    """One shot on the contact sheet: a label, a caption and a few of its frames."""

    label: str
    caption: str
    frames: list[np.ndarray]


def contact_sheet(rows: Sequence[StoryboardRow], out_path: str | os.PathLike[str], thumb_height: int = 128) -> Path:
    """A storyboard PNG: one row per shot (label + caption above its frames), written atomically."""
    from PIL import Image

    if not rows:
        raise InputError("nothing to put on a storyboard: no finished shots")
    pad = 8
    cols = max(len(r.frames) for r in rows)
    aspect = rows[0].frames[0].shape[1] / rows[0].frames[0].shape[0]
    thumb = (max(8, round(thumb_height * aspect)), thumb_height)
    width = pad + cols * (thumb[0] + pad)
    text_size = max(10, thumb_height // 9)
    blocks = []
    for row in rows:
        text = render_text(f"{row.label}  {row.caption}".strip(), width - 2 * pad, text_size, stroke=0, align="left")
        block = np.full((text.shape[0] + thumb[1] + 2 * pad, width, 3), 24, np.uint8)
        _paste(block, text, pad, pad // 2)
        for j, frame in enumerate(row.frames):
            x, y = pad + j * (thumb[0] + pad), text.shape[0] + pad
            block[y : y + thumb[1], x : x + thumb[0]] = _resize(np.asarray(frame)[..., :3], thumb)
        blocks.append(block)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".png") as tmp:
        Image.fromarray(np.concatenate(blocks)).save(tmp, format="PNG")
    return out_path


def comparison_frames(
    source: np.ndarray,
    depth: np.ndarray,
    generated: np.ndarray,
    labels: tuple[str, str, str] = ("source", "depth", "generated"),
) -> np.ndarray:
    """(T, H, 3W, 3) uint8 side by side "source | depth | generated", labelled, at the generated size and length."""
    generated = np.asarray(generated)
    t_out, h, w = generated.shape[:3]
    depth = np.asarray(depth)
    if depth.dtype != np.uint8:
        depth = np.clip(np.round(depth * 255.0), 0, 255).astype(np.uint8)
    if depth.ndim == 3:
        depth = np.repeat(depth[..., None], 3, axis=3)
    panels = [np.asarray(source), depth, generated]
    tags = [render_text(label, w, max(10, h // 14)) for label in labels]
    out = np.empty((t_out, h, 3 * w, 3), np.uint8)
    for t in range(t_out):
        for k, panel in enumerate(panels):
            # Nearest frame in time: sources may be sampled at another length than the shot.
            frame = panel[min(len(panel) - 1, round(t * len(panel) / t_out))]
            tile = _resize(np.ascontiguousarray(frame[..., :3]), (w, h)).copy()
            _paste(tile, tags[k], 0, 2)
            out[t, :, k * w : (k + 1) * w] = tile
    return out


def comparison_video(
    source: np.ndarray,
    depth: np.ndarray,
    generated: np.ndarray,
    out_path: str | os.PathLike[str],
    fps: float,
) -> Path:
    """Write the "source | depth | generated" comparison mp4 of one shot."""
    from aas_core.video_io import write_video

    return write_video(out_path, comparison_frames(source, depth, generated), fps)
