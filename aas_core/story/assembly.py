"""Assembly: finished shots -> stitched video, storyboard and reports (no model runs).

`assemble(dir)` stitches again what a run folder's run.json records; `assemble_takes(dir, takes)` stitches chosen
takes (the app's picks) and records exactly them in run.json, so `assemble(dir)` and `story report` work there later.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from aas_core.errors import InputError
from aas_core.fsutil import exclusive
from aas_core.limits import is_finite_number
from aas_core.progress import CancelToken, ProgressFn
from aas_core.story.outcome import (
    RUN_LOCK,
    STORYBOARD_FRAMES,
    STORYBOARD_NAME,
    VIDEO_NAME,
    ShotOutcome,
    StoryRun,
    read_run,
    write_run,
)

if TYPE_CHECKING:
    from aas_core.stitch import StitchSettings, StitchShot, Transition
    from aas_core.story.schema import Output
    from aas_core.video_io import VideoInfo


@dataclass
class Take:
    """One finished take of a shot to stitch: its video and how it joins the next shot (nothing is made again)."""

    shot: str
    """The shot's id."""
    video: str
    number: int = 1
    """Which take of the shot it is (1-based; messages name it)."""
    caption: str = ""
    transition: "Transition" = "cut"
    """Into the next shot."""
    transition_duration: float = 0.0
    prompt: str = ""
    comparison: str = ""
    metrics: Optional[dict[str, Any]] = None
    clip: dict[str, Any] = field(default_factory=dict)
    """The motion source (`path`, `start`, `end`), for the report."""
    tiny: bool = False

    def outcome(self, frames: int = 0, fps: float = 0.0) -> ShotOutcome:
        """The take as run.json records a shot: `cached` (made earlier, reused)."""
        folder = Path(self.video).parent
        return ShotOutcome(
            id=self.shot, status="cached", folder=str(folder) if (folder / "params.json").is_file() else "", video=self.video,
            comparison=self.comparison, frames=frames, fps=fps, metrics=self.metrics, prompt=self.prompt, caption=self.caption,
            transition=self.transition, transition_duration=self.transition_duration, clip=dict(self.clip), tiny=self.tiny,
        )


