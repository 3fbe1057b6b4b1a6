"""Export a story run to an editor: the stitched timeline as OpenTimelineIO (.otio), Final Cut Pro XML or a CMX 3600 EDL.

The timeline is the one `stitch` renders: title card, then each finished shot's chosen take in order,
crossfades as dissolves (cut points in the middle of the overlap, so the length matches story.mp4),
captions as markers (and `story.srt`), music on an audio track looped as `stitch` loops it.
Clips reference the run folder's own files, so DaVinci Resolve, Premiere or Kdenlive relink nothing.
Every time is counted in whole frames of an edit rate that editors and SMPTE timecode accept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, get_args

from aas_core.errors import InputError

if TYPE_CHECKING:
    import opentimelineio as otio

ExportFormat = Literal["otio", "fcpxml", "edl"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
ADAPTERS: dict[str, str] = {"otio": "otio_json", "fcpxml": "fcpx_xml", "edl": "cmx_3600"}
"""OpenTimelineIO adapter of each format (fcpx_xml and cmx_3600 come from the otio-*-adapter packages)."""
SUFFIXES: dict[str, str] = {"otio": ".otio", "fcpxml": ".fcpxml", "edl": ".edl"}
EDIT_RATES: tuple[int, ...] = (24, 25, 30, 48, 50, 60)
"""Frame rates SMPTE timecode (EDL) and editors take; a story's fps is carried on the first that it divides."""
TITLE_CARD = "title_card.mp4"
SRT_NAME = "story.srt"


@dataclass
class ExportResult:
    """What an export wrote."""

    path: str
    format: str
    srt: Optional[str]
    duration: float
    """Timeline length in seconds (equal to story.mp4's, to a frame of the edit rate)."""
    rate: int
    shots: int
    title_card: Optional[str] = None
    music: Optional[str] = None
    warnings: list[str] = field(default_factory=list)


def edit_rate(fps: float) -> int:
    """The first standard rate that is a whole multiple of the story's fps (24 when none is)."""
    for rate in EDIT_RATES:
        if abs(rate / fps - round(rate / fps)) < 1e-6:
            return rate
    return EDIT_RATES[0]


@dataclass
class _Piece:
    """One shot on the timeline, in frames of the edit rate."""

    id: str
    path: str
    caption: str
    length: int
    """Frames of the whole take."""
    head: int = 0
    """Frames trimmed at the start (half of the crossfade from the previous shot)."""
    tail: int = 0
    at: int = 0
    """Where the shot's first frame sits in the story, untrimmed."""
    transition_in: int = 0
    """Crossfade frames shared with the previous shot."""
    fade_black: float = 0.0


def _pieces(data: dict[str, Any], rate: int, title_frames: int) -> list[_Piece]:
    """The finished shots with their lengths and crossfade trims, timed exactly as `stitch.timeline` times them."""
    from aas_core.stitch import StitchShot, overlap, timeline
    from aas_core.video_io import probe

    ready = [s for s in data["shots"] if s.get("status") in ("generated", "cached") and s.get("video") and Path(s["video"]).is_file()]
    if not ready:
        raise InputError("the run has no finished shot to export; run the story first: python -m aas_core story run FILE")
    shots = [StitchShot(s["video"], s.get("caption", ""), s.get("transition", "cut"), float(s.get("transition_duration", 0.0))) for s in ready]
    durations = [probe(s["video"]).duration for s in ready]
    starts, _ = timeline(shots, durations, title_frames / rate)
    pieces: list[_Piece] = []
    for i, (shot, dur, start) in enumerate(zip(ready, durations, starts)):
        piece = _Piece(shot["id"], str(Path(shot["video"]).absolute()), shot.get("caption", ""), round(dur * rate), at=round(start * rate))
        if shot.get("transition") == "fade_black" and i + 1 < len(ready):
            piece.fade_black = float(shot.get("transition_duration", 0.0))
        if i > 0:
            cross = round(overlap(shots[i - 1], durations[i - 1], dur) * rate)
            pieces[-1].tail, piece.head, piece.transition_in = cross - cross // 2, cross // 2, cross
        pieces.append(piece)
    return pieces


