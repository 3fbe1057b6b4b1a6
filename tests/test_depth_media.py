"""Odd real-world media through the depth engine: VFR, 10-bit, grayscale, tiny, 4K (generated with ffmpeg)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from aas_core.depth import depth_from_clip
from aas_core.video_io import probe
from tests.helpers import ensure_tiny

DA = "depth-anything-v2-small"

# name -> (file name, ffmpeg output options, lavfi source size, rate, frame count)
MEDIA = {
    "vfr": ("vfr.mp4", ["-vf", r"select='not(mod(n\,3))+eq(mod(n\,7)\,1)'", "-fps_mode", "vfr",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p"], "96x64", 24, 48),
    "10bit": ("ten.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p10le"], "96x64", 12, 12),
    "gray": ("gray.mkv", ["-c:v", "ffv1", "-pix_fmt", "gray"], "96x64", 12, 12),
    "qcif": ("qcif.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "176x144", 12, 12),
    "4k": ("uhd.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], "3840x2160", 4, 3),
}


def make_media(folder: Path, kind: str) -> Path:
    """Encode a short testsrc2 clip of `kind` with the bundled ffmpeg."""
    import imageio_ffmpeg

    name, options, size, rate, count = MEDIA[kind]
    path = folder / name
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi",
         "-i", f"testsrc2=size={size}:rate={rate}", "-frames:v", str(count), *options, str(path)],
        check=True,
    )
    return path


@pytest.mark.parametrize("kind", list(MEDIA))
def test_odd_media_gives_clean_depth(tiny_root, tmp_path, kind):
    root = ensure_tiny(tiny_root, DA)
    path = make_media(tmp_path, kind)
    dv = depth_from_clip(path, frames=4, size=(64, 48), weights_root=root, cache_dir=tmp_path / "cache")
    assert dv.frames.shape == (4, 48, 64) and np.isfinite(dv.frames).all()
    assert dv.frames.std() > 0.01 and dv.rgb.std() > 5  # real content came through, not a blank frame
    times = dv.stats["source_times"]
    assert times == sorted(times) and times[-1] < probe(path).duration


def test_vfr_sampling_follows_timestamps(tmp_path):
    from aas_core.depth import load_conditioning_clip

    path = make_media(tmp_path, "vfr")
    clip = load_conditioning_clip(path, 0.0, 1.0, frames=8, size=(32, 32))
    # Each picked frame is the one shown at the requested time: never later than it.
    wanted = [i / 8 for i in range(8)]
    assert all(t <= w + 1e-6 for t, w in zip(clip.times, wanted))
    assert all(w - t < 0.2 for t, w in zip(clip.times, wanted))


def test_grayscale_is_grey_rgb(tmp_path):
    from aas_core.depth import load_conditioning_clip

    clip = load_conditioning_clip(make_media(tmp_path, "gray"), frames=2, size=(32, 32))
    assert np.abs(clip.rgb[..., 0].astype(int) - clip.rgb[..., 2]).max() <= 2
