"""PyAV decode/encode: probing, timed sampling, rotation, bad files."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from aas_core.errors import InputError
from aas_core.video_io import iter_frames, probe, sample_frames, write_video
from tests.helpers import SHARED_CLIPS, moving_square_frames


def test_write_then_probe_round_trip(tmp_path):
    path = write_video(tmp_path / "a.mp4", moving_square_frames(frames=24), fps=12)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frame_count) == (96, 64, 12.0, 24)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    frames = list(iter_frames(path))
    assert len(frames) == 24 and frames[0].rgb.shape == (64, 96, 3)


def test_sample_frames_returns_requested_order_and_size(tmp_path):
    path = write_video(tmp_path / "a.mp4", moving_square_frames(frames=24), fps=12)
    picked = sample_frames(path, [1.5, 0.0, 0.75], size=(32, 32))
    assert [round(p.time, 2) for p in picked] == [1.5, 0.0, 0.75]
    assert picked[0].rgb.shape == (32, 32, 3)


def test_rotation_metadata_is_applied(tmp_path):
    import imageio_ffmpeg

    frames = np.zeros((4, 32, 64, 3), np.uint8)
    frames[:, :8, :8] = (255, 0, 0)  # red mark at the top-left
    src = write_video(tmp_path / "land.mp4", frames, fps=4)
    rotated = tmp_path / "rot.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
         "-i", str(src), "-c", "copy", str(rotated)],
        check=True,
    )
    info = probe(rotated)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    shown = next(iter_frames(rotated)).rgb
    assert shown.shape == (64, 32, 3)
    # 90 degrees anticlockwise moves the top-left corner to the bottom-left.
    assert shown[-4, 2, 0] > 200 and shown[2, 2, 0] < 60


@pytest.mark.parametrize("content", [b"", b"not a video at all", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_garbage_files_raise_input_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError):
        probe(path)


def test_truncated_file_is_refused_or_partial(tmp_path):
    good = write_video(tmp_path / "good.mp4", moving_square_frames(frames=48), fps=12)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError):
        probe(cut)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "nope.mp4")


@pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="shared clips not present")
def test_real_clips_probe():
    info = probe(SHARED_CLIPS / "bigbuckbunny.mp4")
    assert (info.width, info.height, info.has_audio) == (1280, 720, True)


@pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="shared clips not present")
def test_skim_decodes_reference_frames_only():
    from aas_core.video_io import iter_av_frames

    full = [t for t, _ in iter_av_frames(SHARED_CLIPS / "bikes.mp4", threaded=False)]
    skim = [t for t, _ in iter_av_frames(SHARED_CLIPS / "bikes.mp4", threaded=False, skim=True)]
    assert len(full) == 250
    # bikes.mp4 is H.264 with B-frames: skimming skips the non-reference ones, times stay exact and in order.
    assert 100 < len(skim) < 200
    assert skim == sorted(skim) and set(skim) <= set(full)
    assert max(b - a for a, b in zip(skim, skim[1:])) <= 4 / 25 + 1e-9
