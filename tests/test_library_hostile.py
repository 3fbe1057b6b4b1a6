"""Clip library under hostile input: odd files, zero settings, cancel, kills, damaged weights, odd names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.errors import Cancelled, InputError, WeightsCorruptError
from aas_core.library import ReaderSettings, index_folder, library_info, list_shots, search
from aas_core.limits import MAX_QUERY_CHARS
from aas_core.progress import CancelToken
from tests.helpers import ensure_tiny, moving_square_frames, write_clip


@pytest.fixture()
def weights(tiny_root):
    return ensure_tiny(tiny_root, "clip-vit-b-32")


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def _ts_segment(size: tuple[int, int], frames: int = 12) -> bytes:
    """An H.264 MPEG-TS segment of a moving square at `size` (w, h)."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for image in moving_square_frames(frames=frames, size=size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_resolution_change_mid_stream_is_skipped_not_hung(tmp_path, weights):
    folder = tmp_path / "clips"
    folder.mkdir()
    # Two legal TS segments back to back: what a live stream switching quality writes.
    (folder / "switch.ts").write_bytes(_ts_segment((96, 64)) + _ts_segment((160, 96)))
    write_clip(folder / "good.mp4", moving_square_frames(frames=16), fps=8)
    summary = index_folder(folder, tmp_path / "lib", weights_root=weights)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary.skipped}
    assert "resolution" in reasons["switch.ts"], reasons
    assert summary.shots == 1 and [Path(s["path"]).name for s in list_shots(tmp_path / "lib")] == ["good.mp4"]


@pytest.mark.parametrize("settings, flag", [(ReaderSettings(sample_fps=0), "--sample-fps"),
                                            (ReaderSettings(max_shot_seconds=0), "--max-shot"),
                                            (ReaderSettings(sample_fps=float("nan")), "--sample-fps"),
                                            (ReaderSettings(sample_fps=30, max_shot_seconds=600), "at most")])
def test_bad_settings_are_refused_up_front(tmp_path, settings, flag):
    # No weights needed: the settings are checked before anything loads.
    with pytest.raises(InputError, match=flag):
        index_folder(tmp_path, tmp_path / "lib", settings=settings, weights_root=tmp_path / "none")


def test_cli_zero_settings_give_a_clear_json_error(tmp_path, capsys):
    for flag in ("--sample-fps", "--max-shot"):
        code = main(["library", "index", str(tmp_path), flag, "0", "--library", str(tmp_path / "lib"), "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code != 0 and out["ok"] is False and flag in out["error"]


def test_cancel_is_honoured_while_the_reader_decodes(tmp_path, weights):
    folder = tmp_path / "clips"
    folder.mkdir()
    # A long cut-free video and a shot limit past its end: the reader sends nothing for seconds.
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "600", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(folder / "long.mp4"))
    token = CancelToken()
    timer = threading.Timer(1.5, token.cancel)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        index_folder(folder, tmp_path / "lib", weights_root=weights, cancel=token,
                     settings=ReaderSettings(sample_fps=1, max_shot_seconds=400))
    assert time.monotonic() - t0 < 4.5, "cancel waited for the reader to finish the file"


MEMORY_SCRIPT = """
import resource, sys
import cv2, scenedetect, av  # imported before the baseline: only the reader's own growth counts
from aas_core.library.reader import ReaderSettings, iter_shots
from aas_core.video_io import probe
info = probe(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shots = [(s.start, s.end, len(s.crops)) for s in iter_shots(sys.argv[1], ReaderSettings(), info)]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(shots), (after - before) / 1024)
"""
READER_GROWTH_LIMIT_MB = 80
"""Twice the shot limit of samples (8 s x 2 fps x 2 frames of 398x224 RGB) is ~9 MB; the rest is decoder slack."""


def test_memory_stays_bounded_on_a_long_cut_free_video(tmp_path):
    clip = tmp_path / "long.mp4"
    # 90 s of 720p without a cut: kept whole, its samples and frames would take ~300 MB.
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=10", "-t", "90", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip))
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(clip)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    shots, growth_mb = int(out[0]), float(out[1])
    assert shots >= 11  # cut into 8 s parts while reading
    assert growth_mb < READER_GROWTH_LIMIT_MB, f"the reader grew by {growth_mb:.0f} MB"


def _two_clips(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "a.mp4", moving_square_frames("red", "right", frames=16), fps=8)
    write_clip(folder / "b.mp4", moving_square_frames("blue", "down", frames=16), fps=8)
    return folder


def test_killed_reindex_keeps_the_live_thumbnails(tmp_path, weights):
    folder = _two_clips(tmp_path / "clips")
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=weights)
    token = CancelToken()

    def cancel_after_first(fraction: float, message: str) -> None:
        if message.startswith("1/"):
            token.cancel()

    with pytest.raises(Cancelled):
        index_folder(folder, lib, weights_root=weights, reindex=True, on_progress=cancel_after_first, cancel=token)
    hits = search("a square", k=2, library=lib, weights_root=weights)
    assert len(hits) == 2 and all(Path(h.thumbnail).is_file() for h in hits)
    assert index_folder(folder, lib, weights_root=weights, reindex=True).shots == 2
    assert all(Path(h.thumbnail).is_file() for h in search("a square", k=2, library=lib, weights_root=weights))


