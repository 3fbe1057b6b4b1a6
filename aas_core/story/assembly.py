"""`assemble`: a run folder's finished shots -> stitched video, storyboard and reports (no model runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from aas_core.progress import CancelToken, ProgressFn
from aas_core.story.outcome import STORYBOARD_FRAMES, STORYBOARD_NAME, VIDEO_NAME, ShotOutcome, StoryRun, read_run


def assemble(
    out_dir: str | os.PathLike[str],
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Stitch the finished shots of a run folder, draw its storyboard and write its reports."""
    from aas_core.story.report import write_reports

    out = Path(out_dir).absolute()
    # 1. What the run recorded; only shots whose video exists are assembled.
    data = read_run(out)
    outcomes = [ShotOutcome(**s) for s in data["shots"]]
    ready = [o for o in outcomes if o.status in ("generated", "cached") and Path(o.video).is_file()]
    run = StoryRun(out_dir=str(out), shots=outcomes)
    if ready:
        # 2. The stitched video, 3. the storyboard.
        run.video, run.duration = _stitch(out, data, ready, on_progress, cancel)
        run.storyboard = _storyboard(out, ready)
    # 4. The reports (also for a run with no finished shot: they say what failed).
    paths = write_reports(out, data, run)
    run.report_json, run.report_md, run.report_html = (str(p) for p in paths)
    return run


def _stitch(out: Path, data: dict[str, Any], ready: list[ShotOutcome], on_progress: Optional[ProgressFn],
            cancel: Optional[CancelToken]) -> tuple[str, float]:
    from aas_core.stitch import StitchSettings, StitchShot, stitch

    output = data["output"]
    title = data.get("title", "") if output.get("title_card", True) else ""
    shots = [StitchShot(o.video, o.caption, o.transition, o.transition_duration) for o in ready]
    settings = StitchSettings(
        fps=float(data["fps"]), title=title, title_duration=output["title_duration"], captions=output["captions"],
        music=output.get("music"), music_start=output["music_start"], music_volume=output["music_volume"],
        music_fade_out=output["music_fade_out"],
    )
    stitched = stitch(shots, out / VIDEO_NAME, settings, on_progress=on_progress, cancel=cancel)
    return stitched.path, stitched.duration


def _storyboard(out: Path, ready: list[ShotOutcome]) -> str:
    from aas_core.stitch import StoryboardRow, contact_sheet
    from aas_core.video_io import probe, sample_frames

    rows = []
    for o in ready:
        info = probe(o.video)
        times = [info.duration * k / STORYBOARD_FRAMES for k in range(STORYBOARD_FRAMES)]
        rows.append(StoryboardRow(o.id, o.caption or o.prompt, [f.rgb for f in sample_frames(o.video, times)]))
    return str(contact_sheet(rows, out / STORYBOARD_NAME))
