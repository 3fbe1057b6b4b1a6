"""Assembly of chosen takes (`story.assemble_takes`): what is stitched, what run.json records, what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.errors import InputError
from aas_core.story import Output, Take, assemble, assemble_takes, read_run
from aas_core.video_io import iter_frames, probe
from tests.helpers import moving_square_frames, write_clip

NO_TITLE = Output(title_card=False, captions=False)


@pytest.fixture
def takes(tmp_path):
    """Two takes of shot-01 (red, green) and one of shot-02 (blue): 2 s each at 8 fps, like a run folder keeps them."""
    paths = {}
    for name, colour in (("shot-01/a", "red"), ("shot-01/b", "green"), ("shot-02/a", "blue")):
        paths[name] = str(write_clip(tmp_path / "run" / "shots" / name / "shot.mp4", moving_square_frames(colour, frames=16), fps=8))
    return paths


def first_frame(path) -> np.ndarray:
    return next(iter(iter_frames(path))).rgb.astype(np.float32)


def test_picked_takes_are_stitched_and_recorded(tmp_path, takes):
    """Take 2 of shot-01 then take 1 of shot-02: 2 s + 2 s - 0.5 s crossfade; run.json lists exactly these two."""
    out = tmp_path / "run"
    picked = [Take("shot-01", takes["shot-01/b"], number=2, caption="Green", transition="crossfade", transition_duration=0.5,
                   prompt="a green square"),
              Take("shot-02", takes["shot-02/a"], number=1, prompt="a blue square")]
    run = assemble_takes(out, picked, title="Squares", output=NO_TITLE)
    info = probe(run.video)
    assert run.duration == pytest.approx(3.5) and info.duration == pytest.approx(3.5, abs=0.01) and info.frame_count == 28
    # The stitched video opens on the picked take (green), not on the other take of the shot (red).
    start = first_frame(run.video)
    assert np.abs(start - first_frame(takes["shot-01/b"])).mean() < np.abs(start - first_frame(takes["shot-01/a"])).mean()
    recorded = read_run(out)
    assert [(s["id"], s["video"], s["status"]) for s in recorded["shots"]] == [
        ("shot-01", takes["shot-01/b"], "cached"), ("shot-02", takes["shot-02/a"], "cached")]
    assert recorded["title"] == "Squares" and recorded["fps"] == 8.0 and recorded["shots"][0]["frames"] == 16
    report = json.loads((out / "story_report.json").read_text())
    assert report["counts"]["cached"] == 2 and [s["prompt"] for s in report["shots"]] == ["a green square", "a blue square"]
    # The folder is a run folder now: assemble(dir) stitches the same two takes again.
    again = assemble(out)
    assert again.duration == pytest.approx(3.5) and [s.video for s in again.shots] == [takes["shot-01/b"], takes["shot-02/a"]]


def test_a_gone_take_is_refused_and_nothing_is_overwritten(tmp_path, takes):
    out = tmp_path / "run"
    assemble_takes(out, [Take("shot-01", takes["shot-01/a"])], output=NO_TITLE)
    before = {name: (out / name).read_bytes() for name in ("story.mp4", "run.json", "storyboard.png", "story_report.json")}
    gone = [Take("shot-01", takes["shot-01/b"], number=2), Take("shot-02", str(tmp_path / "deleted.mp4"), number=3)]
    with pytest.raises(InputError, match="take 3 of shot shot-02 is gone: generate it again"):
        assemble_takes(out, gone, output=NO_TITLE)
    with pytest.raises(InputError, match="shot shot-01 is picked twice"):
        assemble_takes(out, [Take("shot-01", takes["shot-01/a"]), Take("shot-01", takes["shot-01/b"], number=2)])
    with pytest.raises(InputError, match="unknown transition"):
        assemble_takes(out, [Take("shot-01", takes["shot-01/b"], transition="wipe")])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nothing to stitch"):
        assemble_takes(out, [])
    with pytest.raises(InputError, match="transition duration of shot 1 must be a number"):
        assemble_takes(out, [Take("shot-01", takes["shot-01/b"], transition="crossfade", transition_duration=float("nan")),
                             Take("shot-02", takes["shot-02/a"])], output=NO_TITLE)
    with pytest.raises(InputError, match="fps must be a positive number"):
        assemble_takes(out, [Take("shot-01", takes["shot-01/b"])], fps=float("inf"))
    with pytest.raises(InputError, match="video file name"):
        assemble_takes(out, [Take("shot-01", 123)])  # type: ignore[arg-type]  # e.g. from a hand-written takes file
    # A story run writing the folder holds its lock: stitching into it is refused at once.
    from aas_core.errors import BusyError
    from aas_core.fsutil import exclusive
    from aas_core.story.outcome import RUN_LOCK

    with exclusive(out / RUN_LOCK, "busy"), pytest.raises(BusyError, match="a story run is writing"):
        assemble_takes(out, [Take("shot-01", takes["shot-01/b"], number=2)], output=NO_TITLE)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_cli_stitches_a_takes_file(tmp_path, takes, capsys):
    """`story stitch DIR --takes FILE --json`: paths relative to the file; a gone take is an error with exit code 2."""
    listing = tmp_path / "run" / "takes.json"
    listing.write_text(json.dumps({"title": "Two", "output": {"title_card": False},
                                   "takes": [{"shot": "shot-01", "video": "shots/shot-01/a/shot.mp4", "caption": "Red"},
                                             {"shot": "shot-02", "video": "shots/shot-02/a/shot.mp4"}]}))
    assert main(["story", "stitch", str(tmp_path / "out"), "--takes", str(listing), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["duration"] == pytest.approx(4.0) and [s["id"] for s in data["shots"]] == ["shot-01", "shot-02"]
    assert probe(data["video"]).frame_count == 32
    listing.write_text(json.dumps([{"shot": "shot-01", "video": "nowhere.mp4", "number": 4}]))
    assert main(["story", "stitch", str(tmp_path / "out"), "--takes", str(listing), "--json"]) == 2
    assert "take 4 of shot shot-01 is gone" in capsys.readouterr().out
