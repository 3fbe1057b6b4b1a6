"""What a story run records: file names of a run folder, per-shot outcomes, the run, `run.json` I/O.

Shared by the runner, `run_shot`, `assemble` and the report, so none of them imports another's module
for these facts (the report no longer imports the runner).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from aas_core.errors import InputError
from aas_core.fsutil import atomic_write_json

CACHE_VERSION = 1
"""Bump when a stage's output changes for the same settings, so old cache entries stop matching."""
RUN_FILE = "run.json"
RUN_LOCK = ".run.lock"
"""Held by whoever writes a run folder (a story run, `assemble_takes`): a second writer is refused at once."""
DONE_FILE = "done.json"
METRICS_FILE = "metrics.json"
COMPARISON_FILE = "comparison.mp4"
VIDEO_NAME = "story.mp4"
STORYBOARD_NAME = "storyboard.png"
REPORT_JSON, REPORT_MD, REPORT_HTML = "story_report.json", "story_report.md", "story_report.html"
STORYBOARD_FRAMES = 4

ShotStatus = Literal["generated", "cached", "failed", "skipped"]
SHOT_STATUSES: tuple[str, ...] = ("generated", "cached", "failed", "skipped")


@dataclass
class ShotOutcome:
    """What happened to one shot in a run."""

    id: str
    status: ShotStatus
    key: str = ""
    folder: str = ""
    video: str = ""
    comparison: str = ""
    frames: int = 0
    fps: float = 0.0
    seconds: float = 0.0
    error: str = ""
    metrics: Optional[dict[str, Any]] = None
    prompt: str = ""
    caption: str = ""
    transition: str = "cut"
    transition_duration: float = 0.0
    clip: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False


@dataclass
class StoryRun:
    """The result of `run_story` / `assemble`: per-shot outcomes and the assembled files."""

    out_dir: str
    shots: list[ShotOutcome]
    video: Optional[str] = None
    duration: float = 0.0
    storyboard: Optional[str] = None
    report_json: Optional[str] = None
    report_md: Optional[str] = None
    report_html: Optional[str] = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[ShotOutcome]:
        """Shots that failed."""
        return [s for s in self.shots if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def read_json(path: Path) -> Optional[dict]:
    """A JSON file's content, or None when it is missing or unreadable (a cache miss, not an error)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_run(out_dir: Path, title: str, fps: float, output: dict[str, Any], outcomes: Sequence[ShotOutcome]) -> None:
    """Write `run.json`: the title, frame rate, output settings and every shot's outcome."""
    atomic_write_json(out_dir / RUN_FILE, {
        "title": title,
        "fps": fps,
        "output": output,
        "shots": [dataclasses.asdict(o) for o in outcomes],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def read_run(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run.json of a run folder, or an InputError saying how to make one."""
    path = Path(out_dir) / RUN_FILE
    data = read_json(path)
    if data is None:
        raise InputError(f"{out_dir} is not a story run folder (no readable {RUN_FILE}); run a story into it first: python -m aas_core story run FILE --out {out_dir}")
    return data
