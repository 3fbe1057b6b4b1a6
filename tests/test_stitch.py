"""Story assembly: timing with transitions, captions, title card, music, storyboard, comparison video."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from aas_core.errors import InputError
from aas_core.stitch import (
    StitchSettings,
    StitchShot,
    StoryboardRow,
    comparison_frames,
    comparison_video,
    contact_sheet,
    render_text,
    stitch,
    timeline,
)
from aas_core.video_io import iter_frames, probe
from tests.helpers import moving_square_frames, write_clip


def solid(colour: tuple[int, int, int], frames: int = 16, size: tuple[int, int] = (96, 64)) -> np.ndarray:
    return np.full((frames, size[1], size[0], 3), colour, np.uint8)


def faststart(path) -> bool:
    """The moov atom (index) comes before the media data, so browsers can stream the file."""
    data = open(path, "rb").read()
    return 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.fixture
def three_shots(tmp_path):
    paths = [write_clip(tmp_path / f"{c}.mp4", moving_square_frames(c, frames=16), fps=8) for c in ("red", "green", "blue")]
    return [str(p) for p in paths]


def test_duration_is_sum_minus_crossfade_overlaps(tmp_path, three_shots):
    shots = [
        StitchShot(three_shots[0], transition="crossfade", transition_duration=0.5),
        StitchShot(three_shots[1], transition="fade_black", transition_duration=1.0),
        StitchShot(three_shots[2]),
    ]
    result = stitch(shots, tmp_path / "story.mp4", StitchSettings(fps=8))
    # 3 x 2 s, the crossfade overlaps 0.5 s, fading through black overlaps nothing.
    assert result.duration == pytest.approx(5.5)
    info = probe(result.path)
    assert info.duration == pytest.approx(5.5, abs=0.01)
    assert info.frame_count == 44
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 96, 64)
    assert faststart(result.path)
    assert result.segments == [(0.0, 2.0), (1.5, 3.5), (3.5, 5.5)]


def test_timeline_bounds_crossfade_by_half_a_shot():
    shots = [StitchShot("a", transition="crossfade", transition_duration=5.0), StitchShot("b")]
    starts, total = timeline(shots, [2.0, 1.0], title_duration=1.0)
    assert starts == [1.0, 2.5] and total == pytest.approx(3.5)


def test_transitions_blend_and_go_through_black(tmp_path):
    red = write_clip(tmp_path / "r.mp4", solid((220, 30, 30)), fps=8)
    green = write_clip(tmp_path / "g.mp4", solid((30, 200, 40)), fps=8)
    blue = write_clip(tmp_path / "b.mp4", solid((30, 60, 230)), fps=8)
    shots = [
        StitchShot(str(red), transition="crossfade", transition_duration=1.0),
        StitchShot(str(green), transition="fade_black", transition_duration=1.0),
        StitchShot(str(blue)),
    ]
    result = stitch(shots, tmp_path / "t.mp4", StitchSettings(fps=8, captions=False))
    frames = [f.rgb.astype(int) for f in iter_frames(result.path)]
    mid_cross = frames[int(1.5 * 8)][32, 48]  # halfway through the red -> green crossfade
    assert mid_cross[0] > 80 and mid_cross[1] > 80
    black = frames[int(3.0 * 8) - 1][32, 48]  # last frame of green, faded out
    assert black.max() < 60
    assert frames[-1][32, 48][2] > 200  # blue at full strength at the end


def test_captions_and_title_render(tmp_path):
    grey = write_clip(tmp_path / "grey.mp4", solid((90, 90, 90), size=(160, 96)), fps=8)
    settings = StitchSettings(fps=8, title="The Grey Day", title_duration=2.0, font_size=16)
    result = stitch([StitchShot(str(grey), caption="It was grey")], tmp_path / "c.mp4", settings)
    assert result.duration == pytest.approx(4.0) and result.segments == [(2.0, 4.0)]
    frames = [f.rgb for f in iter_frames(result.path)]
    title = frames[8]  # 1 s in: title card fully shown
    assert (title > 200).all(axis=2).sum() > 30, "white title text expected on the black card"
    shot = frames[-4]
    lower, upper = shot[60:], shot[:40]
    assert (lower > 200).all(axis=2).sum() > 20, "white caption text expected at the bottom"
    assert (upper > 200).all(axis=2).sum() == 0 and (np.abs(upper.astype(int) - 90) < 12).all()
    no_caption = stitch([StitchShot(str(grey), caption="It was grey")], tmp_path / "n.mp4", StitchSettings(fps=8, captions=False))
    plain = [f.rgb for f in iter_frames(no_caption.path)][-4]
    assert (plain > 200).all(axis=2).sum() == 0


def write_tone(path, seconds: float = 10.0, rate: int = 22050):
    tone = (np.sin(np.arange(int(rate * seconds)) * 2 * np.pi * 440 / rate) * 12000).astype(np.int16)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(tone.tobytes())
    return path


def test_music_is_trimmed_to_the_video(tmp_path, three_shots):
    rate = 22050
    music = write_tone(tmp_path / "music.wav", rate=rate)
    settings = StitchSettings(fps=8, music=str(music), music_start=1.0, music_fade_out=1.0)
    result = stitch([StitchShot(p) for p in three_shots], tmp_path / "m.mp4", settings)
    import av

    with av.open(result.path) as container:
        audio = container.streams.audio[0]
        audio_duration = float(audio.duration * audio.time_base)
        assert audio.codec_context.name == "aac"
    assert result.has_audio and audio_duration == pytest.approx(6.0, abs=0.15)
    assert faststart(result.path)


def test_short_music_loops_with_a_crossfade(tmp_path, three_shots):
    from aas_core.stitch import music_passes

    passes = music_passes(2.5, 0.0, 6.0, crossfade=1.0)
    # Crossfades are capped at a quarter of the track (0.625 s); the last pass stops at the story's end.
    assert [(p.source_start, p.source_end, p.at, p.fade_in) for p in passes] == [
        (0.0, 2.5, 0.0, 0.0), (0.0, 2.5, 1.875, 0.625), (0.0, 2.25, 3.75, 0.625)]
    with pytest.raises(InputError, match="too short to loop"):
        music_passes(0.01, 0.0, 600.0)
    music = write_tone(tmp_path / "short.wav", seconds=2.5)
    result = stitch([StitchShot(p) for p in three_shots], tmp_path / "loop.mp4", StitchSettings(fps=8, music=str(music), music_fade_out=0.5))
    import av

    with av.open(result.path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(stream)])
    assert len(samples) / rate == pytest.approx(6.0, abs=0.15)
    rms = [float(np.sqrt(np.mean(samples[int(a * rate) : int(b * rate)] ** 2))) for a, b in ((0.5, 1.5), (3.0, 4.0), (4.5, 5.3))]
    # Past the track's 2.5 s the tone goes on (looped) at the level it had at the start.
    assert rms[1] > 0.5 * rms[0] and rms[2] > 0.5 * rms[0] > 0


def test_cancel_leaves_nothing_behind(tmp_path, three_shots):
    from aas_core.errors import Cancelled
    from aas_core.progress import CancelToken

    out = tmp_path / "out"
    out.mkdir()
    token = CancelToken()

    def cancel_midway(fraction: float, message: str) -> None:
        if "frame 10/" in message:
            token.cancel()

    settings = StitchSettings(fps=8, music=str(write_tone(tmp_path / "m.wav")))
    with pytest.raises(Cancelled):
        stitch([StitchShot(p) for p in three_shots], out / "story.mp4", settings, on_progress=cancel_midway, cancel=token)
    assert list(out.iterdir()) == []


def test_other_sizes_are_letterboxed_to_the_first(tmp_path):
    wide = write_clip(tmp_path / "wide.mp4", solid((200, 200, 200), size=(96, 64)), fps=8)
    square = write_clip(tmp_path / "sq.mp4", solid((200, 200, 200), size=(64, 64)), fps=8)
    result = stitch([StitchShot(str(wide)), StitchShot(str(square))], tmp_path / "l.mp4", StitchSettings(fps=8, captions=False))
    last = [f.rgb for f in iter_frames(result.path)][-1]
    assert last.shape == (64, 96, 3)
    assert last[32, 2].max() < 30 and last[32, 48].min() > 170  # black bars left/right, picture centred


def test_bad_inputs_are_refused(tmp_path, three_shots):
    with pytest.raises(InputError, match="no finished shots"):
        stitch([], tmp_path / "x.mp4")
    with pytest.raises(InputError, match="missing"):
        stitch([StitchShot(str(tmp_path / "nope.mp4"))], tmp_path / "x.mp4")
    with pytest.raises(InputError, match="music"):
        stitch([StitchShot(three_shots[0])], tmp_path / "x.mp4", StitchSettings(music=str(tmp_path / "none.mp3")))
    assert not (tmp_path / "x.mp4").exists()


def test_contact_sheet_has_one_row_per_shot(tmp_path):
    from PIL import Image

    rows = [StoryboardRow(f"shot-{i}", "a caption", list(moving_square_frames(frames=4))) for i in range(3)]
    path = contact_sheet(rows, tmp_path / "board.png", thumb_height=64)
    image = np.asarray(Image.open(path))
    assert image.shape[1] == 8 + 4 * (96 + 8)
    assert image.shape[0] > 3 * 64
    assert (image > 200).all(axis=2).any(), "labels are drawn"


def test_comparison_video_puts_three_panels_side_by_side(tmp_path):
    source = solid((250, 0, 0), frames=8, size=(48, 32))
    depth = np.full((4, 16, 24), 0.5, np.float32)
    generated = solid((0, 0, 250), frames=8, size=(48, 32))
    frames = comparison_frames(source, depth, generated)
    assert frames.shape == (8, 32, 144, 3)
    bottom = frames[0, -4]
    assert bottom[10, 0] > 200 and abs(int(bottom[60, 0]) - 128) < 3 and bottom[110, 2] > 200
    info = probe(comparison_video(source, depth, generated, tmp_path / "cmp.mp4", fps=8))
    assert (info.width, info.height, info.frame_count) == (144, 32, 8)


def test_render_text_wraps_to_width():
    one = render_text("short", 200, 16)
    many = render_text("a much longer caption that cannot fit on one line of this width", 200, 16)
    assert one.shape[1] == many.shape[1] == 200
    assert many.shape[0] > 2 * one.shape[0] - 4
    assert one[..., 3].max() == 255
