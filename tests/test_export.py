"""Export a run to editors: OpenTimelineIO / FCP XML / EDL round trips with story.mp4's length, and SRT captions."""

from __future__ import annotations

import dataclasses
import json

import opentimelineio as otio
import pytest

from aas_core.cli import main
from aas_core.errors import InputError
from aas_core.story import ShotOutcome, assemble
from aas_core.story.export import edit_rate, export_run
from aas_core.video_io import probe
from tests.helpers import moving_square_frames, write_clip
from tests.test_stitch import write_tone

TRANSITIONS = [("crossfade", 0.5), ("fade_black", 1.0), ("cut", 0.0)]


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as `story run` leaves it: three finished takes (2 s at 8 fps), captions, title, short music."""
    out = tmp_path / "kite-run"
    shots = []
    for i, (colour, (transition, seconds)) in enumerate(zip(("red", "green", "blue"), TRANSITIONS)):
        video = write_clip(out / "shots" / f"shot-0{i + 1}" / "k" / "shot.mp4", moving_square_frames(colour, frames=16), fps=8)
        shots.append(dataclasses.asdict(ShotOutcome(
            id=f"shot-0{i + 1}", status="generated", video=str(video), frames=16, fps=8.0, caption=f"caption {i + 1}",
            transition=transition, transition_duration=seconds,
        )))
    shots.append(dataclasses.asdict(ShotOutcome(id="shot-04", status="failed", error="boom")))
    music = write_tone(tmp_path / "music.wav", seconds=3.0)
    output = {"title_card": True, "title_duration": 1.0, "captions": True, "music": str(music), "music_start": 0.0,
              "music_volume": 1.0, "music_fade_out": 0.5}
    (out / "run.json").write_text(json.dumps({"title": "The Kite", "fps": 8.0, "output": output, "shots": shots}))
    return out


def test_edit_rate_carries_the_story_fps():
    assert (edit_rate(8), edit_rate(25), edit_rate(10), edit_rate(16), edit_rate(7)) == (24, 25, 30, 48, 24)


def test_otio_round_trip_matches_the_stitched_video(run_dir):
    stitched = assemble(run_dir)
    result = export_run(run_dir, "otio")
    assert result.path == str(run_dir / "story.otio") and result.shots == 3 and result.rate == 24
    # Title 1 s + 3 x 2 s - 0.5 s crossfade = 6.5 s, the same as story.mp4.
    assert result.duration == pytest.approx(6.5)
    assert probe(stitched.video).duration == pytest.approx(result.duration, abs=1 / 8)
    timeline = otio.adapters.read_from_file(result.path)
    video, audio = timeline.video_tracks()[0], timeline.audio_tracks()[0]
    assert video.duration().to_seconds() == pytest.approx(6.5)
    assert audio.duration().to_seconds() == pytest.approx(6.5)
    clips = list(video.find_clips())
    assert [c.name for c in clips] == ["Title: The Kite", "shot-01", "shot-02", "shot-03"]
    assert clips[1].media_reference.target_url == str(run_dir / "shots" / "shot-01" / "k" / "shot.mp4")
    # The crossfade's cut sits mid-overlap: shot-01 loses 0.25 s at its end, shot-02 0.25 s at its start.
    assert clips[1].source_range.duration.to_seconds() == pytest.approx(1.75)
    assert clips[2].source_range.start_time.to_seconds() == pytest.approx(0.25)
    transitions = [item for item in video if isinstance(item, otio.schema.Transition)]
    assert len(transitions) == 1 and (transitions[0].in_offset + transitions[0].out_offset).to_seconds() == pytest.approx(0.5)
    assert [m.name for c in clips for m in c.markers] == ["caption 1", "caption 2", "caption 3"]
    assert clips[2].metadata["aas"]["fade_black"] == 1.0
    # 3 s of music loops under 6.5 s: three passes joined by two crossfades.
    assert len(list(audio.find_clips())) == 3
    assert (run_dir / "title_card.mp4").is_file() and probe(run_dir / "title_card.mp4").duration == pytest.approx(1.0)
    srt = (run_dir / "story.srt").read_text()
    assert srt.startswith("1\n00:00:01,000 --> 00:00:02,750\ncaption 1\n")
    assert "2\n00:00:02,750 --> 00:00:04,500\ncaption 2\n\n3\n00:00:04,500 --> 00:00:06,500\ncaption 3" in srt


@pytest.mark.parametrize("fmt", ["fcpxml", "edl"])
def test_fcpxml_and_edl_read_back_with_the_same_length(run_dir, fmt):
    result = export_run(run_dir, fmt)
    back = otio.adapters.read_from_file(result.path)
    assert back.video_tracks()[0].duration().to_seconds() == pytest.approx(6.5)
    names = [c.name for c in back.video_tracks()[0].find_clips()]
    if fmt == "fcpxml":
        assert names == ["Title: The Kite", "shot-01", "shot-02", "shot-03"]
        assert back.audio_tracks()[0].duration().to_seconds() == pytest.approx(6.5)
        assert result.warnings == []
    else:
        assert "no music track" in result.warnings[0] and not back.audio_tracks()


def test_cli_export_and_errors(run_dir, tmp_path, capsys):
    code = main(["story", "export", str(run_dir), "--format", "otio", "--out", str(tmp_path / "cut.otio"), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(tmp_path / "cut.otio") and data["srt"] == str(run_dir / "story.srt")
    with pytest.raises(InputError, match="not a story run folder"):
        export_run(tmp_path / "nothing")
    with pytest.raises(InputError, match="unknown export format"):
        export_run(run_dir, "aaf")  # type: ignore[arg-type]