def _title_card(out_dir: Path, title: str, seconds: float, fps: float, first_take: str) -> Path:
    """The title card as a short video (white text on black, the takes' size), so editors show it like any clip."""
    import numpy as np

    from aas_core.stitch import even_size, render_text
    from aas_core.video_io import probe, write_video

    info = probe(first_take)
    width, height = even_size(info.width, info.height)
    frame = np.zeros((height, width, 3), np.uint8)
    text = render_text(title, int(width * 0.9), max(12, height // 9))[:height]
    x, y = (width - text.shape[1]) // 2, max(0, (height - text.shape[0]) // 2)
    # On black, alpha blending is just premultiplying the text.
    frame[y : y + text.shape[0], x : x + text.shape[1]] = (text[..., :3] * (text[..., 3:] / 255.0)).astype(np.uint8)
    return write_video(out_dir / TITLE_CARD, [frame] * max(1, round(seconds * fps)), fps)


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt_text(pieces: list[_Piece], rate: int) -> str:
    """SubRip captions: each shot's caption while it is on screen (until the next shot's cut point)."""
    blocks, n = [], 0
    for i, piece in enumerate(pieces):
        if not piece.caption.strip():
            continue
        start = piece.at + piece.head
        end = pieces[i + 1].at + pieces[i + 1].head if i + 1 < len(pieces) else piece.at + piece.length
        n += 1
        blocks.append(f"{n}\n{_srt_time(start / rate)} --> {_srt_time(end / rate)}\n{piece.caption.strip()}\n")
    return "\n".join(blocks)


def build_timeline(run_dir: str | os.PathLike[str], with_title_file: bool = True) -> tuple["otio.schema.Timeline", dict[str, Any]]:
    """The run's stitched timeline as an OpenTimelineIO Timeline, and facts about it (rate, pieces, files)."""
    import opentimelineio as otio

    from aas_core.stitch import music_passes
    from aas_core.story import read_run

    out = Path(run_dir).absolute()
    data = read_run(out)
    fps, output = float(data["fps"]), data.get("output", {})
    rate = edit_rate(fps)
    title = data.get("title", "") if output.get("title_card", True) else ""
    title_frames = round(float(output.get("title_duration", 2.0)) * rate) if title else 0
    pieces = _pieces(data, rate, title_frames)

    def t(frames: int) -> "otio.opentime.RationalTime":
        return otio.opentime.RationalTime(frames, rate)

    def span(start: int, length: int) -> "otio.opentime.TimeRange":
        return otio.opentime.TimeRange(t(start), t(length))

    timeline = otio.schema.Timeline(name=title or out.name)
    timeline.global_start_time = t(0)
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(video)
    facts: dict[str, Any] = {"rate": rate, "pieces": pieces, "title_card": None, "music": None}
    # 1. Title card.
    if title:
        card = _title_card(out, title, title_frames / rate, fps, pieces[0].path) if with_title_file else out / TITLE_CARD
        facts["title_card"] = str(card)
        ref = otio.schema.ExternalReference(target_url=str(card), available_range=span(0, title_frames))
        video.append(otio.schema.Clip(name=f"Title: {title}", media_reference=ref, source_range=span(0, title_frames),
                                      metadata={"aas": {"kind": "title", "text": title}}))
    # 2. Shots, crossfades as dissolves centred on the overlap.
    for piece in pieces:
        if piece.transition_in:
            video.append(otio.schema.Transition(
                name="Cross Dissolve", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=t(piece.transition_in // 2), out_offset=t(piece.transition_in - piece.transition_in // 2),
            ))
        ref = otio.schema.ExternalReference(target_url=piece.path, available_range=span(0, piece.length))
        clip = otio.schema.Clip(name=piece.id, media_reference=ref, source_range=span(piece.head, piece.length - piece.head - piece.tail),
                                metadata={"aas": {"shot": piece.id, "caption": piece.caption, "fade_black": piece.fade_black}})
        if piece.caption.strip():
            clip.markers.append(otio.schema.Marker(name=piece.caption.strip(), marked_range=span(piece.head, 1),
                                                   color=otio.schema.MarkerColor.YELLOW, metadata={"aas": {"kind": "caption"}}))
        video.append(clip)
    # 3. Music, looped the way stitch loops it (passes meet in the middle of their crossfades).
    total = sum(len_ for len_ in [title_frames] + [p.length - p.transition_in for p in pieces])
    music = output.get("music")
    if music and Path(music).is_file():
        audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
        timeline.tracks.append(audio)
        length = _audio_seconds(music)
        passes = music_passes(length, float(output.get("music_start", 0.0)), total / rate)
        edges = [round(p.at * rate + (p.fade_in * rate) / 2) for p in passes] + [total]
        for i, p in enumerate(passes):
            fade = round(p.fade_in * rate)
            if fade:
                audio.append(otio.schema.Transition(name="Cross Fade", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                    in_offset=t(fade // 2), out_offset=t(fade - fade // 2)))
            source_start = round(p.source_start * rate) + (edges[i] - round(p.at * rate))
            ref = otio.schema.ExternalReference(target_url=str(Path(music).absolute()), available_range=span(0, round(length * rate)))
            audio.append(otio.schema.Clip(name=Path(music).name, media_reference=ref, source_range=span(source_start, edges[i + 1] - edges[i])))
        facts["music"] = str(music)
    facts["frames"] = total
    return timeline, facts


def _audio_seconds(path: str) -> float:
    """Length of an audio file in seconds (PyAV)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return float(container.duration or 0) / 1_000_000
    except (OSError, IndexError, av.error.FFmpegError) as exc:
        raise InputError(f"cannot read the music {path} ({exc}); use an mp3, wav, m4a or ogg file") from exc


def export_run(
    run_dir: str | os.PathLike[str], fmt: ExportFormat = "otio", out: Optional[str | os.PathLike[str]] = None
) -> ExportResult:
    """Write the run's timeline as `fmt` (default RUN_DIR/story.<suffix>) and its captions as RUN_DIR/story.srt."""
    import opentimelineio as otio

    from aas_core.fsutil import atomic_path, atomic_write_bytes

    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if ADAPTERS[fmt] not in {a.name for a in otio.plugins.ActiveManifest().adapters}:
        raise InputError(f"the {fmt} writer (OpenTimelineIO adapter {ADAPTERS[fmt]}) is not installed; pip install -r requirements.txt")
    run = Path(run_dir).absolute()
    timeline, facts = build_timeline(run)
    target = Path(out) if out else run / f"story{SUFFIXES[fmt]}"
    warnings = []
    if fmt == "edl" and facts["music"]:
        # CMX 3600 holds one video track: the music stays out of it.
        warnings.append("an EDL holds no music track: import the music file by hand (or export otio/fcpxml)")
        timeline.tracks.remove(timeline.tracks[1])
    with atomic_path(target, suffix=SUFFIXES[fmt]) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name=ADAPTERS[fmt])
    srt = srt_text(facts["pieces"], facts["rate"])
    srt_path = None
    if srt:
        srt_path = run / SRT_NAME
        atomic_write_bytes(srt_path, srt.encode("utf-8"))
    return ExportResult(
        path=str(target), format=fmt, srt=str(srt_path) if srt_path else None, duration=facts["frames"] / facts["rate"],
        rate=facts["rate"], shots=len(facts["pieces"]), title_card=facts["title_card"], music=facts["music"], warnings=warnings,
    )