def assemble(
    out_dir: str | os.PathLike[str],
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Stitch the finished shots of a run folder, draw its storyboard and write its reports."""
    out = Path(out_dir).absolute()
    # 1. What the run recorded; only shots whose video exists are assembled.
    data = read_run(out)
    outcomes = [ShotOutcome(**s) for s in data["shots"]]
    ready = [o for o in outcomes if o.status in ("generated", "cached") and Path(o.video).is_file()]
    # 2. The stitched video, the storyboard, the reports.
    return _assemble(out, data, outcomes, ready, on_progress, cancel)


def assemble_takes(
    out_dir: str | os.PathLike[str],
    takes: Sequence[Take],
    title: str = "",
    output: Optional["Output"] = None,
    fps: Optional[float] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Stitch these takes in order into `out_dir` (video, storyboard, reports) and record them in its run.json.

    Every take is checked first: a missing video, a shot picked twice or a bad setting is refused before anything
    is written. `fps` defaults to the first take's; `output` (title card, captions, music) to `Output()`; paths
    are used as given (absolute, or relative to the working directory).
    """
    from aas_core.stitch import check_inputs
    from aas_core.story.schema import Output

    # 1. Check inputs: the takes, then what stitching them needs (fps, transitions, text lengths, music).
    infos = check_takes(takes, fps)
    output = output if output is not None else Output()
    data = {"title": title, "fps": float(fps or infos[0].fps), "output": dataclasses.asdict(output)}
    outcomes = [t.outcome(info.frame_count, info.fps) for t, info in zip(takes, infos)]
    check_inputs(*_stitch_inputs(data, outcomes))
    # 2. Stitch, storyboard, run.json (only after the video is written: a failure or cancel changes nothing), reports.
    out = Path(out_dir).absolute()
    busy = f"a story run is writing {out}; wait for it to finish (or cancel it), or stitch into another folder"
    with exclusive(out / RUN_LOCK, busy):
        return _assemble(out, data, outcomes, outcomes, on_progress, cancel, record=True)


def check_takes(takes: Sequence[Take], fps: Optional[float] = None) -> list["VideoInfo"]:
    """Refuse takes that cannot be stitched (none, a shot twice, a video gone or unreadable); each take's VideoInfo."""
    from aas_core.video_io import probe

    if not takes:
        raise InputError("nothing to stitch: pick a take of at least one shot")
    if fps is not None and not (is_finite_number(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    seen: dict[str, int] = {}
    for take in takes:
        if not isinstance(take, Take):
            raise InputError(f"takes must be Take objects (shot, video, number...), got {type(take).__name__}")
        if not isinstance(take.shot, str) or not isinstance(take.video, str) or not isinstance(take.number, int):
            raise InputError(f"a take needs a shot id and a video file name (text) and a take number, got "
                             f"shot={take.shot!r}, video={take.video!r}, number={take.number!r}")
        if take.shot in seen:
            raise InputError(f"shot {take.shot} is picked twice (takes {seen[take.shot]} and {take.number}); keep one of them")
        seen[take.shot] = take.number
        if not take.video or not Path(take.video).is_file():
            raise InputError(f"take {take.number} of shot {take.shot} is gone: generate it again")
    return [probe(take.video) for take in takes]


def _assemble(out: Path, data: dict[str, Any], outcomes: list[ShotOutcome], ready: list[ShotOutcome],
              on_progress: Optional[ProgressFn], cancel: Optional[CancelToken], record: bool = False) -> StoryRun:
    """The one stitching path: video and storyboard of the ready shots, run.json when `record`, then the reports."""
    from aas_core.stitch import stitch
    from aas_core.story.report import write_reports

    run = StoryRun(out_dir=str(out), shots=outcomes)
    if ready:
        shots, settings = _stitch_inputs(data, ready)
        stitched = stitch(shots, out / VIDEO_NAME, settings, on_progress=on_progress, cancel=cancel)
        run.video, run.duration = stitched.path, stitched.duration
        run.storyboard = _storyboard(out, ready)
    if record:
        write_run(out, data["title"], data["fps"], data["output"], outcomes)
    # The reports also for a run with no finished shot: they say what failed.
    paths = write_reports(out, data, run)
    run.report_json, run.report_md, run.report_html = (str(p) for p in paths)
    return run


def _stitch_inputs(data: dict[str, Any], ready: list[ShotOutcome]) -> tuple[list["StitchShot"], "StitchSettings"]:
    """What `stitch` takes for these shots under a run's title, fps and output settings."""
    from aas_core.stitch import StitchSettings, StitchShot

    output = data["output"]
    title = data.get("title", "") if output.get("title_card", True) else ""
    shots = [StitchShot(o.video, o.caption, o.transition, o.transition_duration) for o in ready]
    settings = StitchSettings(
        fps=float(data["fps"]), title=title, title_duration=output["title_duration"], captions=output["captions"],
        music=output.get("music"), music_start=output["music_start"], music_volume=output["music_volume"],
        music_fade_out=output["music_fade_out"],
    )
    return shots, settings


def _storyboard(out: Path, ready: list[ShotOutcome]) -> str:
    from aas_core.stitch import StoryboardRow, contact_sheet
    from aas_core.video_io import probe, sample_frames

    rows = []
    for o in ready:
        info = probe(o.video)
        times = [info.duration * k / STORYBOARD_FRAMES for k in range(STORYBOARD_FRAMES)]
        rows.append(StoryboardRow(o.id, o.caption or o.prompt, [f.rgb for f in sample_frames(o.video, times)]))
    return str(contact_sheet(rows, out / STORYBOARD_NAME))