def test_truncated_clip_weights_say_redownload(tmp_path):
    from aas_core import models

    root = ensure_tiny(tmp_path / "w", "clip-vit-b-32")
    folder = _two_clips(tmp_path / "clips")
    index_folder(folder, tmp_path / "lib", weights_root=root)
    st = root / "clip-vit-b-32" / "open_clip_model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    models.release("clip-vit-b-32")
    message = "python -m aas_core weights download clip-vit-b-32 --force"
    with pytest.raises(WeightsCorruptError, match=message):
        search("a square", library=tmp_path / "lib", weights_root=root)
    write_clip(folder / "c.mp4", moving_square_frames("green", "left", frames=16), fps=8)
    with pytest.raises(WeightsCorruptError, match=message):
        index_folder(folder, tmp_path / "lib", weights_root=root)


def test_non_utf8_file_name_indexes_like_any_other(tmp_path, weights):
    folder = _two_clips(tmp_path / "clips")
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.mp4")
    os.rename(os.fsencode(folder / "b.mp4"), latin1)
    summary = index_folder(folder, tmp_path / "lib", weights_root=weights)
    assert (summary.files_indexed, summary.shots, summary.skipped) == (2, 2, [])
    paths = {os.fsencode(s["path"]) for s in list_shots(tmp_path / "lib")}
    assert latin1 in paths
    hit = next(h for h in search("a square", k=2, library=tmp_path / "lib", weights_root=weights) if os.fsencode(h.path) == latin1)
    assert Path(hit.thumbnail).is_file()
    assert index_folder(folder, tmp_path / "lib", weights_root=weights).files_reused == 2
    assert library_info(tmp_path / "lib").files == 2


def test_query_length_is_limited(tmp_path, weights):
    with pytest.raises(InputError, match="limit"):
        search("a" * (MAX_QUERY_CHARS + 1), library=tmp_path / "lib", weights_root=weights)
    with pytest.raises(InputError, match="k must be"):
        search("a dog", k=0, library=tmp_path / "lib", weights_root=weights)


def test_one_bad_file_never_stops_the_others(tmp_path, weights):
    folder = _two_clips(tmp_path / "clips")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (folder / "switch.ts").write_bytes(_ts_segment((96, 64)) + _ts_segment((64, 96)))
    summary = index_folder(folder, tmp_path / "lib", weights_root=weights)
    assert summary.shots == 2 and {Path(s["path"]).name for s in summary.skipped} == {"noise.mp4", "switch.ts"}
