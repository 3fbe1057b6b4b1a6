"""Shot metrics with a tiny CLIP and a tiny depth estimator: values in range, exact cases exact."""

from __future__ import annotations

import numpy as np
import pytest

from aas_core.errors import InputError
from aas_core.metrics import (
    character_identity,
    clip_text,
    depth_adherence,
    even_indices,
    frame_consistency,
    shot_metrics,
    text_video_similarity,
)
from tests.helpers import ensure_tiny, moving_square_frames


@pytest.fixture(scope="module")
def embedder(tiny_root):
    from aas_core.device import pick_runtime
    from aas_core.library.embed import ClipEmbedder

    ensure_tiny(tiny_root, "clip-vit-b-32")
    return ClipEmbedder.load("clip-vit-b-32", weights_root=tiny_root, runtime=pick_runtime("cpu"))


def test_depth_adherence_is_a_correlation():
    rng = np.random.default_rng(0)
    depth = rng.random((6, 16, 24)).astype(np.float32)
    assert depth_adherence(depth, depth) == pytest.approx(1.0, abs=1e-5)
    assert depth_adherence(depth, 3 * depth + 2) == pytest.approx(1.0, abs=1e-5)  # scale and shift free
    assert depth_adherence(depth, 1 - depth) == pytest.approx(-1.0, abs=1e-5)
    assert depth_adherence(depth, np.ones((6, 16, 24))) == 0.0
    noise = rng.random((6, 16, 24))
    assert abs(depth_adherence(depth, noise)) < 0.2
    # An estimate at another size and length is resized and matched in time.
    yy, xx = np.mgrid[0:16, 0:24]
    smooth = np.stack([np.sin(xx / 4 + t) + yy / 16 for t in range(6)]).astype(np.float32)
    assert depth_adherence(smooth, smooth[::2, ::2, ::2]) > 0.9
    with pytest.raises(InputError):
        depth_adherence(depth[0], depth)


def test_clip_metrics_are_in_range(embedder):
    frames = moving_square_frames("red", frames=8)
    score = text_video_similarity(embedder, frames, "a red square moving right")
    assert -1.0 <= score <= 1.0
    consistency = frame_consistency(embedder, frames)
    assert -1.0 <= consistency <= 1.0
    still = np.repeat(frames[:1], 4, axis=0)
    assert frame_consistency(embedder, still) == pytest.approx(1.0, abs=1e-4)
    assert character_identity(embedder, still, [frames[0]]) == pytest.approx(1.0, abs=1e-4)
    assert character_identity(embedder, frames, [frames[0]]) < 1.0
    with pytest.raises(InputError):
        character_identity(embedder, frames, [])


def test_shot_metrics_all_four(tiny_root, embedder):
    from aas_core.depth import load_estimator
    from aas_core.device import pick_runtime

    ensure_tiny(tiny_root, "depth-anything-v2-small")
    estimator = load_estimator("depth-anything-v2-small", weights_root=tiny_root, runtime=pick_runtime("cpu"))
    frames = moving_square_frames("green", frames=20, size=(64, 64))
    condition = frames.mean(axis=3) / 255.0
    result = shot_metrics(
        frames,
        "a <hero> square",
        condition_depth=condition,
        depth_estimate=estimator.predict,
        depth_model="depth-anything-v2-small",
        concept_photos=[frames[0]],
        clip_model="clip-vit-b-32",
        weights_root=tiny_root,
        runtime=pick_runtime("cpu"),
    )
    assert result.frames_scored == 16 and result.tiny
    assert result.depth_adherence != 0.0, "tiny estimator output is small but not flat"
    for value in (result.clip_text_similarity, result.frame_consistency, result.depth_adherence, result.character_identity):
        assert value is not None and -1.0 <= value <= 1.0
    assert set(result.models) == {"clip_text_similarity", "frame_consistency", "depth_adherence", "character_identity"}


def test_helpers():
    assert clip_text("a <old-tom> and <a_b> walk") == "a old tom and a b walk"
    assert list(even_indices(5, 16)) == [0, 1, 2, 3, 4]
    picked = even_indices(100, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 99
