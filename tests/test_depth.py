"""Depth engine: conditioning clip, tiny estimator, stable scale, cache, previews, CLI, bad input."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from aas_core.depth import (
    ESTIMATORS,
    DepthVideo,
    depth_from_clip,
    flicker,
    load_conditioning_clip,
    relative_flicker,
    release_estimators,
    write_previews,
)
from aas_core import models
from aas_core.depth import estimators as est_module
from aas_core.depth.stabilize import normalize
from aas_core.errors import Cancelled, InputError, WeightsMissingError
from aas_core.progress import CancelToken
from aas_core.video_io import probe
from tests.helpers import SHARED_CLIPS, ensure_tiny, moving_square_frames, write_clip

DA = "depth-anything-v2-small"


@pytest.fixture(scope="module")
def root(tiny_root):
    return ensure_tiny(tiny_root, DA)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 3 s at 8 fps: a square crossing a textured gradient (something for the estimator to see).
    frames = moving_square_frames(frames=24, size=(96, 64))
    frames[:, :, :, 2] = np.linspace(0, 200, 96, dtype=np.uint8)[None, None, :]
    return write_clip(tmp_path_factory.mktemp("clip") / "square.mp4", frames, fps=8)


def run(clip, root, tmp_path, **kw):
    kw.setdefault("frames", 8)
    kw.setdefault("size", (64, 48))
    kw.setdefault("cache_dir", tmp_path / "cache")
    return depth_from_clip(clip, weights_root=root, **kw)


def test_shapes_range_and_provenance(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, start=0.5, end=2.5)
    assert dv.frames.shape == (8, 48, 64) and dv.frames.dtype == np.float32
    assert dv.rgb.shape == (8, 48, 64, 3) and dv.rgb.dtype == np.uint8
    assert 0.0 <= dv.frames.min() and dv.frames.max() <= 1.0 and dv.frames.std() > 0.05
    assert dv.span == (0.5, 2.5) and dv.fps == pytest.approx(8 / 2.0)
    assert dv.estimator == DA and dv.settings["weights"]["tiny"] is True
    # 8 frames spread evenly over the 2 s span at 8 fps: every second source frame.
    assert dv.stats["source_times"] == pytest.approx([0.5 + 0.25 * i for i in range(8)], abs=1e-3)
    assert not dv.warnings


def test_deterministic_without_cache(clip, root, tmp_path):
    a = run(clip, root, tmp_path, use_cache=False)
    b = run(clip, root, tmp_path, use_cache=False)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.rgb, b.rgb)
    assert not (tmp_path / "cache").exists()


def test_cache_hit_survives_restart_and_keys_on_settings(clip, root, tmp_path):
    first = run(clip, root, tmp_path)
    assert first.stats["cache_hit"] is False
    assert (tmp_path / "cache" / first.stats["cache_key"] / "depth.json").is_file()
    # A "restart": no estimator in memory. A hit must not need to load one.
    assert release_estimators() >= 1
    again = run(clip, root, tmp_path)
    assert again.stats["cache_hit"] is True and not any(k.name in ESTIMATORS for k in models.loaded())
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.rgb, again.rgb)
    other = run(clip, root, tmp_path, smoothing=0.0)
    assert other.stats["cache_hit"] is False and other.stats["cache_key"] != first.stats["cache_key"]


def test_default_cache_dir_follows_env(clip, root, tmp_path, monkeypatch):
    monkeypatch.setenv("AAS_CACHE_DIR", str(tmp_path / "env_cache"))
    dv = depth_from_clip(clip, frames=4, size=(32, 32), weights_root=root)
    assert (tmp_path / "env_cache" / "depth" / dv.stats["cache_key"] / "depth.npy").is_file()


def test_damaged_cache_entry_is_recomputed(clip, root, tmp_path):
    first = run(clip, root, tmp_path)
    (tmp_path / "cache" / first.stats["cache_key"] / "depth.npy").write_bytes(b"garbage")
    again = run(clip, root, tmp_path)
    assert again.stats["cache_hit"] is False and np.array_equal(first.frames, again.frames)


def test_rotated_phone_video_is_upright(root, tmp_path):
    import imageio_ffmpeg

    frames = np.full((8, 32, 64, 3), 40, np.uint8)
    frames[:, :8, :8] = (255, 0, 0)  # red mark at the top-left of the stored frame
    src = write_clip(tmp_path / "land.mp4", frames, fps=8)
    rotated = tmp_path / "rot.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
         "-i", str(src), "-c", "copy", str(rotated)],
        check=True,
    )
    dv = run(rotated, root, tmp_path, frames=4, size=(32, 64))
    assert dv.rgb.shape == (4, 64, 32, 3) and dv.stats["source_info"]["rotation"] == 90
    # Displayed upright (portrait): the mark is now at the bottom-left.
    assert dv.rgb[0, -3, 2, 0] > 200 and dv.rgb[0, 2, 2, 0] < 100


def test_pad_keeps_whole_picture_and_zeroes_bars(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, frames=4, size=(64, 64), fit="pad")
    # 96x64 into 64x64: picture 64x43 centred, bars above and below.
    assert dv.rgb[:, :8].max() == 0 and dv.rgb[:, -8:].max() == 0
    assert dv.frames[:, :8].max() == 0 and dv.frames[:, 30].max() > 0
    cropped = run(clip, root, tmp_path, frames=4, size=(64, 64), fit="crop")
    assert cropped.rgb[:, :8].max() > 0


def test_short_span_holds_frames_with_warning(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, start=1.0, end=1.25, frames=8)
    assert dv.num_frames == 8 and dv.warnings and "repeat" in dv.warnings[0]
    assert len(set(dv.stats["source_times"])) == 2


def test_speed_scales_covered_footage(clip, root, tmp_path):
    slow = run(clip, root, tmp_path, start=0.0, end=2.0, frames=4, speed=0.5)
    assert slow.stats["source_times"] == pytest.approx([0.0, 0.25, 0.5, 0.75], abs=1e-3)
    assert slow.fps == pytest.approx(2.0)
    fast = run(clip, root, tmp_path, start=1.0, end=2.0, frames=4, speed=4.0)  # needs 4 s, 2 s remain
    assert fast.warnings and "slower than asked" in fast.warnings[0]
    assert fast.stats["source_times"][-1] == pytest.approx(2.5, abs=0.01)


def test_global_scale_flickers_less_than_per_frame_minmax():
    # A static scene plus a highlight whose strength varies: per-frame min/max rescales the whole
    # frame every time it changes; one robust scale for the clip leaves the scene still.
    rng = np.random.default_rng(0)
    scene = rng.uniform(1.0, 2.0, (32, 32)).astype(np.float32)
    raw = np.repeat(scene[None], 12, axis=0)
    raw[:, 0, 0] = 2.0 + 3.0 * rng.uniform(size=12)
    per_frame = normalize(raw, "per-frame")
    steady = normalize(raw, "global")
    assert flicker(steady) < 0.001 < 0.01 < flicker(per_frame)
    assert relative_flicker(steady) < relative_flicker(per_frame)
    assert flicker(normalize(raw, "global", smoothing=1.0)) <= flicker(steady) + 1e-6


def test_aligned_mode_removes_scale_drift():
    # A relative-depth network's output may change scale and shift per frame on a still scene:
    # one global scale keeps that drift, "aligned" (median/IQR per frame) removes it.
    rng = np.random.default_rng(1)
    scene = rng.uniform(1.0, 2.0, (32, 32)).astype(np.float32)
    raw = np.stack([scene * rng.uniform(0.7, 1.3) + rng.uniform(-0.5, 0.5) for _ in range(12)])
    assert flicker(normalize(raw, "aligned")) < 0.001 < 0.02 < flicker(normalize(raw, "global"))


def test_flicker_figures():
    assert flicker(np.zeros((1, 4, 4))) == 0.0
    frames = np.zeros((3, 2, 2), np.float32)
    frames[1] = 0.5
    assert flicker(frames) == pytest.approx(0.5)


def test_pipeline_reports_lower_relative_flicker_than_per_frame(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, frames=12)
    assert dv.stats["relative_flicker"] < dv.stats["baseline_per_frame_minmax"]["relative_flicker"]


@pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="shared sample footage not present")
@pytest.mark.parametrize("name,start,end", [("bikes.mp4", 1.3, 3.0), ("carphone_pristine.mp4", None, None)])
def test_real_footage_flicker(root, tmp_path, name, start, end):
    dv = run(SHARED_CLIPS / name, root, tmp_path, start=start, end=end, frames=16, size=(128, 128))
    assert dv.stats["relative_flicker"] < dv.stats["baseline_per_frame_minmax"]["relative_flicker"]


def test_previews_are_playable(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, frames=6, size=(64, 48))
    files = write_previews(dv, tmp_path / "out")
    depth_info, sbs_info = probe(files["depth"]), probe(files["side_by_side"])
    assert (depth_info.width, depth_info.height, depth_info.frame_count) == (64, 48, 6)
    assert (sbs_info.width, sbs_info.height) == (128, 48)
    from PIL import Image

    sheet = Image.open(files["contact_sheet"])
    assert sheet.size[1] > 2 * 48 and sheet.mode == "RGB"


def test_depth_video_round_trip_keeps_stats(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, frames=4, size=(32, 32))
    back = DepthVideo.load(dv.save(tmp_path / "saved"))
    assert np.array_equal(back.frames, dv.frames) and np.array_equal(back.rgb, dv.rgb)
    assert back.stats["flicker"] == pytest.approx(dv.stats["flicker"]) and back.span == dv.span


def test_progress_and_cancel(clip, root, tmp_path):
    seen = []
    run(clip, root, tmp_path, frames=8, use_cache=False, on_progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 4
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run(clip, root, tmp_path, cancel=token)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"start": 10.0}, "outside"),
        ({"end": 9.0}, "past the end"),
        ({"start": 1.0, "end": 1.0}, "empty"),
        ({"start": -1.0}, "outside"),
        ({"size": (100000, 8)}, "multiple of 8"),
        ({"size": (60, 64)}, "multiple of 8"),
        ({"estimator": "dpt-large"}, "unknown depth estimator"),
        ({"fit": "stretch"}, "fit must be"),
        ({"speed": 0.0}, "speed"),
        ({"frames": 0}, "frames"),
        ({"smoothing": -1.0}, "smoothing"),
        ({"normalize_mode": "minmax"}, "normalize_mode"),
    ],
)
def test_bad_requests_name_the_fix(clip, root, tmp_path, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        run(clip, root, tmp_path, **kwargs)


@pytest.mark.parametrize("content", [b"", b"definitely not a video"])
def test_unreadable_file(root, tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(InputError):
        run(bad, root, tmp_path)


def test_missing_weights_name_the_download(clip, tmp_path):
    with pytest.raises(WeightsMissingError, match="weights download midas-dpt-hybrid"):
        depth_from_clip(clip, estimator="midas-dpt-hybrid", weights_root=tmp_path / "empty")


def test_estimator_names_are_registry_models():
    from aas_core.registry import names_of_kind

    assert ESTIMATORS[0] == DA and set(ESTIMATORS) == set(names_of_kind("depth"))


def test_aligned_mode_through_the_pipeline(clip, root, tmp_path):
    dv = run(clip, root, tmp_path, frames=4, normalize_mode="aligned")
    assert dv.settings["normalize"] == "aligned" and 0.0 <= dv.frames.min() < dv.frames.max() <= 1.0


def test_conditioning_clip_alone(clip):
    cc = load_conditioning_clip(clip, frames=5, size=(40, 40))
    assert cc.rgb.shape == (5, 40, 40, 3) and cc.content_mask().all()


def test_cli_writes_frames_previews_and_params(clip, root, tmp_path, capsys):
    from aas_core.cli import main

    out = tmp_path / "run"
    code = main(["depth", str(clip), "--frames", "4", "--size", "64x48", "--start", "0.5", "--end", "2.0",
                 "--weights", str(root), "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["num_frames"] == 4
    for name in ("depth.npy", "rgb.npy", "depth.json", "params.json", "depth_preview.mp4", "side_by_side.mp4", "contact_sheet.png"):
        assert (out / name).is_file(), name
    params = json.loads((out / "params.json").read_text())
    assert params["estimator"] == DA and params["settings"]["size"] == [64, 48] and params["span"] == [0.5, 2.0]
    assert DepthVideo.load(out).num_frames == 4
    # Rerunning into the same folder replaces it; a folder of other things is refused untouched.
    assert main(["depth", str(clip), "--frames", "4", "--size", "64x48", "--weights", str(root),
                 "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    assert main(["depth", str(clip), "--weights", str(root), "--out", str(other), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False and (other / "keep.txt").read_text() == "user data"
    assert main(["depth", str(clip), "--size", "100000x8", "--weights", str(root), "--json"]) == 2


def test_midas_dpt_hybrid_real_layout(tiny_root, clip, tmp_path):
    # controlnet_aux fixes the architecture: the stand-in is full-size DPT-Hybrid with random weights,
    # read from the exact file name MidasDetector expects.
    root = ensure_tiny(tiny_root, "midas-dpt-hybrid")
    assert (root / "midas-dpt-hybrid" / "dpt_hybrid-midas-501f0c75.pt").is_file()
    dv = run(clip, root, tmp_path, frames=2, size=(64, 48), estimator="midas-dpt-hybrid")
    assert dv.frames.shape == (2, 48, 64) and np.isfinite(dv.frames).all() and dv.frames.std() > 0.01
    assert dv.estimator == "midas-dpt-hybrid" and dv.settings["weights"]["hub_id"] == "lllyasviel/Annotators"


def test_damaged_weights_say_how_to_fetch_again(tmp_path):
    from aas_core.errors import WeightsCorruptError
    from aas_core.weights import write_tiny

    write_tiny([DA], tmp_path)
    (tmp_path / DA / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsCorruptError, match=f"weights download {DA} --force"):
        est_module.load_estimator(DA, tmp_path)
